"""What every use case receives: the unit of work, providers, the provider call audit, clock,
settings and telemetry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tillpoint.domain.order import FailurePolicy
from tillpoint.service.ports import (
    Clock,
    ProviderCallLog,
    Providers,
    Telemetry,
    UnitOfWorkFactory,
)


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    failure_policy: FailurePolicy = FailurePolicy.KEEP_PENDING
    default_provider: str = "mock"
    snapshot_ttl: timedelta = timedelta(minutes=15)
    payment_ttl: timedelta = timedelta(minutes=30)
    # The longest a whole provider call may take (every attempt, retry and backoff of the
    # resilient call layer): the deadline of `provider_calls.ask` and the janitor's lookups, and
    # how long the janitor leaves a PENDING operation alone as possibly in flight.
    provider_timeout: float = 5.0
    # When an operation's outcome is unknown, ask the provider after each of these delays;
    # the last one repeats.
    recheck_schedule: tuple[timedelta, ...] = (
        timedelta(minutes=5),
        timedelta(hours=1),
        timedelta(days=1),
    )
    # How long an Idempotency-Key is kept: a request key matches the work of the same request
    # only within this time (a key used again after it was reaped is a new request).
    idempotency_ttl: timedelta = timedelta(hours=24)
    # Reconciliation: the window a scheduled run compares, how often one runs, how long a
    # RUNNING run may go without a heartbeat before it counts as dead, and how long an
    # operation may stay unresolved before it is reported `stuck`.
    reconcile_window: timedelta = timedelta(hours=48)
    reconcile_interval: timedelta = timedelta(hours=1)
    reconcile_stale_after: timedelta = timedelta(minutes=5)
    reconcile_stuck_after: timedelta = timedelta(hours=24)

    def next_check(self, check_count: int) -> timedelta:
        return self.recheck_schedule[min(check_count, len(self.recheck_schedule) - 1)]


@dataclass(frozen=True, slots=True)
class Deps:
    uow: UnitOfWorkFactory
    providers: Providers
    clock: Clock
    telemetry: Telemetry
    calls: ProviderCallLog  # the provider call audit, written by the resilient call layer
    config: ServiceConfig = ServiceConfig()
