"""The order-event consumers against the real RabbitMQ, with the relay publishing the outcome."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import SERVICE_KEY, headers
from tests.events.conftest import Broker, Received
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container, outbox_relay
from tillpoint.entrypoints.consumers import REASON_HEADER, EventConsumers
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
    return secrets.randbelow(10**12) + 10**6


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
