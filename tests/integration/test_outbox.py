"""The outbox table through its adapter (`SqlOutbox`), and two relays on one PostgreSQL.

Each test has a database of its own: the outbox is read as a whole (oldest unpublished row
first), so rows another test left would change what is claimed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.events.conftest import drain
from tests.support.clock import MovableClock
from tests.support.records import captured_payment
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.engine import make_engine
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.uow import SqlUnitOfWorkFactory
from tillpoint.service.outbox import OutboxRelay
from tillpoint.service.ports import OutboxMessage

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def message(aggregate: str, sequence: int, routing_key: str = "payment.succeeded") -> OutboxMessage:
    return OutboxMessage(
        event_id=f"evt_{aggregate}_{sequence}_{routing_key}",
        aggregate_id=aggregate,
        routing_key=routing_key,
        message_type=f"{routing_key}.v1",
        sequence=sequence,
        body=json.dumps({"aggregate": aggregate, "sequence": sequence}),
        created_at=NOW + timedelta(seconds=sequence),
    )


@pytest.fixture
async def outbox(engine: AsyncEngine) -> AsyncIterator[SqlOutbox]:
    """The adapter on a connection whose transaction is rolled back after the test."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        try:
            yield SqlOutbox(conn)
        finally:
            await transaction.rollback()


class TestSqlOutbox:
    async def test_claims_the_unpublished_rows_oldest_first_with_their_ids(
        self, outbox: SqlOutbox
    ) -> None:
        await outbox.write([message("a", 1), message("b", 1), message("a", 2)])

        claimed = await outbox.claim(2)

        assert [(m.aggregate_id, m.sequence) for m in claimed] == [("a", 1), ("b", 1)]
        assert all(m.id is not None for m in claimed)
        assert claimed[0].body == message("a", 1).body
        assert claimed[0].attempts == 0

    async def test_writing_nothing_is_a_no_op(self, outbox: SqlOutbox) -> None:
        await outbox.write([])

        assert await outbox.claim(10) == []
        assert await outbox.backlog() == 0

    async def test_published_rows_leave_the_backlog(self, outbox: SqlOutbox) -> None:
        await outbox.write([message("a", 1), message("a", 2), message("b", 1)])
        first, *_ = await outbox.claim(10)
        assert first.id is not None

        await outbox.mark_published([first.id], NOW)

        assert [(m.aggregate_id, m.sequence) for m in await outbox.claim(10)] == [
            ("a", 2),
            ("b", 1),
        ]
        assert await outbox.backlog() == 2
        assert await outbox.backlog(cap=1) == 1
        assert await outbox.unpublished_sequences(["a", "b", "c"]) == {"a": [2], "b": [1]}
        assert await outbox.unpublished_sequences([]) == {}
        oldest = await outbox.oldest_unpublished_at()
        assert oldest is not None
        assert oldest.replace(tzinfo=UTC) == message("a", 2).created_at

    async def test_a_failed_publish_is_counted_and_its_error_kept_short(
        self, outbox: SqlOutbox
    ) -> None:
        await outbox.write([message("a", 1)])
        (claimed,) = await outbox.claim(10)
        assert claimed.id is not None

        await outbox.mark_failed([claimed.id], "x" * 600)
        await outbox.mark_failed([claimed.id], "broker down")

        (again,) = await outbox.claim(10)
        assert again.attempts == 2
        assert await last_error(outbox.conn, claimed.id) == "broker down"
        await outbox.mark_failed([claimed.id], "y" * 600)
        assert await last_error(outbox.conn, claimed.id) == "y" * 500

    async def test_latest_is_the_highest_sequence_among_the_routing_keys(
        self, outbox: SqlOutbox
    ) -> None:
        await outbox.write(
            [
                message("a", 1, "payment.authorized"),
                message("a", 2, "payment.succeeded"),
                message("a", 3, "payment.refunded"),
                message("b", 4, "payment.succeeded"),
            ]
        )

        latest = await outbox.latest("a", ["payment.authorized", "payment.succeeded"])

        assert latest is not None
        assert (latest.aggregate_id, latest.sequence) == ("a", 2)
        assert await outbox.latest("a", ["payment.failed"]) is None
        assert await outbox.oldest_unpublished_at() is not None


async def last_error(conn: AsyncConnection, row_id: int) -> str | None:
    o = t.outbox.c
    error: str | None = await conn.scalar(sa.select(o.last_error).where(o.id == row_id))
    return error


class BlockingPublisher:
    """Publishes into a list; the first publish waits until released (a slow broker)."""

    def __init__(self, block: bool) -> None:
        self.published: list[OutboxMessage] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def publish(self, message: OutboxMessage) -> None:
        self.entered.set()
        await self.release.wait()
        self.published.append(message)

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None


@pytest.fixture
async def pg_engine(own_pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(own_pg_url, pool_size=4)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_a_relay_never_overtakes_another_holding_an_earlier_row(
    pg_engine: AsyncEngine, own_pg_url: str
) -> None:
    clock = MovableClock()
    uow = SqlUnitOfWorkFactory(pg_engine)
    await drain(OutboxRelay(uow=uow, publisher=BlockingPublisher(False), clock=clock))
    payment_id = await captured_payment(own_pg_url)

    first = BlockingPublisher(block=True)
    slow = OutboxRelay(uow=uow, publisher=first, clock=clock, batch_size=1)
    slow_batch = asyncio.create_task(slow.relay_batch())
    await asyncio.wait_for(first.entered.wait(), timeout=10)  # holds sequence 1, unconfirmed
    second = BlockingPublisher(block=False)
    fast = OutboxRelay(uow=uow, publisher=second, clock=clock)

    overtaking = await fast.relay_batch()  # claims sequence 2, must leave it

    assert overtaking.published == 0
    assert overtaking.held_back == 1
    first.release.set()
    assert (await slow_batch).published == 1
    assert (await fast.relay_batch()).published == 1
    assert [m.sequence for m in first.published + second.published] == [1, 2]
    assert {m.aggregate_id for m in first.published + second.published} == {payment_id}
