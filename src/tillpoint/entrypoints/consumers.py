"""RabbitMQ consumers for the order events of API.md "Consumed events".

The service declares what it consumes: the topic exchange, each durable queue with its binding
and its durable dead-letter queue `<queue>.dlq`. Delivery is at least once; a message is
acknowledged only after the database committed its effect. A message that cannot be parsed or
validated is copied to the dead-letter queue with the reason in the `x-reason` header, then
acknowledged, and the consumer carries on. A handler failure is retried once by requeueing;
failing again it is dead-lettered too (a database outage is always requeued, never dead-lettered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Annotated, Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from tillpoint.adapters.brokers.rabbitmq import declare_events_exchange
from tillpoint.adapters.db.inbox import SqlEventsUnitOfWorkFactory
from tillpoint.bootstrap import Container
from tillpoint.domain.errors import DomainError, ProviderFailure
from tillpoint.domain.money import Money
from tillpoint.domain.order import check_order_id
from tillpoint.domain.payment import PaymentMethod, carries_raw_card_data
from tillpoint.service.consumers import KeyedLocks, OrderEvent, RejectedMessage, handle_order_event

log = structlog.get_logger("tillpoint.consumers")

REASON_HEADER = "x-reason"
CARD_TYPES = frozenset({"CREDIT_CARD", "DEBIT_CARD", "CARD"})


# -- message schemas -------------------------------------------------------------------------


def _decimal_text(value: object) -> str:
    """A JSON number (read as Decimal, never float) or a decimal string, as text."""
    if isinstance(value, bool | float):
        raise ValueError("amount must be a decimal number or string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("amount must be finite")
        return format(value, "f")
    if isinstance(value, str):
        return value.strip()
    raise ValueError("amount must be a decimal number or string")


def _order_id_text(value: object) -> str:
    """`orderId` may be a JSON number or a string; it is kept as a string."""
    if isinstance(value, bool):
        raise ValueError("order id must be a number or a string")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError("order id must be a number or a string")


def _valid_order_id(value: str) -> str:
    try:
        return check_order_id(value)
    except DomainError as exc:
        raise ValueError(exc.detail) from exc


DecimalText = Annotated[str, BeforeValidator(_decimal_text)]
OrderId = Annotated[str, BeforeValidator(_order_id_text), AfterValidator(_valid_order_id)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
LastFour = Annotated[str, Field(pattern=r"^[0-9]{4}$")]


class _NoRawCard(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_card_number(cls, data: Any) -> Any:
        if isinstance(data, dict) and carries_raw_card_data(data):
            raise ValueError("raw card numbers and CVCs are never accepted")
        return data


class CardInfo(_NoRawCard):
    """The ordering service's `PaymentMethodInfo` (last four digits only)."""

    type: str = Field("CREDIT_CARD", max_length=32)
    cardLastFour: LastFour | None = None
    cardBrand: str | None = Field(None, max_length=32)
    cardHolderName: str | None = Field(None, max_length=200)
    expirationMonth: int | None = Field(None, ge=1, le=12)
    expirationYear: int | None = Field(None, ge=2000, le=2999)

    def method(self) -> PaymentMethod:
        return PaymentMethod(
            type="card" if self.type.upper() in CARD_TYPES else self.type.lower(),
            brand=self.cardBrand.lower() if self.cardBrand else None,
            last4=self.cardLastFour,
            exp_month=self.expirationMonth,
            exp_year=self.expirationYear,
            holder_name=self.cardHolderName,
        )


class StockConfirmedMessage(BaseModel):
    """`OrderStockConfirmedEvent`, camelCase as the ordering service sends it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    eventId: str = Field(min_length=1, max_length=255)
    orderId: OrderId
    buyerId: str = Field(min_length=1, max_length=128)
    totalAmount: DecimalText
    currency: Currency
    paymentMethod: CardInfo
    occurredAt: str | None = None


class MethodInfo(_NoRawCard):
    type: str = Field("card", max_length=32)
    token: str | None = Field(None, max_length=255)
    brand: str | None = Field(None, max_length=32)
    last4: LastFour | None = None
    exp_month: int | None = Field(None, ge=1, le=12)
    exp_year: int | None = Field(None, ge=2000, le=2999)
    holder_name: str | None = Field(None, max_length=200)

    def method(self) -> PaymentMethod:
        return PaymentMethod(**self.model_dump())


class OrderCreatedMessage(BaseModel):
    """`order.created.v1`, snake_case."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(min_length=1, max_length=255)
    order_id: OrderId
    buyer_id: str = Field(min_length=1, max_length=128)
    amount: DecimalText
    currency: Currency
    autopay: StrictBool
    payment_method: MethodInfo | None = None


