"""`TILLPOINT_EVENT_DIALECT=foodies` against the real RabbitMQ: what the ordering service of
seed 004 receives, including an outcome published again for a repeated event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.conftest import settings_for
from tests.events.conftest import AMQP_URL, Broker, Received
from tests.events.test_consumers import encode, order_number, stock_confirmed
from tests.support.clock import MovableClock
from tillpoint.bootstrap import Container, build, outbox_relay
from tillpoint.entrypoints.consumers import EventConsumers
from tillpoint.entrypoints.worker import Loop, Worker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SUCCEEDED = [
    "eventId",
    "orderId",
    "paymentId",
    "transactionId",
    "amount",
    "currency",
    "processedAt",
]
FAILED = ["eventId", "orderId", "failureReason", "failureCode", "occurredAt"]


@pytest.fixture
async def foodies(pg_url: str, broker: Broker) -> AsyncIterator[Container]:
    names = broker.names
    container = build(
        settings_for(
            pg_url,
            broker_url=AMQP_URL,
            events_exchange=names.exchange,
            stock_confirmed_queue=names.stock_confirmed,
            order_created_queue=names.order_created,
            event_dialect="foodies",
        ),
        clock=MovableClock(),
    )
    relay = outbox_relay(container)
    assert relay is not None
    consumers = EventConsumers(container, retry_delay=0.2)
    running = Worker(
        container, loops=[Loop("outbox.relay", relay.step, 0.05)], services=[consumers.run]
    )
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(consumers.started.wait(), timeout=20)
    try:
        yield container
    finally:
        running.stop()
        await asyncio.wait_for(task, timeout=30)
        await container.aclose()


def outcomes(messages: list[Received], order_id: int) -> list[Received]:
    return [
        m
        for m in messages
        if m.body.get("orderId") == order_id
        and m.routing_key in ("payment.succeeded", "payment.failed")
    ]


async def test_succeeded_follows_seed_004_also_when_published_again(
    foodies: Container, broker: Broker
) -> None:
    order_id = order_number()
    event = encode(stock_confirmed(order_id, "4242"))
    await broker.send("order.stock-confirmed", event)
    await broker.send("order.stock-confirmed", event)  # asked again: the outcome again

    await broker.tap.wait_for(lambda m: len(outcomes(m, order_id)) >= 2)
    published = outcomes(broker.tap.messages, order_id)
    assert [m.routing_key for m in published] == ["payment.succeeded"] * 2
    for message in published:
        assert list(message.body) == SUCCEEDED
        assert message.body["orderId"] == order_id  # a JSON number, as the seed's Long
        assert isinstance(message.body["paymentId"], int)
        assert message.body["amount"] == "49.99"
        assert message.body["currency"] == "EUR"
        assert message.message_id == message.body["eventId"]
        assert message.headers["type"] == "payment.succeeded.v1"
    first, again = published
    assert first.body["eventId"] != again.body["eventId"]
    assert {k: v for k, v in first.body.items() if k != "eventId"} == {
        k: v for k, v in again.body.items() if k != "eventId"
    }
    assert again.headers["sequence"] > first.headers["sequence"]


async def test_failed_follows_seed_004(foodies: Container, broker: Broker) -> None:
    order_id = order_number()
    await broker.send("order.stock-confirmed", encode(stock_confirmed(order_id, "0000")))

    await broker.tap.wait_for(lambda m: len(outcomes(m, order_id)) >= 1)
    (failed,) = outcomes(broker.tap.messages, order_id)
    assert failed.routing_key == "payment.failed"
    assert list(failed.body) == FAILED
    assert failed.body["orderId"] == order_id
    assert failed.body["failureCode"] == "CARD_DECLINED"
    assert failed.body["failureReason"]
