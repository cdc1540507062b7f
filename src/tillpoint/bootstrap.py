"""The one place that builds adapters from settings and hands them to the rest."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from tillpoint.adapters import files
from tillpoint.adapters import logging as log_setup
from tillpoint.adapters.brokers.consumers import RabbitConsumers
from tillpoint.adapters.brokers.inprocess import InProcessBroker
from tillpoint.adapters.brokers.rabbitmq import RabbitPublisher
from tillpoint.adapters.clock import SystemClock
from tillpoint.adapters.db import migrate as migrations
from tillpoint.adapters.db.engine import make_engine
from tillpoint.adapters.db.exports import SqlMovementSource
from tillpoint.adapters.db.idempotency import SqlIdempotencyStore
from tillpoint.adapters.db.migrate import SchemaState
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.provider_calls import SqlProviderCallLog
from tillpoint.adapters.db.uow import SqlUnitOfWorkFactory
from tillpoint.adapters.keys import KeyStore, load_keys
from tillpoint.adapters.oidc import OidcVerifier
from tillpoint.adapters.providers import ProviderRegistry
from tillpoint.adapters.providers.mock import MockGateway
from tillpoint.adapters.providers.mock_webhooks import MockWebhookSimulator
from tillpoint.adapters.providers.resilient import CallPolicy, resilient
from tillpoint.adapters.providers.stripe import StripeGateway
from tillpoint.adapters.ratelimit import RateLimiter
from tillpoint.adapters.telemetry import PrometheusTelemetry
from tillpoint.adapters.webhooks.setup import mock_webhook_secret, webhook_verifiers
from tillpoint.config import ApiKey, ConfigurationRefused, Settings
from tillpoint.service.consumers import (
    Handled,
    KeyedLocks,
    OrderEvent,
    Subscription,
    handle_order_event,
)
from tillpoint.service.context import Deps, ServiceConfig
from tillpoint.service.exports import Column, Record
from tillpoint.service.idempotency import Idempotency
from tillpoint.service.outbox import OutboxHealth, OutboxRelay, outbox_health, report_outbox_health
from tillpoint.service.ports import (
    Clock,
    MovementSource,
    PaymentProvider,
    ProviderCallLog,
    Publisher,
)
from tillpoint.service.webhooks import WebhookInbox, receive_webhook

log = structlog.get_logger("tillpoint.bootstrap")


@dataclass
class Container:
    settings: Settings
    engine: AsyncEngine
    deps: Deps
    keys: KeyStore
    idempotency: Idempotency
    mock: MockGateway
    telemetry: PrometheusTelemetry
    dev_keys_file: Path | None = None
    webhooks: WebhookInbox | None = None
    mock_webhooks: MockWebhookSimulator | None = None
    publisher: Publisher | None = None
    providers: ProviderRegistry = field(default_factory=lambda: ProviderRegistry({}))
    oidc: OidcVerifier | None = None  # JWT bearer tokens, when TILLPOINT_OIDC_ISSUER is set
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter({}))

    @cached_property
    def movements(self) -> MovementSource:
        """The money movements that exports stream (docs/exports.md)."""
        return SqlMovementSource(self.engine)

    async def database_check(self) -> str:
        """`UP`, `DOWN` (unreachable) or `NOT_MIGRATED` (the schema is behind this code)."""
        try:
            async with self.engine.connect() as conn:
                state = await conn.run_sync(migrations.schema_state)
        except Exception:  # any failure means not ready
            return "DOWN"
        return "NOT_MIGRATED" if state is SchemaState.BEHIND else "UP"

    async def broker_check(self) -> bool:
        """Whether the events broker is reachable (the in-process broker always is)."""
        return self.publisher is None or await self.publisher.healthy()

    async def outbox_health(self) -> OutboxHealth:
        """The outbox backlog and oldest unpublished age, read from the database (so the API
        reports them with no worker running), also set on the Prometheus gauges."""
        async with self.engine.connect() as conn:
            health = await outbox_health(
                SqlOutbox(conn),
                self.deps.clock.now(),
                stall_after=self.settings.outbox_stall_after,
            )
        report_outbox_health(health, self.telemetry)
        return health

    async def reconciliation_age(self) -> float | None:
        """Seconds since the last finished reconciliation run (None: none yet), also set on
        its gauge; read from the database, so every process reports it."""
        async with self.deps.uow() as uow:
            finished = await uow.reconciliations.last_finished_at()
        if finished is None:
            return None
        age = max(0.0, (self.deps.clock.now() - finished).total_seconds())
        self.telemetry.gauge("reconciliation_last_run_age_seconds", age)
        return age

    async def aclose(self) -> None:
        if self.publisher is not None:
            await self.publisher.close()
        if self.mock_webhooks is not None:
            await self.mock_webhooks.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        if self.oidc is not None:
            await self.oidc.aclose()
        await self.rate_limiter.aclose()
        await self.engine.dispose()


def configure_logging(settings: Settings) -> None:
    """JSON (or console) logs at the configured level, card data and secrets redacted."""
    log_setup.configure_logging(settings.log_level, settings.log_format)


def migrate(settings: Settings, revision: str = "head") -> None:
    """Apply the database migrations up to `revision` (`tillpoint migrate`)."""
    migrations.upgrade(settings.database_url, revision)


def api_keys(settings: Settings) -> tuple[list[ApiKey], Path | None]:
    """The configured API keys, or the development keys and the file they are kept in."""
    return load_keys(settings)


def serve_worker_metrics(settings: Settings) -> None:
    """The worker's Prometheus endpoint on `TILLPOINT_WORKER_METRICS_PORT`."""
    PrometheusTelemetry().serve(settings.worker_metrics_port, settings.worker_metrics_host)


