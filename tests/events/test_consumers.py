"""The order-event consumers against the real RabbitMQ, with the relay publishing the outcome."""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aio_pika
import httpx
import pytest
import sqlalchemy as sa
from aio_pika.abc import AbstractIncomingMessage

from tests.conftest import SERVICE_KEY, headers
from tests.events.conftest import Broker, Received
from tests.security.scan import card_data, numeric_id
from tillpoint.adapters.brokers.consumers import REASON_HEADER, REDACTED_HEADER
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container, outbox_relay
from tillpoint.entrypoints.consumers import EventConsumers
from tillpoint.entrypoints.worker import Loop, Worker

pytestmark = [pytest.mark.rabbitmq, pytest.mark.postgres]

SUCCEEDED_FIELDS = {
    "event_id",
    "order_id",
    "payment_id",
    "transaction_id",
    "amount",
    "currency",
    "sequence",
    "processed_at",
}
FAILED_FIELDS = {
    "event_id",
    "order_id",
    "payment_id",
    "failure_reason",
    "failure_code",
    "sequence",
    "occurred_at",
}


@pytest.fixture
async def worker(rabbit_container: Container) -> AsyncIterator[EventConsumers]:
    """The relay and the consumers, run by the worker as `tillpoint worker` would."""
    relay = outbox_relay(rabbit_container)
    assert relay is not None
    consumers = EventConsumers(rabbit_container, retry_delay=0.2)
    running = Worker(
        rabbit_container, loops=[Loop("outbox.relay", relay.step, 0.05)], services=[consumers.run]
    )
    task = asyncio.create_task(running.run())
    await asyncio.wait_for(consumers.started.wait(), timeout=20)
    try:
        yield consumers
    finally:
        running.stop()
        await asyncio.wait_for(task, timeout=30)


def stock_confirmed(order_id: int | str, last4: str, **extra: Any) -> dict[str, Any]:
    return {
        "eventId": f"evt-{secrets.token_hex(6)}",
        "orderId": order_id,
        "buyerId": "buyer-7",
        "totalAmount": Decimal("49.99"),
        "currency": "EUR",
        "paymentMethod": {
            "type": "CREDIT_CARD",
            "cardLastFour": last4,
            "cardBrand": "VISA",
            "cardHolderName": "Ada Lovelace",
            "expirationMonth": 12,
            "expirationYear": 2030,
        },
        "occurredAt": "2026-11-23T10:30:00Z",
        **extra,
    }


def encode(body: dict[str, Any]) -> bytes:
    """JSON with `totalAmount` as a JSON number, the way the ordering service writes it."""
    return json.dumps(body, default=lambda d: float(d) if isinstance(d, Decimal) else d).encode()


def order_number() -> int:
    return numeric_id(10**6, 10**12)


def outcomes(messages: list[Received], order_id: str) -> list[Received]:
    return [
        m
        for m in messages
        if m.body.get("order_id") == order_id
        and m.routing_key in ("payment.succeeded", "payment.failed")
    ]


async def charges(container: Container, payment_id: str) -> int:
    async with container.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(t.mock_gateway_ledger)
            .where(t.mock_gateway_ledger.c.payment_id == payment_id)
        )
    return int(count or 0)


