"""RabbitMQ: the raw aio-pika ceilings, and the relay and saga measurements. Every exchange and
queue the bench declares starts with `bench.` and is deleted afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.load import OpError, drive
from bench.stats import Result
from tillpoint.adapters.brokers.rabbitmq import declare_events_exchange, unrouted_name

CEILING_EXCHANGE = f"bench.{secrets.token_hex(4)}.ceiling"
CEILING_QUEUE = f"{CEILING_EXCHANGE}.q"
BODY = json.dumps(
    {
        "event_id": "evt_x",
        "order_id": "o",
        "amount": "10.00",
        "currency": "EUR",
        "padding": "x" * 200,
    }
).encode()


async def publish_consume(url: str, concurrency: int, seconds: float) -> tuple[Result, Result]:
    """Persistent messages published with confirms by `concurrency` tasks (one outstanding
    confirm each), then the same messages consumed with one manual ack each, prefetch =
    concurrency."""
    connection = await aio_pika.connect_robust(url)
    publish = Result("aio-pika publish", concurrency, unit="msg/s")
    consume = Result("aio-pika consume", concurrency, unit="msg/s")
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(
            CEILING_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(CEILING_QUEUE, durable=True)
        await queue.bind(exchange, routing_key="bench")
        await queue.purge()

        async def one(i: int) -> None:
            await exchange.publish(
                aio_pika.Message(
                    BODY, message_id=f"m{i}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key="bench",
            )

        await drive(one, concurrency=concurrency, seconds=seconds, result=publish)
        total = publish.ops
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=concurrency)
        queue_c = await consume_channel.get_queue(CEILING_QUEUE)
        done = asyncio.Event()
        received = 0
        first = last = 0.0

        async def handle(message: AbstractIncomingMessage) -> None:
            nonlocal received, first, last
            await message.ack()
            received += 1
            last = time.perf_counter()
            if received == 1:
                first = last
            if received >= total:
                done.set()

        started = time.perf_counter()
        tag = await queue_c.consume(handle)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=max(30.0, seconds * 4))
        await queue_c.cancel(tag)
        consume.ops = received
        consume.seconds = (last or time.perf_counter()) - started
        if received < total:
            consume.errors = total - received
            consume.note = f"only {received} of {total} consumed in time"
        await queue.purge()
    finally:
        await connection.close()
    return publish, consume


async def cleanup_ceiling(url: str) -> None:
    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel()
        await channel.queue_delete(CEILING_QUEUE)
        await channel.exchange_delete(CEILING_EXCHANGE)
    finally:
        await connection.close()


class Tap:
    """A `bench.` queue bound to the service's exchange that records what arrives, when."""

    def __init__(self, url: str, exchange: str, queue: str, bindings: list[str]) -> None:
        self.url, self.exchange_name, self.queue_name, self.bindings = (
            url,
            exchange,
            queue,
            bindings,
        )
        self.arrivals: list[tuple[float, dict[str, Any], str]] = []
        self.on_message: Callable[[dict[str, Any], str], None] | None = None
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag = ""

    async def __aenter__(self) -> Tap:
        self._connection = await aio_pika.connect_robust(self.url)
        channel = await self._connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=500)
        self.exchange = await declare_events_exchange(self._connection, channel, self.exchange_name)
        queue = await channel.declare_queue(self.queue_name, durable=False, auto_delete=False)
        for key in self.bindings:
            await queue.bind(self.exchange, routing_key=key)
        await queue.purge()
        self._queue = queue
        self._tag = await queue.consume(self._handle)
        return self

    async def _handle(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        try:
            body = json.loads(message.body)
        except ValueError:
            body = {}
        self.arrivals.append((time.perf_counter(), body, message.routing_key or ""))
        if self.on_message is not None:
            self.on_message(body, message.routing_key or "")

    async def publish(self, routing_key: str, body: dict[str, Any], message_id: str) -> None:
        assert self.exchange is not None
        await self.exchange.publish(
            aio_pika.Message(
                json.dumps(body).encode(),
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )

    async def __aexit__(self, *exc: object) -> None:
        assert self._connection is not None
        with contextlib.suppress(Exception):
            if self._queue is not None:
                await self._queue.cancel(self._tag)
            channel = await self._connection.channel()
            await channel.queue_delete(self.queue_name)
        await self._connection.close()


async def delete_exchange(url: str, name: str, queues: Sequence[str] = ()) -> None:
    """The events exchange, its alternate exchange and the queue that keeps unrouted messages,
    and the consumed `queues` (with their dead-letter queues) the bench's servers declared."""
    connection = await aio_pika.connect_robust(url)
    try:
        for queue in (unrouted_name(name), *queues, *(f"{q}.dlq" for q in queues)):
            channel = await connection.channel()  # a failed delete closes its channel
            with contextlib.suppress(Exception):
                await channel.queue_delete(queue)
        for exchange in (name, unrouted_name(name)):
            channel = await connection.channel()
            with contextlib.suppress(Exception):
                await channel.exchange_delete(exchange)
    finally:
        await connection.close()


def stock_confirmed(order_id: str, event_id: str) -> dict[str, Any]:
    """`OrderStockConfirmedEvent` as the ordering service (seed 004) sends it: camelCase."""
    return {
        "eventId": event_id,
        "orderId": order_id,
        "buyerId": "bench-buyer",
        "totalAmount": "10.00",
        "currency": "EUR",
        "paymentMethod": {
            "type": "card",
            "cardLastFour": "4242",
            "cardBrand": "visa",
            "cardHolderName": "Bench Buyer",
            "expirationMonth": 12,
            "expirationYear": 2030,
        },
        "occurredAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def saga_op(tap: Tap, run_id: str, timeout: float) -> Callable[[int], Awaitable[None]]:
    """Stock confirmed in, `payment.succeeded` for that order out, one saga in flight per task."""
    waiting: dict[str, asyncio.Future[str]] = {}

    def arrived(body: dict[str, Any], routing_key: str) -> None:
        order_id = str(body.get("order_id", ""))
        future = waiting.pop(order_id, None)
        if future is not None and not future.done():
            future.set_result(routing_key)

    tap.on_message = arrived

    async def op(i: int) -> None:
        order_id = f"saga-{run_id}-{i}"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        waiting[order_id] = future
        await tap.publish(
            "order.stock-confirmed",
            stock_confirmed(order_id, f"se-{run_id}-{i}"),
            f"se-{run_id}-{i}",
        )
        try:
            routing_key = await asyncio.wait_for(future, timeout)
        finally:
            waiting.pop(order_id, None)
        if routing_key != "payment.succeeded":
            raise OpError(f"saga for {order_id} ended with {routing_key}")

    return op
