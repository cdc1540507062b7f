"""RabbitMQ consumers: the plumbing behind the consumed order events (API.md "Consumed
events"); `entrypoints/consumers.py` says which messages are read from which queue, and
`entrypoints/order_messages.py` how a body is parsed.

For each subscription the consumer declares the durable queue with its binding on the events
exchange and its durable dead-letter queue `<queue>.dlq`. Delivery is at least once; a message
is acknowledged only after the handler returned (its effect committed). A message that the
handler rejects (`RejectedMessage`: unparseable, invalid, carrying card data) is dead-lettered
with the reason in the `x-reason` header, then acknowledged, and the consumer carries on. The
dead-letter copy is redacted: card fields read `[REDACTED]` and card numbers are masked in the
body and the headers, never copied verbatim. A handler failure is retried once by requeueing;
failing again it is dead-lettered too (a database or provider outage is always requeued, never
dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tillpoint.adapters.brokers.rabbitmq import AlternateExchangeMode, declare_events_exchange
from tillpoint.domain.cards import redact_card_data, redact_card_json, redact_card_text
from tillpoint.domain.errors import ProviderFailure
from tillpoint.service.consumers import Handled, OrderEvent, RejectedMessage, Subscription

log = structlog.get_logger("tillpoint.consumers")

REASON_HEADER = "x-reason"
REDACTED_HEADER = "x-redacted"  # set on a dead-letter copy whose card data was removed


def _transient(exc: BaseException) -> bool:
    """Trouble reaching the database or the provider, not a fault of the message: retried for
    as long as it lasts, never dead-lettered."""
    current: BaseException | None = exc
    for _ in range(5):
        if current is None:
            return False
        if isinstance(
            current, OSError | TimeoutError | OperationalError | InterfaceError | ProviderFailure
        ):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__
    return False


class RabbitConsumers:
    """Runs until `stopping` is set: (re)connects with back-off, consumes, drains on stop."""

    def __init__(
        self,
        url: str,
        exchange: str,
        subscriptions: Sequence[Subscription],
        handle: Callable[[OrderEvent], Awaitable[Handled]],
        *,
        alternate: AlternateExchangeMode = "argument",
        prefetch: int = 16,
        retry_delay: float = 1.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.alternate: AlternateExchangeMode = alternate
        self.subscriptions = list(subscriptions)
        self.handle = handle
        self.prefetch = prefetch
        self.retry_delay = retry_delay
        self.started = asyncio.Event()
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._consuming: list[tuple[AbstractQueue, str]] = []
        self._inflight: set[asyncio.Task[Any]] = set()

    async def run(self, stopping: asyncio.Event) -> None:
        failures = 0
        try:
            while not stopping.is_set():
                try:
                    await self.start()
                except Exception as exc:
                    failures += 1
                    log.warning("consumers.start_failed", error=str(exc), failures=failures)
                    await self._close_connection()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), min(2**failures, 30))
                    continue
                await stopping.wait()
        finally:
            await self.stop()

    async def start(self) -> None:
        connection = await aio_pika.connect_robust(
            self.url,
            timeout=5,
            reconnect_interval=2,
            client_properties={"connection_name": "tillpoint-consumers"},
        )
        self._connection = connection
        channel = await connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        exchange = await declare_events_exchange(
            connection,
            channel,
            self.exchange_name,
            alternate=self.alternate,
        )
        for sub in self.subscriptions:
            await channel.declare_queue(sub.dead_letter_queue, durable=True)
            queue = await channel.declare_queue(
                sub.queue,
                durable=True,
                arguments={
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": sub.dead_letter_queue,
                },
            )
            await queue.bind(exchange, routing_key=sub.binding)
            tag = await queue.consume(partial(self._on_message, sub))
            self._consuming.append((queue, tag))
        log.info(
            "consumers.started",
            exchange=self.exchange_name,
            queues=[s.queue for s in self.subscriptions],
            prefetch=self.prefetch,
        )
        self.started.set()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking messages, let the ones in flight finish (and ack), then disconnect."""
        consuming, self._consuming = self._consuming, []
        for queue, tag in consuming:
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=grace)
        await self._close_connection()
        self.started.clear()

    async def _close_connection(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        self._consuming = []
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _on_message(self, sub: Subscription, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        try:
            await self._handle(sub, message)
        finally:
            if task is not None:
                self._inflight.discard(task)

    async def _handle(self, sub: Subscription, message: AbstractIncomingMessage) -> None:
        try:
            event = sub.parse(message.body, sub.consumer)
            result = await self.handle(event)
        except RejectedMessage as exc:
            await self._dead_letter(sub, message, exc.reason)
            return
        except Exception as exc:
            if message.redelivered and not _transient(exc):
                log.exception("consumer.failed_twice", consumer=sub.consumer)
                await self._dead_letter(sub, message, f"handler_error: {type(exc).__name__}")
                return
            log.warning("consumer.retry", consumer=sub.consumer, error=repr(exc))
            await asyncio.sleep(self.retry_delay)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await message.ack()
        log.info(
            "consumer.handled",
            consumer=sub.consumer,
            message_id=event.message_id,
            order_id=result.order_id,
            payment_id=result.payment_id,
            outcome=result.outcome.value,
            status=result.status,
        )

    async def _dead_letter(
        self, sub: Subscription, message: AbstractIncomingMessage, reason: str
    ) -> None:
        """Copies a redacted version of the message (never card data) to `<queue>.dlq`."""
        body, body_redacted = redact_card_json(message.body)
        copied, headers_redacted = redact_card_data(dict(message.headers or {}))
        headers: dict[str, Any] = dict(copied)
        message_id = redact_card_text(message.message_id) if message.message_id else None
        reason = redact_card_text(reason)
        log.warning(
            "consumer.dead_lettered",
            consumer=sub.consumer,
            queue=sub.dead_letter_queue,
            message_id=message_id,
            reason=reason,
            redacted=body_redacted or headers_redacted,
        )
        headers.update(
            {
                REASON_HEADER: reason[:1000],
                "x-consumer": sub.consumer,
                "x-original-queue": sub.queue,
                "x-original-routing-key": redact_card_text(message.routing_key or ""),
            }
        )
        if body_redacted or headers_redacted:
            headers[REDACTED_HEADER] = "card-data"
        try:
            assert self._channel is not None
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=sub.dead_letter_queue,
                timeout=10,
            )
        except Exception:
            log.exception("consumer.dead_letter_failed", consumer=sub.consumer)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
            return
        await message.ack()
