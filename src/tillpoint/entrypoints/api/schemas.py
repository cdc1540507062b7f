"""Request bodies (validated) and the JSON shapes of responses (API.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    JsonValue,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from tillpoint.domain.cards import (
    BRAND_MAX_LENGTH,
    CARD_BRANDS,
    EXP_MONTH_MAX,
    EXP_MONTH_MIN,
    EXP_YEAR_MAX,
    EXP_YEAR_MIN,
    HOLDER_NAME_MAX_LENGTH,
    LAST4_PATTERN,
    TOKEN_MAX_LENGTH,
    card_brand,
    carries_raw_card_data,
)
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import CURRENCY_EXPONENTS, MAX_AMOUNT_TEXT, Money
from tillpoint.domain.order import ORDER_ID_PATTERN, HistoryEntry, Order
from tillpoint.domain.payment import (
    Dispute,
    Operation,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
)
from tillpoint.domain.reconciliation import Discrepancy, Run
from tillpoint.domain.snapshot import CheckoutSnapshot
from tillpoint.domain.timestamps import rfc3339
from tillpoint.service.ports import ProviderPayment, StoredEvent

BRANDS = ", ".join(sorted(CARD_BRANDS))
OrderId = Field(pattern=ORDER_ID_PATTERN)

# -- strings that can reach a column --------------------------------------------------------------
# PostgreSQL's text cannot hold NUL (`invalid byte sequence for encoding "UTF8": 0x00`) and no
# encoder takes a lone surrogate (`"\ud800"` is valid JSON), so both are refused at the edge with
# every other control character: an id, a filter or a name never needs one. Free text (a reason)
# may keep tabs and line breaks. The middleware applies `CONTROL` to paths and query strings.
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
CONTROL_IN_FREE_TEXT: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
CONTROL_MESSAGE: Final = "control characters (such as NUL) and lone surrogates are not allowed"
# The same rules as JSON Schema patterns, for the document. Without the lone surrogates: a
# surrogate range in a pattern is read as UTF-16 code units by some tools (generators that
# honour it produce control characters); a URL cannot carry one, JSON only as a `\ud800` escape.
NO_CONTROL_PATTERN: Final = r"^[^\x00-\x1f\x7f]*$"
NO_CONTROL_IN_FREE_TEXT_PATTERN: Final = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"


class _Documented:
    """Adds `pattern` to a string's JSON Schema: what `_checked` enforces, for the document."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        result = handler(schema)
        result["pattern"] = self.pattern
        return result


def _checked(pattern: re.Pattern[str]) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.search(value):
            raise PydanticCustomError("control_character", CONTROL_MESSAGE)
        return value

    return AfterValidator(check)


Text = Annotated[StrictStr, _checked(CONTROL), _Documented(NO_CONTROL_PATTERN)]
"""Every string field of a request body (ids, names, codes)."""
FreeText = Annotated[
    StrictStr, _checked(CONTROL_IN_FREE_TEXT), _Documented(NO_CONTROL_IN_FREE_TEXT_PATTERN)
]
"""Human text such as a refund reason: tabs and line breaks allowed."""


