"""Fixtures for the event tests: a real RabbitMQ with names unique to this run (deleted in
teardown), a tap queue that records everything published, and a PostgreSQL container."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.conftest import need_service, postgres_url, settings_for
from tests.events.contract import PUBLISHED, violations
from tests.security.scan import note
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tillpoint.adapters.brokers.rabbitmq import declare_events_exchange, unrouted_name
from tillpoint.adapters.db import migrate
from tillpoint.bootstrap import Container, build
from tillpoint.service.outbox import OutboxRelay

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass(frozen=True)
class Names:
    """Exchange and queue names that no other test run (or person) uses."""

    suffix: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def exchange(self) -> str:
        return f"payments.events.test.{self.suffix}"

    @property
    def stock_confirmed(self) -> str:
        return f"payment.stock-confirmed.test.{self.suffix}"

    @property
    def order_created(self) -> str:
        return f"payment.order-created.test.{self.suffix}"

    @property
    def tap(self) -> str:
        return f"tap.test.{self.suffix}"

    @property
    def unrouted(self) -> str:
        """The events exchange's alternate exchange, and the queue bound to it."""
        return unrouted_name(self.exchange)

    @property
    def queues(self) -> list[str]:
        consumed = [self.stock_confirmed, self.order_created]
        return [self.tap, self.unrouted, *consumed, *(f"{q}.dlq" for q in consumed)]

    @property
    def exchanges(self) -> list[str]:
        return [self.exchange, self.unrouted]


@dataclass
class Received:
    routing_key: str
    body: dict[str, Any]
    message_id: str | None
    content_type: str | None
    headers: dict[str, Any]
    delivery_mode: int | None


