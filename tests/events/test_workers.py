"""Two `tillpoint worker` processes relay one PostgreSQL outbox to RabbitMQ; one is SIGKILLed
in the middle of a batch. Every row must still be published, and per payment the sequence of
the messages received (ignoring redeliveries of an `event_id` already seen) never goes
backwards.

The victim reaches RabbitMQ through a slow link (everything the broker sends it takes 100 ms)
that follows its publisher confirms: it is killed at a moment when a message of this test that
it published is still waiting for its confirm, so its batch cannot have been committed; the
survivor must publish those messages again.

(An earlier version guessed the moment from timing: "received by the tap but not marked
published, twice 150 ms apart — only the victim's slow batches do that". On a loaded machine a
survivor's commit can take that long too, and the victim can commit between the last look and
the kill; either way a caught row was published once and the test failed.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import API_KEYS, MOCK_WEBHOOK_SECRET, new_key, settings_for
from tests.events.conftest import AMQP_URL, Broker, Received, TcpProxy
from tests.support.records import captured
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container, build
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    CaptureMethod,
    Outcome,
    PaymentMethod,
    ProviderStatus,
)
from tillpoint.service.orders import CreateOrder, create_order
from tillpoint.service.payments import (
    CreatePayment,
    capture_payment,
    confirm_payment,
    create_payment,
    refund_payment,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres, pytest.mark.slow]

CTX = ChangeContext("test")
EVENTS_PER_PAYMENT = 4  # authorized, succeeded, refunded, refunded


class WorkerProcess:
    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tillpoint.entrypoints.cli", "worker"],
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture
async def slow_link() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(delay=0.1)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


@pytest.fixture
def workers(
    broker: Broker, pg_url: str, tmp_path: Path, slow_link: TcpProxy
) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    names = broker.names
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
    env.update(
        {
            "TILLPOINT_DATABASE_URL": pg_url,
            "TILLPOINT_BROKER_URL": AMQP_URL,
            "TILLPOINT_EVENTS_EXCHANGE": names.exchange,
            "TILLPOINT_STOCK_CONFIRMED_QUEUE": names.stock_confirmed,
            "TILLPOINT_ORDER_CREATED_QUEUE": names.order_created,
            "TILLPOINT_API_KEYS": json.dumps(API_KEYS),
            "TILLPOINT_MOCK_WEBHOOK_SECRET": MOCK_WEBHOOK_SECRET,
            "TILLPOINT_STATE_DIR": str(tmp_path / ".tillpoint"),
            "TILLPOINT_LOG_LEVEL": "WARNING",
            "TILLPOINT_OUTBOX_BATCH_SIZE": "5",
            "TILLPOINT_OUTBOX_INTERVAL": "50ms",
            "TILLPOINT_DB_POOL_SIZE": "3",
        }
    )
    slow = {**env, "TILLPOINT_BROKER_URL": slow_link.url}
    pair = (WorkerProcess(slow, tmp_path, "victim"), WorkerProcess(env, tmp_path, "survivor"))
    try:
        yield pair
    finally:
        for worker in pair:
            worker.signal(signal.SIGKILL)
            worker.proc.wait(timeout=10)


@pytest.fixture
async def producer(pg_url: str) -> AsyncIterator[Container]:
    current = build(settings_for(pg_url))
    try:
        yield current
    finally:
        await current.aclose()


async def paid_and_refunded(container: Container) -> str:
    """Authorized, captured, then refunded in two parts: four events, sequences 1-4."""
    deps = container.deps
    order_id = f"ord-{new_key()}"
    await create_order(CreateOrder(order_id, "buyer-1", Money(1000, "EUR")), CTX, deps=deps)
    payment = await create_payment(
        CreatePayment(
            order_id=order_id,
            amount=Money(1000, "EUR"),
            capture_method=CaptureMethod.MANUAL,
            payment_method=PaymentMethod(last4="4242"),
        ),
        CTX,
        deps=deps,
    )
    await confirm_payment(payment.id, None, CTX, deps=deps)
    await capture_payment(payment.id, None, CTX, deps=deps)
    await refund_payment(payment.id, Money(300, "EUR"), None, CTX, deps=deps)
    await refund_payment(payment.id, Money(700, "EUR"), None, CTX, deps=deps)
    return payment.id


async def burst(container: Container, count: int) -> list[str]:
    """`count` payments with the same four events, committed at once through the
    repositories: a backlog that both workers start relaying at the same moment."""
    now = container.deps.clock.now()
    amount = Money(1000, "EUR")
    ids = []
    async with container.deps.uow() as uow:
        for _ in range(count):
            order, payment = captured(now, amount)
            for part in (300, 700):
                refund, op = payment.begin_refund(Money(part, "EUR"), None, now)
                said = Outcome(ProviderStatus.REFUNDED, None, part, "EUR")
                payment.apply(said, op=op, now=now, source="test", check_at=now, refund=refund)
            await uow.orders.add(order)
            await uow.payments.add(payment)
            ids.append(payment.id)
        await uow.commit()
    return ids


async def consumers_up(broker: Broker, count: int) -> None:
    """Both workers are running once each consumes the stock-confirmed queue."""
    name = broker.names.stock_confirmed
    channel = await broker.connection.channel()
    try:  # declared as the service declares it, so whoever comes first makes no difference
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": f"{name}.dlq"},
        )
        deadline = time.monotonic() + 60
        while (queue.declaration_result.consumer_count or 0) < count:
            assert time.monotonic() < deadline, "the workers did not start"
            await asyncio.sleep(0.2)
            await queue.declare()
    finally:
        await channel.close()


async def outbox_rows(container: Container, payment_ids: list[str]) -> dict[str, bool]:
    """event_id → published, for these payments."""
    o = t.outbox.c
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(o.event_id, o.published_at).where(o.aggregate_id.in_(payment_ids))
        )
    return {r.event_id: r.published_at is not None for r in rows}


async def in_flight(broker: Broker, container: Container, payment_ids: list[str]) -> set[str]:
    """Event ids already received but not yet marked published: a batch in progress."""
    received = {m.body["event_id"] for m in list(broker.tap.messages)}
    rows = await outbox_rows(container, payment_ids)
    return {event_id for event_id in received if rows.get(event_id) is False}


def first_deliveries(messages: list[Received]) -> list[Received]:
    seen: set[str] = set()
    result = []
    for message in messages:
        if message.body["event_id"] not in seen:
            seen.add(message.body["event_id"])
            result.append(message)
    return result


async def test_two_workers_one_killed_publish_everything_in_order(
    workers: tuple[WorkerProcess, WorkerProcess],
    broker: Broker,
    producer: Container,
    slow_link: TcpProxy,
) -> None:
    victim, survivor = workers
    await consumers_up(broker, 2)
    payment_ids = await burst(producer, 40)

    # payments keep committing through the use cases while the workers relay
    async def produce_more() -> None:
        for _ in range(8):
            payment_ids.append(await paid_and_refunded(producer))

    more = asyncio.create_task(produce_more())
    deadline = time.monotonic() + 60
    while True:  # kill the victim while it waits for the confirm of one of our rows
        assert time.monotonic() < deadline, f"no batch seen in flight:\n{victim.tail()}"
        ours = set(payment_ids)
        waiting = [m for m in slow_link.unconfirmed() if m.get("payment_id") in ours]
        if waiting:
            # No await from `unconfirmed()` until the victim is reaped: the proxy runs in this
            # event loop, so it cannot pass the confirm on and the victim's batch is never
            # committed.
            victim.signal(signal.SIGKILL)
            assert victim.proc.wait(timeout=10) == -signal.SIGKILL
            caught = {m["event_id"] for m in waiting}
            break
        await asyncio.sleep(0.01)
    await more

    deadline = time.monotonic() + 90
    while not all((rows := await outbox_rows(producer, payment_ids)).values()):
        assert survivor.proc.poll() is None, survivor.tail()
        assert time.monotonic() < deadline, f"unpublished rows remain:\n{survivor.tail()}"
        await asyncio.sleep(0.2)
    assert len(rows) == EVENTS_PER_PAYMENT * len(payment_ids)
    messages = await broker.tap.wait_for(
        lambda m: set(rows) <= {x.body["event_id"] for x in m}, timeout=30
    )

    delivered = [m.body["event_id"] for m in messages]
    assert all(delivered.count(event_id) >= 2 for event_id in caught)  # published again
    firsts = first_deliveries(messages)
    for payment_id in payment_ids:
        sequences = [m.body["sequence"] for m in firsts if m.body["payment_id"] == payment_id]
        assert sequences == list(range(1, EVENTS_PER_PAYMENT + 1)), (payment_id, sequences)

    survivor.signal(signal.SIGTERM)  # drains and exits cleanly
    assert survivor.proc.wait(timeout=30) == 0, survivor.tail()