def _integral(value: object) -> object:
    """A JSON number with no fraction (`2032.0`) is an integer, as JSON Schema has it."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
"""An integer field of a request body: `2032` or `2032.0`, never `"2032"` or `true`."""


AmountText = Annotated[StrictStr, Field(max_length=MAX_AMOUNT_TEXT)]
"""A decimal amount string; its length is bounded before any parsing."""


_RFC3339: Final = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def _rfc3339_utc(value: object) -> object:
    """Only RFC 3339 text with an offset (not a number of seconds), as an instant in UTC."""
    if value is None:
        return None
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise PydanticCustomError(
            "rfc3339", "a timestamp is RFC 3339 with a time zone, e.g. 2026-11-23T10:30:00Z"
        )
    try:
        return datetime.fromisoformat(value.upper().replace(" ", "T")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PydanticCustomError(
            "rfc3339", "timestamp {value} is not a valid instant", {"value": value}
        ) from None


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339_utc)]


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


CURRENCY_CODES: Final[list[JsonValue]] = [*sorted(CURRENCY_EXPONENTS)]


class CurrencyAmount(Body):
    amount: AmountText
    currency: StrictStr = Field(
        pattern=r"^[A-Z]{3}$",
        json_schema_extra={"enum": CURRENCY_CODES},
    )

    @model_validator(mode="after")
    def _money(self) -> Self:
        money_of(self.amount, self.currency)
        return self

    @property
    def money(self) -> Money:
        return Money.parse(self.amount, self.currency)


class CreateOrderIn(CurrencyAmount):
    order_id: StrictStr = OrderId
    buyer_id: Text = Field(min_length=1, max_length=128)


class PatchOrderIn(Body):
    amount: AmountText


class PaymentMethodIn(BaseModel):
    # Extra fields are let in only to be refused by `_no_extra` with their names.
    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": False})

    type: Literal["card"] = "card"
    token: Text | None = Field(None, max_length=TOKEN_MAX_LENGTH)
    brand: Text | None = Field(None, max_length=BRAND_MAX_LENGTH)
    last4: StrictStr | None = Field(None, pattern=LAST4_PATTERN)
    exp_month: JsonInt | None = Field(None, ge=EXP_MONTH_MIN, le=EXP_MONTH_MAX)
    exp_year: JsonInt | None = Field(None, ge=EXP_YEAR_MIN, le=EXP_YEAR_MAX)
    holder_name: Text | None = Field(None, max_length=HOLDER_NAME_MAX_LENGTH)

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
    provider: Text | None = Field(None, max_length=32)
    capture_method: Literal["automatic", "manual"] = "automatic"
    payment_method: PaymentMethodIn | None = None
    snapshot_id: Text | None = Field(None, max_length=40)
    idempotency_key: Text | None = Field(
        None,  # read by the idempotency layer (idempotent.py), which refuses a bad one first
        json_schema_extra={"minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    )


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


class MockDashboardIn(Body):
    """A support agent's action in the mock's dashboard (`/api/v1/mock/dashboard/…`)."""

    amount: AmountText | None = None
    reason: FreeText | None = Field(None, max_length=500)
    # How tillpoint hears of it: the mock's signed webhook now (API.md's default), late, or
    # never (a lost webhook: only reconciliation finds it).
    webhook: Literal["now", "late", "never"] = "now"


class AmountIn(Body):
    amount: AmountText | None = None


class CaptureIn(AmountIn):
    pass


class VoidIn(Body):
    reason: FreeText | None = Field(None, max_length=500)


class RefundIn(AmountIn):
    reason: FreeText | None = Field(None, max_length=500)


class ReconcileIn(Body):
    """Which payments a run compares: one provider's (default every configured provider's),
    created in [created_from, created_to) (default the configured window up to now)."""

    provider: Text | None = Field(None, max_length=32)
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.created_from and self.created_to and self.created_from >= self.created_to:
            raise ValueError("created_from must be before created_to")
        return self


class ResolveIn(Body):
    note: FreeText = Field(min_length=1, max_length=2000)


class NoFieldsIn(Body):
    """The body of a POST that takes no fields (reconcile, replay): none, `{}`, or a 422 that
    names each field sent, rather than fields silently ignored."""


class QuoteItemIn(Body):
    variant_id: Text = Field(min_length=1, max_length=64)
    quantity: JsonInt = Field(ge=1, le=10_000)
    unit_amount: AmountText


class QuoteIn(Body):
    order_id: StrictStr = OrderId
    items: list[QuoteItemIn] = Field(min_length=1, max_length=500)
    shipping_amount: AmountText | None = None
    tax_amount: AmountText | None = None
    discount_amount: AmountText | None = None


class ListPaymentsQuery(BaseModel):
    """Control characters in any query parameter are refused by the middleware already."""

    status: PaymentStatus | None = None
    order_id: str | None = Field(None, max_length=64)
    provider: str | None = Field(None, max_length=32)
    created_from: Timestamp | None = None
    created_to: Timestamp | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: str | None = Field(None, max_length=64)


class LedgerExportQuery(BaseModel):
    """The window of a ledger export: half-open, `[created_from, created_to)`."""

    created_from: Timestamp
    created_to: Timestamp
    provider: str | None = Field(None, min_length=1, max_length=32)

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.created_from >= self.created_to:
            raise PydanticCustomError(
                "window", "created_to must be later than created_from (the window is [from, to))"
            )
        return self


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


def run_json(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "provider": run.provider,
        "window_from": rfc3339(run.window_from),
        "window_to": rfc3339(run.window_to),
        "checked": run.checked,
        "healed": run.healed,
        "flagged": run.flagged,
        "resolved": run.resolved,
        "error": run.error,
        "started_at": rfc3339(run.started_at),
        "finished_at": rfc3339(run.finished_at) if run.finished_at else None,
    }


def discrepancy_json(found: Discrepancy) -> dict[str, Any]:
    return {
        "discrepancy_id": found.id,
        "run_id": found.run_id,
        "provider": found.provider,
        "kind": found.kind.value,
        "action": found.action.value,
        "payment_id": found.payment_id,
        "provider_payment_id": found.provider_payment_id,
        "ours": found.ours,
        "theirs": found.theirs,
        "detail": found.detail,
        "created_at": rfc3339(found.created_at),
        "resolved_at": rfc3339(found.resolved_at) if found.resolved_at else None,
        "resolved_by": found.resolved_by,
        "resolution_note": found.resolution_note,
    }


def payment_json(p: Payment, client_secret: str | None = None) -> dict[str, Any]:
    """The payment object. `client_secret` only when `payments.client_secret` gave it for this
    caller; answers stored under an Idempotency-Key never hold it (see routes/payments.py)."""
    money = p.money
    return {
        "payment_id": p.id,
        "payment_number": p.number,
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
        "disputed_amount": money(p.disputed_minor).format(),
        "failure_code": p.failure_code,
        "failure_message": p.failure_message,
        "next_action": dict(p.next_action) if p.next_action else None,
        "client_secret": client_secret,
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


def dispute_json(d: Dispute) -> dict[str, Any]:
    return {
        "dispute_id": d.id,
        "payment_id": d.payment_id,
        "provider": d.provider,
        "provider_dispute_id": d.provider_dispute_id,
        "amount": d.amount.format(),
        "currency": d.amount.currency,
        "reason": d.reason,
        "status": d.status.value,
        "evidence_due_by": rfc3339(d.evidence_due_by) if d.evidence_due_by else None,
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.updated_at),
        "closed_at": rfc3339(d.closed_at) if d.closed_at else None,
    }


def provider_payment_json(view: ProviderPayment) -> dict[str, Any]:
    """A provider's whole view of one of its payments (the mock dashboard's answer)."""

    def money(minor: int) -> str:
        return Money(minor, view.currency).format()

    return {
        "provider_payment_id": view.provider_payment_id,
        "payment_id": view.payment_id,
        "status": view.status.value,
        "amount": money(view.amount_minor),
        "currency": view.currency,
        "authorized_amount": money(view.authorized_minor),
        "captured_amount": money(view.captured_minor),
        "refunded_amount": money(view.refunded_minor),
        "created_at": rfc3339(view.created_at),
        "refunds": [
            {
                "provider_refund_id": r.reference,
                "amount": money(r.amount_minor),
                "status": r.status.value,
                "idempotency_key": r.idempotency_key,
                "created_at": rfc3339(r.created_at) if r.created_at else None,
            }
            for r in view.refunds
        ],
        "disputes": [
            {
                "provider_dispute_id": d.reference,
                "amount": money(d.amount_minor),
                "reason": d.reason,
                "status": d.status,
                "evidence_due_by": rfc3339(d.evidence_due_by) if d.evidence_due_by else None,
            }
            for d in view.disputes
        ],
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