def preflight(settings: Settings) -> None:
    """Refuse, before anything starts, settings the service cannot run with.

    Raises `ConfigurationRefused` with a message meant for the operator.
    """
    if (why := settings.credential_refusal()) is not None:
        raise ConfigurationRefused(why)
    KeyStore(load_keys(settings)[0])  # refuses keys that contradict each other
    if (why := settings.oidc_refusal()) is not None:
        raise ConfigurationRefused(why)
    webhook_verifiers(settings, mock_webhook_secret(settings))


def schema_preflight(settings: Settings) -> None:
    """Refuse a database whose schema is behind this code (run it after any embedded upgrade).

    An unreachable database is not refused here: `/healthz/ready` reports it, and the service
    recovers when the database comes back.
    """
    try:
        state, current = migrations.inspect_schema(settings.database_url)
    except Exception as exc:  # unreachable, missing database, bad credentials
        log.warning("startup.schema_unchecked", reason=f"{type(exc).__name__}: {exc}"[:300])
        return
    revisions = ",".join(sorted(current)) or "none"
    if state is SchemaState.BEHIND:
        raise ConfigurationRefused(
            f"the database schema is at revision {revisions} but this code needs "
            f"{migrations.head()}; run `tillpoint migrate` first"
        )
    if state is SchemaState.AHEAD:
        log.warning("startup.schema_ahead", revision=revisions, code_head=migrations.head())


def call_policy(settings: Settings) -> CallPolicy:
    """The resilience settings of every provider call."""
    return CallPolicy(
        timeout=settings.provider_timeout.total_seconds(),
        retries=settings.provider_retries,
        backoff=settings.provider_retry_backoff.total_seconds(),
        backoff_max=settings.provider_retry_backoff_max.total_seconds(),
        breaker_threshold=settings.provider_breaker_threshold,
        breaker_reset=settings.provider_breaker_reset.total_seconds(),
    )


