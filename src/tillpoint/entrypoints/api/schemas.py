"""Request bodies (validated) and the JSON shapes of responses (API.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from tillpoint.domain.cards import CARD_BRANDS, card_brand, carries_raw_card_data
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.order import HistoryEntry, Order
from tillpoint.domain.payment import (
    Operation,
    Payment,
    PaymentMethod,
    Refund,
    rfc3339,
)
from tillpoint.domain.snapshot import CheckoutSnapshot
from tillpoint.service.ports import StoredEvent

BRANDS = ", ".join(sorted(CARD_BRANDS))
OrderId = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")


RAW_CARD_MESSAGE = "raw card numbers and CVCs are never accepted: send a provider token"


def refuse_raw_card_data(data: Any, *, in_card: bool = False) -> Any:
    """A card number (a Luhn-valid run of 12-19 digits) in any field but an identifier, or a
    card-number/CVC field: 422 `raw_card_data_rejected`, before anything is stored."""
    if carries_raw_card_data(data, in_card=in_card):
        raise PydanticCustomError("raw_card_data", RAW_CARD_MESSAGE)
    return data


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _no_raw_card(cls, data: Any) -> Any:
        return refuse_raw_card_data(data)


def money_of(amount: str, currency: str) -> Money:
    try:
        return Money.parse(amount, currency)
    except ValidationFailed as exc:
        raise PydanticCustomError("money", exc.detail) from None


def amount_in(amount: str, currency: str) -> Money:
    """An amount whose currency is known only after a lookup (the order's, the payment's).

    Refused as a request validation error, so it renders and is treated like any other body
    validation failure: 422 `validation_error`, never stored under an idempotency key.
    """
    try:
        return Money.parse(amount, currency)
    except ValidationFailed as exc:
        raise RequestValidationError(
            [{"type": "money", "loc": ("body", "amount"), "msg": exc.detail, "input": amount}]
        ) from None


class CurrencyAmount(Body):
    amount: StrictStr
    currency: StrictStr = Field(pattern=r"^[A-Z]{3}$")

    @model_validator(mode="after")
    def _money(self) -> Self:
        money_of(self.amount, self.currency)
        return self

    @property
    def money(self) -> Money:
        return Money.parse(self.amount, self.currency)


class CreateOrderIn(CurrencyAmount):
    order_id: StrictStr = OrderId
    buyer_id: StrictStr = Field(min_length=1, max_length=128)


class PatchOrderIn(Body):
    amount: StrictStr


class PaymentMethodIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["card"] = "card"
    token: StrictStr | None = Field(None, max_length=255)
    brand: StrictStr | None = Field(None, max_length=32)
    last4: StrictStr | None = Field(None, pattern=r"^[0-9]{4}$")
    exp_month: StrictInt | None = Field(None, ge=1, le=12)
    exp_year: StrictInt | None = Field(None, ge=2000, le=2100)
    holder_name: StrictStr | None = Field(None, max_length=128)

    @model_validator(mode="before")
    @classmethod
    def _no_raw_card(cls, data: Any) -> Any:
        return refuse_raw_card_data(data, in_card=True)

    @field_validator("brand")
    @classmethod
    def _brand(cls, value: str | None) -> str | None:
        if value is None:
            return None
        brand = card_brand(value)
        if brand is None:
            raise PydanticCustomError(
                "card_brand", "brand must be one of: {brands}", {"brands": BRANDS}
            )
        return brand

    @model_validator(mode="after")
    def _no_extra(self) -> Self:
        if self.model_extra:
            raise PydanticCustomError(
                "extra_forbidden",
                "unknown payment_method fields: {fields}",
                {"fields": ", ".join(sorted(self.model_extra))},
            )
        return self

    def domain(self) -> PaymentMethod:
        return PaymentMethod(
            type=self.type,
            token=self.token,
            brand=self.brand,
            last4=self.last4,
            exp_month=self.exp_month,
            exp_year=self.exp_year,
            holder_name=self.holder_name,
        )


class CreatePaymentIn(CurrencyAmount):
    order_id: StrictStr = OrderId
    provider: StrictStr | None = Field(None, max_length=32)
    capture_method: Literal["automatic", "manual"] = "automatic"
    payment_method: PaymentMethodIn | None = None
    snapshot_id: StrictStr | None = Field(None, max_length=40)
    idempotency_key: StrictStr | None = None


class ConfirmIn(Body):
    payment_method: PaymentMethodIn | None = None


class MockCompleteIn(Body):
    result: Literal["SUCCESS", "FAIL"]
    failure_code: (
        Literal[
            "card_declined", "insufficient_funds", "expired_card", "fraud_suspected", "invalid_card"
        ]
        | None
    ) = None


class AmountIn(Body):
    amount: StrictStr | None = None


class CaptureIn(AmountIn):
    pass


class VoidIn(Body):
    reason: StrictStr | None = Field(None, max_length=500)


class RefundIn(AmountIn):
    reason: StrictStr | None = Field(None, max_length=500)


class QuoteItemIn(Body):
    variant_id: StrictStr = Field(min_length=1, max_length=64)
    quantity: StrictInt = Field(ge=1, le=10_000)
    unit_amount: StrictStr


class QuoteIn(Body):
    order_id: StrictStr = OrderId
    items: list[QuoteItemIn] = Field(min_length=1, max_length=500)
    shipping_amount: StrictStr | None = None
    tax_amount: StrictStr | None = None
    discount_amount: StrictStr | None = None


class ListPaymentsQuery(BaseModel):
    status: str | None = None
    order_id: str | None = None
    provider: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = None

    @field_validator("created_from", "created_to")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("timestamps need a time zone, e.g. 2026-11-23T10:30:00Z")
        return value


# -- responses ----------------------------------------------------------------------------------


def order_json(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "buyer_id": order.buyer_id,
        "amount": order.amount.format(),
        "currency": order.amount.currency,
        "status": order.status.value,
        "created_at": rfc3339(order.created_at),
        "updated_at": rfc3339(order.updated_at),
    }


def history_json(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "from_status": entry.from_status.value if entry.from_status else None,
        "to_status": entry.to_status.value,
        "reason": entry.reason,
        "source": entry.source,
        "actor": entry.actor,
        "correlation_id": entry.correlation_id,
        "created_at": rfc3339(entry.created_at),
    }


def payment_json(p: Payment) -> dict[str, Any]:
    money = p.money
    return {
        "payment_id": p.id,
        "order_id": p.order_id,
        "buyer_id": p.buyer_id,
        "status": p.status.value,
        "amount": p.amount.format(),
        "currency": p.amount.currency,
        "capture_method": p.capture_method.value,
        "provider": p.provider,
        "provider_payment_id": p.provider_payment_id,
        "payment_method": p.payment_method.public(),
        "authorized_amount": money(p.authorized_minor).format(),
        "captured_amount": money(p.captured_minor).format(),
        "refunded_amount": money(p.refunded_minor).format(),
        "failure_code": p.failure_code,
        "failure_message": p.failure_message,
        "next_action": dict(p.next_action) if p.next_action else None,
        "snapshot_id": p.snapshot_id,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
    }


def refund_json(r: Refund) -> dict[str, Any]:
    return {
        "refund_id": r.id,
        "payment_id": r.payment_id,
        "amount": r.amount.format(),
        "currency": r.amount.currency,
        "reason": r.reason,
        "status": r.status.value,
        "provider_refund_id": r.provider_refund_id,
        "created_at": rfc3339(r.created_at),
        "processed_at": rfc3339(r.processed_at) if r.processed_at else None,
    }


def transaction_json(op: Operation) -> dict[str, Any]:
    return {
        "transaction_id": op.id,
        "kind": op.kind.value,
        "status": op.status.value,
        "amount": op.amount.format(),
        "currency": op.amount.currency,
        "provider_idempotency_key": op.idempotency_key,
        "provider_reference": op.provider_reference,
        "refund_id": op.refund_id,
        "error_code": op.error_code,
        "error_message": op.error_message,
        "next_check_at": rfc3339(op.next_check_at) if op.next_check_at else None,
        "created_at": rfc3339(op.created_at),
        "updated_at": rfc3339(op.updated_at),
    }


def event_json(e: StoredEvent) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "event_type": e.event_type,
        "payload": e.payload,
        "created_at": rfc3339(e.created_at),
    }


def snapshot_json(s: CheckoutSnapshot) -> dict[str, Any]:
    t = s.totals
    return {
        "snapshot_id": s.id,
        "order_id": s.order_id,
        "currency": t.total.currency,
        "items": [
            {
                "variant_id": i.variant_id,
                "quantity": i.quantity,
                "unit_amount": i.unit_amount.format(),
                "line_total": i.total.format(),
            }
            for i in s.items
        ],
        "totals": {
            "subtotal": t.subtotal.format(),
            "discount": t.discount.format(),
            "shipping": t.shipping.format(),
            "tax": t.tax.format(),
            "total": t.total.format(),
        },
        "created_at": rfc3339(s.created_at),
        "expires_at": rfc3339(s.expires_at),
    }