class TestStockConfirmed:
    async def test_card_4242_publishes_payment_succeeded(
        self,
        worker: EventConsumers,
        broker: Broker,
        rabbit_container: Container,
        rabbit_client: httpx.AsyncClient,
    ) -> None:
        number = order_number()  # a JSON number: kept as a string
        order_id = str(number)
        await broker.send("order.stock-confirmed", encode(stock_confirmed(number, "4242")))

        messages = await broker.tap.wait_for(lambda m: bool(outcomes(m, order_id)))

        [succeeded] = outcomes(messages, order_id)
        assert succeeded.routing_key == "payment.succeeded"
        assert set(succeeded.body) == SUCCEEDED_FIELDS
        assert succeeded.body["amount"] == "49.99"
        assert succeeded.body["currency"] == "EUR"
        assert succeeded.message_id == succeeded.body["event_id"]
        assert succeeded.content_type == "application/json"
        assert succeeded.delivery_mode == 2  # persistent
        assert succeeded.headers == {
            "type": "payment.succeeded.v1",
            "sequence": succeeded.body["sequence"],
        }
        payment = await rabbit_client.get(
            f"/api/v1/payments/{succeeded.body['payment_id']}", headers=headers(SERVICE_KEY)
        )
        assert payment.json()["status"] == "CAPTURED"
        assert payment.json()["payment_method"]["last4"] == "4242"
        assert payment.json()["payment_method"]["brand"] == "visa"
        order = await rabbit_client.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
        assert order.json()["buyer_id"] == "buyer-7"
        assert order.json()["status"] == "PAID"

    async def test_card_0000_publishes_payment_failed_card_declined(
        self, worker: EventConsumers, broker: Broker
    ) -> None:
        order_id = f"ord-{secrets.token_hex(4)}"
        await broker.send("order.stock-confirmed", encode(stock_confirmed(order_id, "0000")))

        messages = await broker.tap.wait_for(lambda m: bool(outcomes(m, order_id)))

        [failed] = outcomes(messages, order_id)
        assert failed.routing_key == "payment.failed"
        assert set(failed.body) == FAILED_FIELDS
        assert failed.body["failure_code"] == "CARD_DECLINED"
        assert failed.headers["type"] == "payment.failed.v1"

    async def test_the_same_event_three_times_charges_once_and_republishes(
        self, worker: EventConsumers, broker: Broker, rabbit_container: Container
    ) -> None:
        order_id = str(order_number())
        event = encode(stock_confirmed(order_id, "4242"))
        for _ in range(3):
            await broker.send("order.stock-confirmed", event)
        # the same order under another event id: still no second charge
        await broker.send("order.stock-confirmed", encode(stock_confirmed(order_id, "4242")))

        messages = await broker.tap.wait_for(lambda m: len(outcomes(m, order_id)) >= 4)
        await asyncio.sleep(0.5)  # nothing more should follow

        published = outcomes(broker.tap.messages, order_id)
        assert len(published) == 4
        assert {m.routing_key for m in published} == {"payment.succeeded"}
        assert len({m.body["payment_id"] for m in published}) == 1
        assert len({m.body["event_id"] for m in published}) == 4
        sequences = [m.body["sequence"] for m in published]
        assert sequences == sorted(sequences)
        assert len({m.body["transaction_id"] for m in published}) == 1
        payment_id = published[0].body["payment_id"]
        assert await charges(rabbit_container, payment_id) == 1
        async with rabbit_container.engine.connect() as conn:
            payments = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(t.payments)
                .where(t.payments.c.order_id == order_id)
            )
        assert payments == 1
        assert len(messages) >= 4

    async def test_malformed_messages_are_dead_lettered_and_the_next_is_processed(
        self, worker: EventConsumers, broker: Broker
    ) -> None:
        await broker.send("order.stock-confirmed", b"{not json")
        invalid = stock_confirmed(str(order_number()), "4242")
        del invalid["orderId"]
        await broker.send("order.stock-confirmed", encode(invalid))
        card = stock_confirmed(str(order_number()), "4242")
        card["paymentMethod"]["cardNumber"] = "4242424242424242"
        await broker.send("order.stock-confirmed", encode(card))
        good_id = str(order_number())
        await broker.send("order.stock-confirmed", encode(stock_confirmed(good_id, "4242")))

        dlq = f"{broker.names.stock_confirmed}.dlq"
        reasons = [str((await broker.get(dlq)).headers[REASON_HEADER]) for _ in range(3)]

        assert reasons[0].startswith("invalid_json")
        assert reasons[1].startswith("validation_error")
        assert "orderId" in reasons[1]
        assert "raw card numbers" in reasons[2]
        await broker.tap.wait_for(lambda m: bool(outcomes(m, good_id)))


async def send_with_headers(
    broker: Broker, routing_key: str, body: bytes, message_headers: dict[str, Any]
) -> None:
    channel = await broker.connection.channel()
    try:
        exchange = await channel.get_exchange(broker.names.exchange)
        await exchange.publish(
            aio_pika.Message(body, content_type="application/json", headers=message_headers),
            routing_key=routing_key,
        )
    finally:
        await channel.close()


async def drain(broker: Broker, queue: str) -> list[AbstractIncomingMessage]:
    """Everything in `queue` now (taken off it)."""
    channel = await broker.connection.channel()
    taken: list[AbstractIncomingMessage] = []
    try:
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
    finally:
        await channel.close()
    return taken


def text_of(message: AbstractIncomingMessage) -> str:
    return message.body.decode("utf-8", "replace") + " " + repr(message.headers)


CARD_MESSAGE_HEADERS = {"x-note": "paid with 5555-5555-5555-4444", "cvc": "737"}