def service_config(settings: Settings) -> ServiceConfig:
    return ServiceConfig(
        failure_policy=settings.on_payment_failure,
        default_provider=settings.default_provider,
        snapshot_ttl=settings.snapshot_ttl,
        payment_ttl=settings.payment_ttl,
        # A whole call, every attempt and backoff of the resilient layer included: the
        # per-attempt timeout (`TILLPOINT_PROVIDER_TIMEOUT`) is the adapters' own.
        provider_timeout=call_policy(settings).budget(),
        recheck_schedule=settings.recheck_schedule,
        idempotency_ttl=settings.idempotency_ttl,
        reconcile_window=settings.reconcile_window,
        reconcile_interval=settings.reconcile_interval,
        reconcile_stale_after=settings.reconcile_stale_after,
        reconcile_stuck_after=settings.reconcile_stuck_after,
    )


def build(settings: Settings | None = None, *, clock: Clock | None = None) -> Container:
    settings = settings or Settings()
    oidc = oidc_verifier(settings)  # refuses unusable OIDC settings before anything is built
    clock = clock or SystemClock()
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    telemetry = PrometheusTelemetry()
    mock = MockGateway(engine, delay_ms=settings.mock_delay_ms, clock=clock.now)
    calls = SqlProviderCallLog(engine)
    deps = Deps(
        uow=SqlUnitOfWorkFactory(engine, dialect=settings.event_dialect),
        providers=(
            providers := ProviderRegistry(_providers(settings, mock, calls, telemetry, clock))
        ),
        clock=clock,
        telemetry=telemetry,
        calls=calls,
        config=service_config(settings),
    )
    keys, dev_keys_file = load_keys(settings)
    webhooks, mock_webhooks = _webhooks(settings, deps, mock, telemetry)
    idempotency = Idempotency(
        store=SqlIdempotencyStore(engine),
        clock=clock,
        telemetry=telemetry,
        ttl=settings.idempotency_ttl,
        lock_timeout=settings.idempotency_lock_timeout,
    )
    publisher = make_publisher(settings)
    return Container(
        settings=settings,
        engine=engine,
        deps=deps,
        keys=KeyStore(keys),
        idempotency=idempotency,
        mock=mock,
        telemetry=telemetry,
        dev_keys_file=dev_keys_file,
        webhooks=webhooks,
        mock_webhooks=mock_webhooks,
        publisher=publisher,
        providers=providers,
        oidc=oidc,
        rate_limiter=RateLimiter(
            {str(name): text for name, text in settings.rate_limits.items()},
            redis_url=settings.redis_url,
            prefix=settings.rate_limit_prefix,
        ),
    )


@asynccontextmanager
async def movement_source(settings: Settings) -> AsyncIterator[MovementSource]:
    """The money movements of the configured database, for a command that only exports (one
    connection, closed on exit)."""
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        yield SqlMovementSource(engine)
    finally:
        await engine.dispose()


@contextmanager
def export_target(
    target: str,
    settings: Settings,
    *,
    content_type: str,
    on_upload: Callable[[int], None] | None = None,
) -> Iterator[IO[bytes]]:
    """The file an export writes to, in place at `target` (a path or `s3://bucket/key`, the
    latter through `TILLPOINT_EXPORT_S3_ENDPOINT`) once the block ends without an error."""
    with files.export_target(
        target,
        content_type=content_type,
        s3_endpoint=settings.export_s3_endpoint,
        on_upload=on_upload,
    ) as file:
        yield file


async def write_parquet(
    file: IO[bytes], columns: Sequence[Column], records: AsyncIterable[Record]
) -> None:
    """The records as a typed Parquet file (docs/exports.md)."""
    await files.write_parquet(file, columns, records)


def oidc_verifier(settings: Settings) -> OidcVerifier | None:
    """The JWT verifier, when an OIDC issuer is configured (`TILLPOINT_OIDC_ISSUER`)."""
    if not settings.oidc_issuer:
        return None
    if (why := settings.oidc_refusal()) is not None:
        raise ConfigurationRefused(why)
    return OidcVerifier(
        issuer=settings.oidc_issuer,
        audience=settings.oidc_audience,
        role_map=settings.oidc_role_map,
        role_claims=settings.oidc_role_claims,
        subject_claim=settings.oidc_subject_claim,
        jwks_url=settings.oidc_jwks_url,
        leeway=settings.oidc_leeway.total_seconds(),
        refresh_min_interval=settings.oidc_jwks_refresh_min_interval.total_seconds(),
    )


