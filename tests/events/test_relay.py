"""The outbox relay: the in-process default, the per-payment ordering rule and a broker outage
against the real RabbitMQ. (Two relays on one PostgreSQL: tests/integration/test_outbox.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SERVICE_KEY, closed_port, headers, new_key, settings_for
from tests.events.conftest import Broker, TcpProxy, drain
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.publisher import RecordingPublisher
from tests.support.records import captured_payment
from tillpoint.adapters.brokers.inprocess import InProcessBroker
from tillpoint.adapters.brokers.rabbitmq import RabbitPublisher
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.uow import SqlUnitOfWorkFactory
from tillpoint.adapters.telemetry import REGISTRY
from tillpoint.bootstrap import Container, build, outbox_relay
from tillpoint.entrypoints.worker import default_loops
from tillpoint.service.outbox import OutboxRelay, publishable
from tillpoint.service.ports import OutboxMessage, PublishFailed


def row(aggregate: str, sequence: int, id_: int) -> OutboxMessage:
    return OutboxMessage(
        event_id=f"evt_{id_}",
        aggregate_id=aggregate,
        routing_key="payment.succeeded",
        message_type="payment.succeeded.v1",
        sequence=sequence,
        body="{}",
        created_at=datetime.now(UTC),
        id=id_,
    )


class TestPublishable:
    def test_publishes_only_the_run_from_the_oldest_unpublished_row(self) -> None:
        claimed = [row("a", 2, 12), row("a", 3, 13), row("b", 1, 21), row("b", 3, 23)]
        # a's sequence 1 is unpublished and held by someone else; b's 2 likewise
        runs, held_back = publishable(claimed, {"a": [1, 2, 3], "b": [1, 2, 3]})

        assert [[r.id for r in run] for run in runs] == [[21]]
        assert held_back == 3

    def test_keeps_sequence_order_whatever_the_claim_order(self) -> None:
        claimed = [row("a", 3, 13), row("a", 1, 11), row("a", 2, 12)]
        runs, held_back = publishable(claimed, {"a": [1, 2, 3]})

        assert [[r.sequence for r in run] for run in runs] == [[1, 2, 3]]
        assert held_back == 0


async def pay(http: httpx.AsyncClient, card: str = "pm_card_visa") -> str:
    order_id = await flows.create_order(http, "10.00", buyer_id="b")
    payment_id: str = (await flows.create_payment(http, order_id, "10.00", token=card))[
        "payment_id"
    ]
    confirmed = await http.post(
        f"/api/v1/payments/{payment_id}/confirm", headers=headers(SERVICE_KEY, new_key())
    )
    assert confirmed.status_code in (200, 402), confirmed.text
    return payment_id


async def event_ids(engine: AsyncEngine, payment_ids: list[str], *, published: bool) -> set[str]:
    o = t.outbox.c
    condition = o.published_at.is_not(None) if published else o.published_at.is_(None)
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(o.event_id).where(o.aggregate_id.in_(payment_ids), condition)
        )
    return {r.event_id for r in rows}


async def test_in_process_broker_is_the_default(
    container: Container, client: httpx.AsyncClient
) -> None:
    broker = container.publisher
    assert isinstance(broker, InProcessBroker)
    assert "outbox.relay" in [loop.name for loop in default_loops(container)]
    assert await container.broker_check()
    recorder = RecordingPublisher(broker)
    before = published_total()
    payment_id = await pay(client)
    relay = outbox_relay(dataclasses.replace(container, publisher=recorder))
    assert relay is not None
    await drain(relay)

    mine = [m for m in recorder.messages if m.aggregate_id == payment_id]
    assert [m.sequence for m in mine] == list(range(1, len(mine) + 1))
    assert mine[-1].routing_key == "payment.succeeded"
    assert not await event_ids(container.engine, [payment_id], published=False)
    assert published_total() >= before + 1


def published_total() -> float:
    return REGISTRY.get_sample_value("outbox_published_total") or 0.0


@pytest.mark.rabbitmq
@pytest.mark.postgres
async def test_broker_outage_loses_nothing_and_publishes_nothing_rolled_back(
    rabbit_container: Container, rabbit_client: httpx.AsyncClient, broker: Broker, pg_url: str
) -> None:
    proxy = TcpProxy()
    await proxy.start()
    publisher = RabbitPublisher(
        proxy.url,
        broker.names.exchange,
        confirm_timeout=2,
        connect_timeout=2,
        reconnect_interval=0.3,
    )
    relay = OutboxRelay(
        uow=SqlUnitOfWorkFactory(rabbit_container.engine),
        publisher=publisher,
        clock=rabbit_container.deps.clock,
    )
    engine = rabbit_container.engine
    try:
        before = await pay(rabbit_client)
        await drain(relay, within=30)
        assert await publisher.healthy()
        ready = await rabbit_client.get("/healthz/ready")
        assert ready.json()["checks"]["broker"] == "UP"

        await proxy.cut()
        during = [await pay(rabbit_client) for _ in range(3)]
        during.append(await pay(rabbit_client, card="pm_card_chargeDeclined"))
        rolled_back = await captured_payment(pg_url, commit=False)
        committed = await event_ids(engine, during, published=False)
        assert len(committed) >= 4  # at least 3 succeeded + 1 failed
        with pytest.raises(PublishFailed):
            await relay.step()
        assert await event_ids(engine, during, published=False) == committed
        assert not await publisher.healthy()

        await proxy.start()
        deadline = time.monotonic() + 30
        while await event_ids(engine, during, published=False):
            assert time.monotonic() < deadline, "the relay did not recover"
            try:
                await relay.step()
            except PublishFailed:
                await asyncio.sleep(0.2)

        messages = await broker.tap.wait_for(lambda m: committed <= {x.body["event_id"] for x in m})
        seen = {m.body["payment_id"] for m in messages}
        assert before in seen
        assert rolled_back not in seen
        async with engine.connect() as conn:
            ghost = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(t.outbox)
                .where(t.outbox.c.aggregate_id == rolled_back)
            )
        assert ghost == 0
        for payment_id in during:  # in order, per payment
            sequences = [m.body["sequence"] for m in messages if m.body["payment_id"] == payment_id]
            assert sequences == sorted(set(sequences))
    finally:
        await publisher.close()
        await proxy.cut()


@pytest.mark.postgres
async def test_readiness_reports_an_unreachable_broker(pg_url: str) -> None:
    with closed_port() as port:  # bound, never listening: connections are refused
        current = build(settings_for(pg_url, broker_url=f"amqp://guest:guest@127.0.0.1:{port}/"))
        try:
            assert isinstance(current.publisher, RabbitPublisher)
            async with asgi_client(current) as http:
                ready = await http.get("/healthz/ready")
                assert ready.status_code == 503
                checks = ready.json()["checks"]
                assert (checks["database"], checks["broker"]) == ("UP", "DOWN")
        finally:
            await current.aclose()
