"""The outbox relay: moves committed `outbox` rows to the broker, at least once, in order.

Ordering guarantee (per payment, with any number of relays running side by side):

1. A relay claims a batch with `SELECT … FOR UPDATE SKIP LOCKED` (PostgreSQL), so two relays
   never hold the same row at once; a killed relay's locks vanish with its connection and its
   rows become claimable again (nothing was marked published, so nothing is lost).
2. Claiming rows is not enough: relay A may hold a payment's `sequence` 1 while relay B claims
   its `sequence` 2. So after claiming, the relay reads every *unpublished* sequence of the
   payments it claimed (a fresh READ COMMITTED snapshot) and publishes only the longest run
   that starts at the payment's oldest unpublished row and consists of rows it holds. B sees
   that 1 is still unpublished (A has not committed) and leaves 2 alone; once A commits, 1 is
   no longer unpublished and B (or anyone) may publish 2. A row is only ever published after
   every earlier row of its payment was published *and confirmed* by the broker.
3. Within one payment rows are published one after another, each waiting for its publisher
   confirm; on the first failure the rest of that payment waits for a later attempt.
4. Rows are marked published in the claiming transaction, after the confirms. A crash between
   the confirm and the commit re-publishes those rows later (at least once): a consumer that
   drops an `event_id` it has already seen sees every payment's `sequence` strictly increase.

Rows of a payment commit in `sequence` order (the payment row is version-checked), so a
later row can never become visible before an earlier one.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog

from tillpoint.service.ports import (
    Clock,
    OutboxMessage,
    OutboxRepository,
    Publisher,
    PublishFailed,
    Telemetry,
    UnitOfWorkFactory,
)

log = structlog.get_logger("tillpoint.outbox")


BACKLOG_CAP = 100_000


@dataclass(frozen=True, slots=True)
class OutboxHealth:
    """What an operator needs to see a stalled relay: how much waits, and for how long."""

    backlog: int
    oldest_age_seconds: float
    stalled: bool


async def outbox_health(
    outbox: OutboxRepository, now: datetime, *, stall_after: timedelta | None = None
) -> OutboxHealth:
    """Read the backlog and the oldest unpublished row's age from the database itself, so any
    process (the API without a worker too) reports them; `stalled` once that age passes
    `stall_after`."""
    backlog = await outbox.backlog(BACKLOG_CAP)
    oldest = await outbox.oldest_unpublished_at() if backlog else None
    age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    stalled = stall_after is not None and backlog > 0 and age > stall_after.total_seconds()
    return OutboxHealth(backlog, age, stalled)


def report_outbox_health(health: OutboxHealth, metrics: Telemetry) -> None:
    metrics.gauge("outbox_backlog", health.backlog)
    metrics.gauge("outbox_oldest_unpublished_age_seconds", health.oldest_age_seconds)


def publishable(
    claimed: Sequence[OutboxMessage], unpublished: Mapping[str, Sequence[int]]
) -> tuple[list[list[OutboxMessage]], int]:
    """Split claimed rows into per-aggregate runs that may leave now, in `sequence` order.

    A run starts at the aggregate's oldest unpublished sequence and stops at the first
    sequence this relay does not hold. Returns the runs and how many claimed rows must wait.
    """
    by_aggregate: dict[str, dict[int, list[OutboxMessage]]] = defaultdict(lambda: defaultdict(list))
    for row in sorted(claimed, key=lambda r: (r.sequence, r.id or 0)):
        by_aggregate[row.aggregate_id][row.sequence].append(row)
    runs: list[list[OutboxMessage]] = []
    held_back = 0
    for aggregate_id, held in by_aggregate.items():
        run: list[OutboxMessage] = []
        for sequence in unpublished.get(aggregate_id, ()):
            if not held[sequence]:
                break
            run.append(held[sequence].pop(0))
        held_back += sum(len(rows) for rows in held.values())
        if run:
            runs.append(run)
    return runs, held_back


@dataclass(frozen=True, slots=True)
class RelayResult:
    published: int
    held_back: int
    failed: int


class OutboxRelay:
    """One `step()` relays one batch; the worker calls it in a loop and backs off on errors."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        publisher: Publisher,
        clock: Clock,
        metrics: Telemetry | None = None,
        batch_size: int = 100,
    ) -> None:
        self.uow = uow
        self.publisher = publisher
        self.clock = clock
        self.metrics = metrics
        self.batch_size = batch_size
        self._gauged_at = float("-inf")

    async def step(self) -> int:
        """Relay one batch; raises `PublishFailed` (after saving progress) to ask for a back-off."""
        result = await self.relay_batch()
        if result.failed:
            raise PublishFailed(f"{result.failed} outbox row(s) could not be published")
        return result.published

    async def relay_batch(self) -> RelayResult:
        published: list[OutboxMessage] = []
        failed: list[OutboxMessage] = []
        error = ""
        async with self.uow() as uow:
            claimed = await uow.outbox.claim(self.batch_size)
            if not claimed:
                await self._backlog(uow.outbox)
                return RelayResult(0, 0, 0)
            aggregates = sorted({row.aggregate_id for row in claimed})
            runs, held_back = publishable(
                claimed, await uow.outbox.unpublished_sequences(aggregates)
            )
            # Different payments' runs are in flight together (their order is independent);
            # inside a run each row waits for the previous one's confirm.
            for run_published, run_failed, run_held, run_error in await asyncio.gather(
                *(self._publish_run(run) for run in runs)
            ):
                published.extend(run_published)
                failed.extend(run_failed)
                held_back += run_held
                error = run_error or error
            now = self.clock.now()
            if published:
                await uow.outbox.mark_published([r.id for r in published if r.id is not None], now)
            if failed:
                await uow.outbox.mark_failed([r.id for r in failed if r.id is not None], error)
            await self._backlog(uow.outbox)
            await uow.commit()
        self._observe(published, now)
        if failed:
            log.warning(
                "outbox.publish_failed",
                failed=len(failed),
                published=len(published),
                error=error,
            )
        return RelayResult(len(published), held_back, len(failed))

    async def _publish_run(
        self, run: Sequence[OutboxMessage]
    ) -> tuple[list[OutboxMessage], list[OutboxMessage], int, str]:
        """Publish one payment's rows in order; stop at the first failure (the rest waits)."""
        published: list[OutboxMessage] = []
        for position, row in enumerate(run):
            try:
                await self.publisher.publish(row)
            except Exception as exc:  # any broker trouble: retry later, in order
                error = f"{type(exc).__name__}: {exc}"[:500]
                return published, [row], len(run) - position - 1, error
            published.append(row)
        return published, [], 0, ""

    def _observe(self, published: Sequence[OutboxMessage], now: datetime) -> None:
        for row in published:
            log.debug(
                "outbox.published",
                event_id=row.event_id,
                payment_id=row.aggregate_id,
                routing_key=row.routing_key,
                sequence=row.sequence,
            )
        if self.metrics is None:
            return
        for row in published:
            self.metrics.count("outbox_published_total")
            self.metrics.observe(
                "outbox_lag_seconds", max((now - row.created_at).total_seconds(), 0.0)
            )

    async def _backlog(self, outbox: OutboxRepository) -> None:
        """Refresh the backlog gauges at most once a second: counting a large backlog after
        every batch would cost more than relaying the batch."""
        if self.metrics is None or time.monotonic() - self._gauged_at < 1.0:
            return
        self._gauged_at = time.monotonic()
        report_outbox_health(await outbox_health(outbox, self.clock.now()), self.metrics)
