"""The consumed order messages of API.md "Consumed events": their schemas, and how a body
becomes an `OrderEvent` (`parse_stock_confirmed`, `parse_order_created`).

A message that cannot be parsed or validated, or that carries card data (a card number
anywhere outside its ids, or a card-number/CVC field), is refused with `RejectedMessage` and
dead-lettered. The order-id rule and the card-field limits are the domain's, the same as the
API's request schemas use. Which queue reads which message is `entrypoints/consumers.py`.
"""

from __future__ import annotations

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

from tillpoint.domain.cards import (
    BRAND_MAX_LENGTH,
    CARD_BRANDS,
    EXP_MONTH_MAX,
    EXP_MONTH_MIN,
    EXP_YEAR_MAX,
    EXP_YEAR_MIN,
    HOLDER_NAME_MAX_LENGTH,
    LAST4_PATTERN,
    METHOD_TYPE_MAX_LENGTH,
    TOKEN_MAX_LENGTH,
    card_brand,
    carries_raw_card_data,
)
from tillpoint.domain.errors import DomainError
from tillpoint.domain.money import Money
from tillpoint.domain.order import check_order_id
from tillpoint.domain.payment import PaymentMethod
from tillpoint.service.consumers import RAW_CARD_REASON, OrderEvent, RejectedMessage

CARD_TYPES = frozenset({"CREDIT_CARD", "DEBIT_CARD", "CARD"})


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


def _brand(value: str) -> str:
    brand = card_brand(value)
    if brand is None:
        raise ValueError(f"card brand must be one of: {', '.join(sorted(CARD_BRANDS))}")
    return brand


DecimalText = Annotated[str, BeforeValidator(_decimal_text)]
OrderId = Annotated[str, BeforeValidator(_order_id_text), AfterValidator(_valid_order_id)]
Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
MethodType = Annotated[str, Field(max_length=METHOD_TYPE_MAX_LENGTH)]
Token = Annotated[str, Field(max_length=TOKEN_MAX_LENGTH)]
Brand = Annotated[str, Field(max_length=BRAND_MAX_LENGTH), AfterValidator(_brand)]
LastFour = Annotated[str, Field(pattern=LAST4_PATTERN)]
ExpMonth = Annotated[int, Field(ge=EXP_MONTH_MIN, le=EXP_MONTH_MAX)]
ExpYear = Annotated[int, Field(ge=EXP_YEAR_MIN, le=EXP_YEAR_MAX)]
HolderName = Annotated[str, Field(max_length=HOLDER_NAME_MAX_LENGTH)]


class CardInfo(BaseModel):
    """The ordering service's `PaymentMethodInfo` (last four digits only)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: MethodType = "CREDIT_CARD"
    cardLastFour: LastFour | None = None
    cardBrand: Brand | None = None
    cardHolderName: HolderName | None = None
    expirationMonth: ExpMonth | None = None
    expirationYear: ExpYear | None = None

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
    """`order.created.v1`'s payment method: the API's field names."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: MethodType = "card"
    token: Token | None = None
    brand: Brand | None = None
    last4: LastFour | None = None
    exp_month: ExpMonth | None = None
    exp_year: ExpYear | None = None
    holder_name: HolderName | None = None

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
