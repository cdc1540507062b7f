"""The consumed order events of API.md "Consumed events": their message schemas, how a body
becomes an `OrderEvent`, which queue and binding each is read from, and the runner the worker
starts (`EventConsumers`).

A message that cannot be parsed or validated, or that carries card data (a card number
anywhere outside its ids, or a card-number/CVC field), is refused with `RejectedMessage` and
dead-lettered. The RabbitMQ plumbing (connection, queue declaration, acknowledgement, retries,
redacted dead letters) is `adapters/brokers/consumers.py`, built by `bootstrap.event_consumers`.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
)

from tillpoint.bootstrap import Container, event_consumers
from tillpoint.config import Settings
from tillpoint.domain.cards import CARD_BRANDS, card_brand, carries_raw_card_data
from tillpoint.domain.errors import DomainError
from tillpoint.domain.money import Money
from tillpoint.domain.order import check_order_id
from tillpoint.domain.payment import PaymentMethod
from tillpoint.service.consumers import RAW_CARD_REASON, OrderEvent, RejectedMessage, Subscription

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


def _brand(value: str) -> str:
    brand = card_brand(value)
    if brand is None:
        raise ValueError(f"card brand must be one of: {', '.join(sorted(CARD_BRANDS))}")
    return brand


Brand = Annotated[str, Field(max_length=32), AfterValidator(_brand)]


class CardInfo(BaseModel):
    """The ordering service's `PaymentMethodInfo` (last four digits only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field("CREDIT_CARD", max_length=32)
    cardLastFour: LastFour | None = None
    cardBrand: Brand | None = None
    cardHolderName: str | None = Field(None, max_length=200)
    expirationMonth: int | None = Field(None, ge=1, le=12)
    expirationYear: int | None = Field(None, ge=2000, le=2100)

    def method(self) -> PaymentMethod:
        return PaymentMethod(
            type="card" if self.type.upper() in CARD_TYPES else self.type.lower(),
            brand=self.cardBrand,
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


class MethodInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str = Field("card", max_length=32)
    token: str | None = Field(None, max_length=255)
    brand: Brand | None = None
    last4: LastFour | None = None
    exp_month: int | None = Field(None, ge=1, le=12)
    exp_year: int | None = Field(None, ge=2000, le=2100)
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
    """The parsed body, refused when it carries card data anywhere outside its identifiers."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RejectedMessage(f"invalid_json: {exc}") from exc
    if carries_raw_card_data(data):
        raise RejectedMessage(RAW_CARD_REASON)
    return data


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


def subscriptions(settings: Settings) -> list[Subscription]:
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


class EventConsumers:
    """The worker's consumer service: runs the broker consumers of `subscriptions` until
    `stopping` is set (reconnecting with back-off), then drains the messages in flight."""

    def __init__(
        self,
        container: Container,
        *,
        subscriptions_: list[Subscription] | None = None,
        prefetch: int | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self.consumers = event_consumers(
            container,
            subscriptions_ or subscriptions(container.settings),
            prefetch=prefetch,
            retry_delay=retry_delay,
        )
        self.started = self.consumers.started

    async def run(self, stopping: asyncio.Event) -> None:
        await self.consumers.run(stopping)
