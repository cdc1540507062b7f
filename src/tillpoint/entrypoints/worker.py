"""Background loops: the janitor (unknown provider outcomes, stale payments, idempotency
reaper), the webhook inbox, the outbox relay and the event consumers (with a broker URL).
On `stop()` (SIGTERM) every loop finishes the batch in hand and the consumers stop taking
messages, finish and acknowledge the ones in flight, and disconnect.
`tillpoint worker` runs them; with the embedded defaults `tillpoint serve` runs them inside the
API process."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from tillpoint.bootstrap import Container, outbox_relay
from tillpoint.service import janitor, reconciliation, webhooks
from tillpoint.service.context import Deps

log = structlog.get_logger("tillpoint.worker")


@dataclass(frozen=True, slots=True)
class Loop:
    name: str
    step: Callable[[], Awaitable[int]]  # returns how much work it did
    interval: float


def default_loops(container: Container) -> list[Loop]:
    deps = container.deps
    interval = container.settings.janitor_interval.total_seconds()
    loops = [
        Loop("janitor.operations", lambda: janitor.resolve_open_operations(deps=deps), interval),
        Loop("janitor.stale_payments", lambda: janitor.cancel_stale_payments(deps=deps), interval),
        Loop(
            "janitor.idempotency_reaper",
            lambda: container.idempotency.store.reap(deps.clock.now(), 1000),
            max(interval, 60.0),
        ),
    ]
    loops.append(
        Loop(
            "reconciliation.abandoned",
            lambda: reconciliation.fail_abandoned(deps=deps),
            interval,
        )
    )
    every = container.settings.reconcile_interval.total_seconds()
    if every > 0:  # 0 turns the schedule off (runs still start from the API)
        loops.append(Loop("reconciliation.scheduled", lambda: _scheduled(deps), min(every, 60.0)))
    inbox = container.webhooks
    if inbox is not None:
        loops.append(
            Loop(
                "webhooks.process",
                lambda: webhooks.process_due_webhooks(deps=deps, inbox=inbox),
                min(interval, 1.0),
            )
        )
    relay = outbox_relay(container)
    if relay is not None:
        loops.append(
            Loop("outbox.relay", relay.step, container.settings.outbox_interval.total_seconds())
        )
    return loops


async def _scheduled(deps: Deps) -> int:
    """Start this interval's run if no worker has; 0 either way (the loop then sleeps)."""
    await reconciliation.run_scheduled(deps=deps)
    return 0


Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]  # runs until the event is set


def default_services(container: Container) -> list[Service]:
    if not container.settings.broker_url:
        return []
    from tillpoint.entrypoints.consumers import EventConsumers

    return [EventConsumers(container).run]


class Worker:
    def __init__(
        self,
        container: Container,
        loops: list[Loop] | None = None,
        services: list[Service] | None = None,
    ) -> None:
        self.container = container
        self.loops = loops if loops is not None else default_loops(container)
        if services is None:
            services = default_services(container) if loops is None else []
        self.services = services
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        log.info("worker.started", loops=[loop.name for loop in self.loops])
        async with asyncio.TaskGroup() as group:
            for loop in self.loops:
                group.create_task(self._run(loop))
            for service in self.services:
                group.create_task(service(self._stopping))
        log.info("worker.stopped")

    async def _run(self, loop: Loop) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                done = await loop.step()
                failures = 0
            except Exception:
                failures += 1
                log.exception("worker.loop_failed", loop=loop.name, failures=failures)
                done = 0
            if done:
                continue  # more may be waiting
            # back off on failure, with jitter so copies of the worker do not march in step
            delay = loop.interval * min(2**failures, 60) * random.uniform(0.8, 1.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