def word(size: int = 12) -> str:
    """Letters only: ids of the card tests never look like a card number to the scanner (a
    numeric order id passes Luhn one time in ten)."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(size))


def letters_only(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "eventId": f"evt-{word()}"}


class TestCardData:
    """A message with card data is refused, and what it leaves in RabbitMQ is redacted."""

    async def test_the_dead_letter_copy_is_redacted_and_says_why(
        self, worker: EventConsumers, broker: Broker
    ) -> None:
        card = letters_only(stock_confirmed(f"ord-{word()}", "4242"))
        card["paymentMethod"] |= {
            "cardNumber": "4111111111111111",
            "cvv": "123",
            "cardHolderName": "Ada 4242 4242 4242 4242",
        }
        await send_with_headers(broker, "order.stock-confirmed", encode(card), CARD_MESSAGE_HEADERS)

        copy = await broker.get(f"{broker.names.stock_confirmed}.dlq")

        assert card_data(text_of(copy)) == []
        assert str(copy.headers[REASON_HEADER]).startswith("raw_card_data_rejected")
        assert copy.headers[REDACTED_HEADER] == "card-data"
        body = json.loads(copy.body)
        method = body["paymentMethod"]
        assert method["cardNumber"] == method["cvv"] == "[REDACTED]"
        assert method["cardHolderName"] == "Ada [REDACTED]"
        assert method["cardLastFour"] == "4242"
        assert body["eventId"] == card["eventId"]  # the rest is kept, to find the order
        assert copy.headers["cvc"] == "[REDACTED]"

    @pytest.mark.parametrize(
        "method",
        [
            {"type": "card", "token": "tok_4242424242424242"},
            {"type": "card", "token": "pm_card_visa", "brand": "378282246310005"},
            {"type": "card", "token": "pm_card_visa", "holder_name": "5555-5555-5555-4444"},
        ],
    )
    async def test_a_card_number_in_any_field_of_order_created_is_refused(
        self,
        worker: EventConsumers,
        broker: Broker,
        rabbit_client: httpx.AsyncClient,
        method: dict[str, Any],
    ) -> None:
        order_id = f"ord-{word()}"
        await broker.send(
            "order.created.v1",
            {
                "event_id": f"evt-{word()}",
                "order_id": order_id,
                "buyer_id": "buyer-9",
                "amount": "12.50",
                "currency": "EUR",
                "autopay": True,
                "payment_method": method,
            },
        )

        copy = await broker.get(f"{broker.names.order_created}.dlq")

        assert str(copy.headers[REASON_HEADER]).startswith("raw_card_data_rejected")
        assert card_data(text_of(copy)) == []
        order = await rabbit_client.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
        assert order.status_code == 404  # refused before anything was recorded

    async def test_no_queue_holds_a_card_number_after_card_carrying_messages(
        self, worker: EventConsumers, broker: Broker
    ) -> None:
        """The event-side scan: every dead-letter queue, and everything the service published
        (the tap), hold no card number and no CVC."""
        cards = ["4111111111111111", "4242 4242 4242 4242", "5555-5555-5555-4444", 378282246310005]
        for number in cards:
            message = letters_only(stock_confirmed(f"ord-{word()}", "4242"))
            message["buyerId"] = f"buyer {number}"
            await send_with_headers(
                broker, "order.stock-confirmed", encode(message), CARD_MESSAGE_HEADERS
            )
            message = letters_only(stock_confirmed(f"ord-{word()}", "4242"))
            message["paymentMethod"]["cvc"] = "737"
            message["totalAmount"] = number
            await broker.send("order.stock-confirmed", encode(message))
            await broker.send(
                "order.created.v1",
                {
                    "event_id": f"evt-{word()}",
                    "order_id": f"ord-{word()}",
                    "buyer_id": "buyer-9",
                    "amount": "12.50",
                    "currency": "EUR",
                    "autopay": True,
                    "payment_method": {"type": "card", "token": f"tok_{number}", "cvv": "123"},
                },
            )
        good_id = f"ord-{word()}"
        good = letters_only(stock_confirmed(good_id, "4242"))
        await broker.send("order.stock-confirmed", encode(good))
        await broker.tap.wait_for(lambda m: bool(outcomes(m, good_id)))

        dead: list[AbstractIncomingMessage] = []
        deadline = time.monotonic() + 20
        while len(dead) < 3 * len(cards) and time.monotonic() < deadline:
            for queue in (broker.names.stock_confirmed, broker.names.order_created):
                dead += await drain(broker, f"{queue}.dlq")
            await asyncio.sleep(0.1)
        assert len(dead) == 3 * len(cards)
        assert [found for m in dead if (found := card_data(text_of(m)))] == []
        published = [m for m in broker.tap.messages if m.routing_key.startswith("payment.")]
        assert published
        assert [
            found for m in published if (found := card_data(json.dumps(m.body) + repr(m.headers)))
        ] == []


class TestOrderCreated:
    async def test_records_the_order_and_pays_only_with_autopay(
        self, worker: EventConsumers, broker: Broker, rabbit_client: httpx.AsyncClient
    ) -> None:
        manual, auto = f"ord-{secrets.token_hex(4)}", f"ord-{secrets.token_hex(4)}"
        for order_id, autopay in ((manual, False), (auto, True)):
            await broker.send(
                "order.created.v1",
                {
                    "event_id": f"evt-{secrets.token_hex(6)}",
                    "order_id": order_id,
                    "buyer_id": "buyer-9",
                    "amount": "12.50",
                    "currency": "EUR",
                    "autopay": autopay,
                    "payment_method": {"type": "card", "token": "pm_card_visa"},
                },
            )

        await broker.tap.wait_for(lambda m: bool(outcomes(m, auto)))

        service = headers(SERVICE_KEY)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            recorded = await rabbit_client.get(f"/api/v1/orders/{manual}", headers=service)
            if recorded.status_code != 404:
                break
            await asyncio.sleep(0.1)
        assert recorded.status_code == 200
        assert recorded.json()["status"] == "PAYMENT_PENDING"
        unpaid = await rabbit_client.get(f"/api/v1/orders/{manual}/payments", headers=service)
        assert unpaid.json()["data"] == []
        paid = await rabbit_client.get(f"/api/v1/orders/{auto}", headers=service)
        assert paid.json()["status"] == "PAID"
