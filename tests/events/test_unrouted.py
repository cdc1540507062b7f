"""Nothing published is lost for want of a binding: the events exchange's alternate exchange
`<exchange>.unrouted` keeps every message no queue was bound for (real RabbitMQ)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import pytest
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.conftest import need_service
from tests.events.conftest import AMQP_URL, Broker, Names, Tap
from tillpoint.adapters.brokers.rabbitmq import RabbitPublisher
from tillpoint.domain.ids import new_id
from tillpoint.service.ports import OutboxMessage

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def amqp() -> AsyncIterator[tuple[Names, AbstractRobustConnection]]:
    """A connection and fresh names, without the tap (it is bound to `#` and routes all)."""
    need_service("RabbitMQ", "127.0.0.1", 5672)
    names = Names()
    connection = await aio_pika.connect_robust(AMQP_URL)
    try:
        yield names, connection
    finally:
        cleanup = await connection.channel()
        for queue in names.queues:
            with contextlib.suppress(Exception):
                await cleanup.queue_delete(queue)
        for exchange in names.exchanges:
            with contextlib.suppress(Exception):
                await cleanup.exchange_delete(exchange)
        await connection.close()


def _message(routing_key: str) -> OutboxMessage:
    event_id = new_id("evt")
    return OutboxMessage(
        event_id=event_id,
        aggregate_id="pay_test",
        routing_key=routing_key,
        message_type=f"{routing_key}.v1",
        sequence=1,
        body=json.dumps({"event_id": event_id, "payment_id": "pay_test"}),
        created_at=datetime.now(UTC),
    )


async def _queued(
    connection: AbstractRobustConnection, queue: str
) -> list[AbstractIncomingMessage]:
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        found = []
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            found.append(message)
        return found
    finally:
        await channel.close()


async def test_an_event_nobody_is_bound_for_lands_in_the_unrouted_queue(
    amqp: tuple[Names, AbstractRobustConnection],
) -> None:
    names, connection = amqp
    publisher = RabbitPublisher(AMQP_URL, names.exchange)
    try:
        warmup = _message("payment.warmup")  # declares everything; nobody is bound yet
        await publisher.publish(warmup)
        channel = await connection.channel()
        bound = await channel.declare_queue(names.tap, durable=True)
        await bound.bind(names.exchange, routing_key="payment.succeeded")
        await channel.close()
        lost = _message("payment.nobody-listens")
        routed = _message("payment.succeeded")
        await publisher.publish(lost)
        await publisher.publish(routed)
    finally:
        await publisher.close()
    unrouted = await _queued(connection, names.unrouted)
    assert [m.message_id for m in unrouted] == [warmup.event_id, lost.event_id]
    kept = unrouted[1]
    assert kept.routing_key == "payment.nobody-listens"  # the original key is kept
    assert json.loads(kept.body) == json.loads(lost.body)
    assert kept.headers["sequence"] == 1
    assert [m.message_id for m in await _queued(connection, names.tap)] == [routed.event_id]


async def test_an_exchange_made_without_the_alternate_exchange_keeps_working_and_says_so(
    amqp: tuple[Names, AbstractRobustConnection],
) -> None:
    names, connection = amqp
    channel = await connection.channel()
    await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue(names.tap, durable=True)
    await queue.bind(names.exchange, routing_key="#")
    await channel.close()
    publisher = RabbitPublisher(AMQP_URL, names.exchange)
    message = _message("payment.succeeded")
    try:
        with structlog.testing.capture_logs() as logs:
            await publisher.publish(message)
    finally:
        await publisher.close()
    assert [m.message_id for m in await _queued(connection, names.tap)] == [message.event_id]
    errors = [e for e in logs if e["event"] == "broker.exchange_without_alternate_exchange"]
    assert len(errors) == 1
    assert errors[0]["log_level"] == "error"
    assert errors[0]["alternate_exchange"] == names.unrouted


async def test_policy_mode_declares_no_argument_on_a_legacy_exchange(
    amqp: tuple[Names, AbstractRobustConnection],
) -> None:
    names, connection = amqp
    channel = await connection.channel()
    await channel.declare_exchange(names.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.close()
    publisher = RabbitPublisher(AMQP_URL, names.exchange, alternate="policy")
    try:
        with structlog.testing.capture_logs() as logs:
            await publisher.publish(_message("payment.nobody-listens"))
    finally:
        await publisher.close()
    assert not [e for e in logs if e["log_level"] == "error"]
    # The unrouted exchange and queue exist, ready for the operator's policy.
    assert await _queued(connection, names.unrouted) == []


async def test_the_test_broker_exchange_has_the_alternate_exchange(broker: Broker) -> None:
    """The shared fixture declares the exchange as the service does (else PRECONDITION_FAILED
    would send every event test down the legacy path)."""
    channel = await broker.connection.channel()
    try:
        await channel.declare_exchange(
            broker.names.exchange,
            aio_pika.ExchangeType.TOPIC,
            durable=True,
            arguments={"alternate-exchange": broker.names.unrouted},
        )
    finally:
        await channel.close()
    assert isinstance(broker.tap, Tap)