def _load(body: bytes) -> Any:
    try:
        return json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedMessage(f"invalid_json: {exc}") from exc


def _explain(exc: ValidationError) -> str:
    parts = [
        f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()[:5]
    ]
    return "validation_error: " + "; ".join(parts)


def _money(amount: str, currency: str) -> Money:
    try:
        return Money.parse(amount, currency)
    except DomainError as exc:
        raise RejectedMessage(f"{exc.code}: {exc.detail}") from exc


def parse_stock_confirmed(body: bytes, consumer: str) -> OrderEvent:
    try:
        msg = StockConfirmedMessage.model_validate(_load(body))
    except ValidationError as exc:
        raise RejectedMessage(_explain(exc)) from exc
    return OrderEvent(
        consumer=consumer,
        message_id=msg.eventId,
        order_id=msg.orderId,
        buyer_id=msg.buyerId,
        amount=_money(msg.totalAmount, msg.currency),
        pay=True,
        payment_method=msg.paymentMethod.method(),
    )


def parse_order_created(body: bytes, consumer: str) -> OrderEvent:
    try:
        msg = OrderCreatedMessage.model_validate(_load(body))
    except ValidationError as exc:
        raise RejectedMessage(_explain(exc)) from exc
    return OrderEvent(
        consumer=consumer,
        message_id=msg.event_id,
        order_id=msg.order_id,
        buyer_id=msg.buyer_id,
        amount=_money(msg.amount, msg.currency),
        pay=msg.autopay,
        payment_method=msg.payment_method.method() if msg.payment_method else PaymentMethod(),
    )


# -- wiring ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscription:
    consumer: str  # the inbox's consumer name
    queue: str
    binding: str
    parse: Callable[[bytes, str], OrderEvent]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


def subscriptions(container: Container) -> list[Subscription]:
    settings = container.settings
    return [
        Subscription(
            "stock-confirmed",
            settings.stock_confirmed_queue,
            "order.stock-confirmed",
            parse_stock_confirmed,
        ),
        Subscription(
            "order-created", settings.order_created_queue, "order.created.v1", parse_order_created
        ),
    ]


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


class EventConsumers:
    """Runs until `stopping` is set: (re)connects with back-off, consumes, drains on stop."""

    def __init__(
        self,
        container: Container,
        *,
        subscriptions_: list[Subscription] | None = None,
        prefetch: int | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self.container = container
        self.url = container.settings.broker_url
        self.exchange_name = container.settings.events_exchange
        self.subscriptions = subscriptions_ or subscriptions(container)
        self.prefetch = prefetch or container.settings.consumer_prefetch
        self.retry_delay = retry_delay
        self.events = SqlEventsUnitOfWorkFactory(
            container.engine, dialect=container.settings.event_dialect
        )
        self.locks = KeyedLocks()
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
            alternate=self.container.settings.events_alternate_exchange,
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
            result = await handle_order_event(
                event, deps=self.container.deps, events=self.events, locks=self.locks
            )
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
        log.warning(
            "consumer.dead_lettered",
            consumer=sub.consumer,
            queue=sub.dead_letter_queue,
            message_id=message.message_id,
            reason=reason,
        )
        headers = dict(message.headers or {})
        headers.update(
            {
                REASON_HEADER: reason[:1000],
                "x-consumer": sub.consumer,
                "x-original-queue": sub.queue,
                "x-original-routing-key": message.routing_key or "",
            }
        )
        try:
            assert self._channel is not None
            await self._channel.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    content_type=message.content_type,
                    message_id=message.message_id,
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