def stripe_gateway(settings: Settings) -> StripeGateway | None:
    """Stripe, when an API key is configured (`TILLPOINT_STRIPE_API_KEY`)."""
    if settings.stripe_api_key is None or not settings.stripe_api_key.get_secret_value():
        return None
    return StripeGateway(
        settings.stripe_api_key.get_secret_value(),
        api_base=settings.stripe_api_base or None,
        timeout=settings.provider_timeout.total_seconds(),
    )


def _providers(
    settings: Settings,
    mock: MockGateway,
    calls: ProviderCallLog,
    telemetry: PrometheusTelemetry,
    clock: Clock,
) -> dict[str, PaymentProvider]:
    """Every provider adapter, each behind the resilient call layer (timeout, retries, its
    own circuit breaker, the call audit)."""
    adapters: list[PaymentProvider] = [mock]
    if (stripe := stripe_gateway(settings)) is not None:
        adapters.append(stripe)
    policy = call_policy(settings)
    return {
        adapter.name: resilient(
            adapter, policy=policy, calls=calls, metrics=telemetry, clock=clock.now
        )
        for adapter in adapters
    }


def outbox_relay(container: Container) -> OutboxRelay | None:
    if container.publisher is None:
        return None
    return OutboxRelay(
        uow=container.deps.uow,
        publisher=container.publisher,
        clock=container.deps.clock,
        metrics=container.telemetry,
        batch_size=container.settings.outbox_batch_size,
    )


def event_consumers(
    container: Container,
    subscriptions: Sequence[Subscription],
    *,
    prefetch: int | None = None,
    retry_delay: float = 1.0,
) -> RabbitConsumers:
    """The RabbitMQ consumers of `subscriptions`, each message handled by the order-event use
    case on the events unit of work (inbox, outbox), one order at a time in this process."""
    settings = container.settings
    locks = KeyedLocks()
    deps = container.deps

    async def handle(event: OrderEvent) -> Handled:
        return await handle_order_event(event, deps=deps, locks=locks)

    return RabbitConsumers(
        settings.broker_url,
        settings.events_exchange,
        subscriptions,
        handle,
        alternate=settings.events_alternate_exchange,
        prefetch=prefetch or settings.consumer_prefetch,
        retry_delay=retry_delay,
    )


def make_publisher(settings: Settings) -> Publisher:
    """RabbitMQ when `TILLPOINT_BROKER_URL` is set, else the in-process broker."""
    if settings.broker_url:
        return RabbitPublisher(
            settings.broker_url,
            settings.events_exchange,
            alternate=settings.events_alternate_exchange,
            confirm_timeout=settings.broker_publish_timeout.total_seconds(),
        )
    return InProcessBroker()


def _webhooks(
    settings: Settings, deps: Deps, mock: MockGateway, telemetry: PrometheusTelemetry
) -> tuple[WebhookInbox, MockWebhookSimulator]:
    """The inbox with a verifier per provider, and the mock's simulator announcing its
    outcomes to `TILLPOINT_MOCK_WEBHOOK_URL` (or, unset, to this process's own inbox)."""
    secret = mock_webhook_secret(settings)
    inbox = WebhookInbox(
        verifiers=webhook_verifiers(settings, secret),
        max_attempts=settings.webhook_max_attempts,
        retry_base=settings.webhook_retry_base,
        retry_max=settings.webhook_retry_max,
    )

    async def receive(body: bytes, headers: Mapping[str, str]) -> None:
        await receive_webhook("mock", body, headers, deps=deps, inbox=inbox)

    simulator = MockWebhookSimulator(
        secret=secret,
        url=settings.mock_webhook_url,
        delay_ms=settings.mock_delay_ms,
        faults=settings.mock_webhook_faults,
        receiver=receive,
    )
    mock.listeners.append(simulator.listener)
    return inbox, simulator