class Tap:
    """Every message published to the exchange, in arrival order (a queue bound with `#`).

    Each message the service publishes is checked against its JSON Schema (docs/schemas);
    the `broker` fixture fails the test on any violation. Messages the tests send to the
    consumers are left alone here: some are invalid on purpose (tests/events/test_contract.py
    checks the consumed schemas)."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.violations: list[str] = []

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        received = Received(
            routing_key=message.routing_key or "",
            body=json.loads(message.body),
            message_id=message.message_id,
            content_type=message.content_type,
            headers=dict(message.headers or {}),
            delivery_mode=int(message.delivery_mode) if message.delivery_mode else None,
        )
        if received.routing_key in PUBLISHED:
            self.violations.extend(violations(received.routing_key, received.body))
        self.messages.append(received)
        await message.ack()

    def where(self, **fields: Any) -> list[Received]:
        return [m for m in self.messages if all(m.body.get(k) == v for k, v in fields.items())]

    async def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 20.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.messages):
                return self.messages
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"timed out; received {[(m.routing_key, m.body) for m in self.messages][-10:]}"
        )


@dataclass
class Broker:
    names: Names
    connection: AbstractRobustConnection
    tap: Tap

    async def send(self, routing_key: str, body: bytes | dict[str, Any]) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        channel = await self.connection.channel()
        try:
            exchange = await channel.get_exchange(self.names.exchange)
            await exchange.publish(
                aio_pika.Message(raw, content_type="application/json"), routing_key=routing_key
            )
        finally:
            await channel.close()

    async def get(self, queue: str, timeout: float = 20.0) -> AbstractIncomingMessage:
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message = await declared.get(no_ack=True, fail=False)
                if message is not None:
                    return message
                await asyncio.sleep(0.1)
        finally:
            await channel.close()
        raise AssertionError(f"nothing arrived in {queue}")


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    need_service("RabbitMQ", "127.0.0.1", 5672)
    names = Names()
    connection = await aio_pika.connect_robust(AMQP_URL)
    tap = Tap()
    channel = await connection.channel()
    try:
        exchange = await declare_events_exchange(connection, channel, names.exchange)
        queue = await channel.declare_queue(names.tap, durable=True)
        await queue.bind(exchange, routing_key="#")
        tag = await queue.consume(tap.on_message)
        yield Broker(names, connection, tap)
        await queue.cancel(tag)
        assert not tap.violations, "messages break their schema:\n" + "\n".join(tap.violations)
    finally:
        # What the service published (the tests' own inbound messages, some carrying card data
        # on purpose, pass the tap too) and what it dead-lettered is scanned for card data.
        for received in tap.messages:
            if received.routing_key.startswith("payment."):
                body = json.dumps(received.body)
                note(f"published {received.routing_key}", f"{body} {received.headers}")
        for name in names.queues:
            if name.endswith(".dlq"):
                await scan_left_in(connection, name)
        cleanup = await connection.channel()
        for name in names.queues:
            with contextlib.suppress(Exception):
                await cleanup.queue_delete(name)
        for name in names.exchanges:
            with contextlib.suppress(Exception):
                await cleanup.exchange_delete(name)
        await connection.close()


async def scan_left_in(connection: AbstractRobustConnection, name: str) -> None:
    """What is still in a test queue (a dead-letter queue above all) is scanned for card data
    before the queue is deleted. A channel of its own: a missing queue closes it."""
    with contextlib.suppress(Exception):
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            while (message := await queue.get(no_ack=True, fail=False)) is not None:
                text = message.body.decode("utf-8", "replace")
                note(f"queue {name}", f"{text} {dict(message.headers or {})}")
        finally:
            await channel.close()


@pytest.fixture(scope="session")
async def pg_url() -> str:
    """PostgreSQL at the newest migration (never reset: other tests may share it)."""
    url = postgres_url()
    await asyncio.to_thread(migrate.upgrade, url)
    return url


@pytest.fixture
async def rabbit_container(pg_url: str, broker: Broker) -> AsyncIterator[Container]:
    names = broker.names
    current = build(
        settings_for(
            pg_url,
            broker_url=AMQP_URL,
            events_exchange=names.exchange,
            stock_confirmed_queue=names.stock_confirmed,
            order_created_queue=names.order_created,
        ),
        clock=MovableClock(),
    )
    try:
        yield current
    finally:
        await current.aclose()


@pytest.fixture
async def rabbit_client(rabbit_container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(rabbit_container) as http:
        yield http


class ConfirmTracker:
    """Follows one AMQP 0-9-1 connection through a proxy and knows which of the client's
    publishes the broker's confirms (`basic.ack`/`basic.nack`) have *reached the client*.

    Feed it the bytes as they are forwarded: `client` the ones sent to the broker, `broker` the
    ones sent to the client. Publisher confirms number the publishes of a channel in confirm
    mode 1, 2, 3, …; an ack settles one tag, or every tag up to it with `multiple`."""

    PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

    @dataclass
    class _Channel:
        confirming: bool = False
        next_tag: int = 1
        acked_up_to: int = 0
        acked: set[int] = field(default_factory=set)
        # tag -> [body size, body so far]; complete publishes move to `published`
        content: list[Any] | None = None
        published: dict[int, bytes] = field(default_factory=dict)

    def __init__(self) -> None:
        self._from_client = b""
        self._from_broker = b""
        self._header_seen = False
        self._channels: dict[int, ConfirmTracker._Channel] = {}

    def client(self, data: bytes) -> None:
        self._from_client += data
        if not self._header_seen:
            if len(self._from_client) < len(self.PROTOCOL_HEADER):
                return
            self._from_client = self._from_client[len(self.PROTOCOL_HEADER) :]
            self._header_seen = True
        self._from_client = self._frames(self._from_client, self._client_frame)

    def broker(self, data: bytes) -> None:
        self._from_broker = self._frames(self._from_broker + data, self._broker_frame)

    def unconfirmed(self) -> list[bytes]:
        """Bodies the client published whose confirm it has not received yet."""
        return [
            body
            for channel in self._channels.values()
            for tag, body in channel.published.items()
            if tag > channel.acked_up_to and tag not in channel.acked
        ]

    @staticmethod
    def _frames(buffer: bytes, handle: Callable[[int, int, bytes], None]) -> bytes:
        while len(buffer) >= 7:
            kind, channel, size = struct.unpack(">BHI", buffer[:7])
            if len(buffer) < 7 + size + 1:
                break
            handle(kind, channel, buffer[7 : 7 + size])
            buffer = buffer[7 + size + 1 :]
        return buffer

    def _client_frame(self, kind: int, number: int, payload: bytes) -> None:
        if kind == 1:  # method
            method = struct.unpack(">HH", payload[:4])
            if method == (20, 10):  # channel.open: a fresh numbering
                self._channels[number] = self._Channel()
            channel = self._channels.setdefault(number, self._Channel())
            if method == (85, 10):  # confirm.select
                channel.confirming = True
            elif method == (60, 40) and channel.confirming:  # basic.publish
                channel.content = [channel.next_tag, None, b""]
                channel.next_tag += 1
        elif kind in (2, 3) and (held := self._channels.get(number)) and held.content:
            content = held.content
            if kind == 2:  # content header: class, weight, body size
                content[1] = struct.unpack(">Q", payload[4:12])[0]
            else:
                content[2] += payload
            tag, size, body = content
            if size is not None and len(body) >= size:
                held.published[tag] = body
                held.content = None

    def _broker_frame(self, kind: int, number: int, payload: bytes) -> None:
        channel = self._channels.get(number)
        if kind != 1 or channel is None:
            return
        if struct.unpack(">HH", payload[:4]) in ((60, 80), (60, 120)):  # basic.ack / nack
            tag, bits = struct.unpack(">QB", payload[4:13])
            if bits & 1:
                channel.acked_up_to = max(channel.acked_up_to, tag)
            else:
                channel.acked.add(tag)


class TcpProxy:
    """A loopback TCP relay to RabbitMQ that a test can cut and restore, as a network would;
    with `delay`, everything the broker sends is held back that long (a slow link).

    The first `start()` listens on a port the kernel picks (`port` is 0 until then); a restart
    after `cut()` listens on that same port again, as a network link coming back would.

    `unconfirmed()` lists the bodies published through the proxy whose publisher confirm has
    not been passed on to the publisher yet: a publisher waiting for one of them cannot have
    finished its batch. It is exact for as long as the caller does not yield to the event loop
    (the proxy runs in it)."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5672), delay: float = 0.0) -> None:
        self.port = 0
        self.target = target
        self.delay = delay
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._trackers: list[ConfirmTracker] = []

    def unconfirmed(self) -> list[dict[str, Any]]:
        return [json.loads(body) for t in self._trackers for body in t.unconfirmed()]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            self._tasks.discard(task)
            return
        self._writers.add(up_writer)
        tracker = ConfirmTracker()
        self._trackers.append(tracker)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, tracker.client),
                self._pipe(up_reader, writer, tracker.broker, self.delay),
            )
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
                self._writers.discard(w)
            self._tasks.discard(task)

    @staticmethod
    async def _pipe(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        observe: Callable[[bytes], None],
        delay: float = 0.0,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                observe(data)  # what is forwarded, in the same step as forwarding it
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            pass
        finally:
            writer.close()


async def drain(relay: OutboxRelay, *, within: float = 10.0) -> int:
    """Relay until nothing is left; returns the rows published."""
    total = 0
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await relay.relay_batch()
        total += result.published
        if not result.published and not result.failed and not result.held_back:
            return total
        if result.failed:
            break
        if not result.published:
            await asyncio.sleep(0.05)  # another relay holds the head of some payment
    return total
