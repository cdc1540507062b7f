"""The shapes of responses, as the OpenAPI document declares them (docs/api.md in prose).

The routes build their bodies with the `*_json` functions of `schemas.py`; these models only
describe those bodies, so they are named in `responses=` and never used to filter an answer.
Every model allows extra fields: a client must ignore a field it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Amount = Field(description="decimal string in major units, the currency's decimals exactly")
Timestamp = Field(description="RFC 3339, UTC")


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ValidationIssue(Out):
    loc: list[str | int]
    msg: str


class Problem(Out):
    """RFC 9457 problem document; `code` is stable, `type` links to its row in docs/api.md."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    request_id: str
    errors: list[ValidationIssue] | None = None
    payment: dict[str, Any] | None = Field(None, description="the payment, on a decline (402)")


class HistoryOut(Out):
    from_status: str | None
    to_status: str
    reason: str | None
    source: str | None
    actor: str | None
    correlation_id: str | None
    created_at: str = Timestamp


class OrderOut(Out):
    order_id: str
    buyer_id: str
    amount: str = Amount
    currency: str
    status: Literal["PAYMENT_PENDING", "PAID", "PARTIALLY_REFUNDED", "REFUNDED", "CANCELED"]
    created_at: str = Timestamp
    updated_at: str = Timestamp
    history: list[HistoryOut] = Field(description="status changes, oldest first")


class PaymentMethodOut(Out):
    type: str
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None


class PaymentOut(Out):
    payment_id: str
    payment_number: int | None = Field(
        description="a numeric id, unique per payment (the foodies dialect's `paymentId`)"
    )
    order_id: str
    buyer_id: str
    status: Literal[
        "INITIATED",
        "PROCESSING",
        "REQUIRES_ACTION",
        "AUTHORIZED",
        "CAPTURED",
        "PARTIALLY_REFUNDED",
        "REFUNDED",
        "FAILED",
        "CANCELED",
    ]
    amount: str = Amount
    currency: str
    capture_method: Literal["automatic", "manual"]
    provider: str
    provider_payment_id: str | None
    payment_method: PaymentMethodOut
    authorized_amount: str = Amount
    captured_amount: str = Amount
    refunded_amount: str = Amount
    disputed_amount: str = Field(
        description="held by open disputes (chargebacks) or lost to closed ones; a won dispute "
        "gives its amount back. What was lost is no longer refundable"
    )
    failure_code: str | None
    failure_message: str | None
    next_action: dict[str, Any] | None
    client_secret: str | None = Field(
        description="The provider's client secret (Stripe's PaymentIntent secret) while the "
        "payment is REQUIRES_ACTION, for the `service` role and the owning customer only; "
        "null otherwise and for the mock"
    )
    snapshot_id: str | None
    created_at: str = Timestamp
    updated_at: str = Timestamp


class PaymentList(Out):
    data: list[PaymentOut] = Field(description="newest first")


class PaymentPage(Out):
    data: list[PaymentOut] = Field(description="newest first")
    next_cursor: str | None


class RefundOut(Out):
    refund_id: str
    payment_id: str
    amount: str = Amount
    currency: str
    reason: str | None
    status: Literal["PENDING", "SUCCEEDED", "FAILED"]
    provider_refund_id: str | None
    created_at: str = Timestamp
    processed_at: str | None


class DisputeOut(Out):
    dispute_id: str = Field(description="ours, `dsp_…`")
    payment_id: str
    provider: str
    provider_dispute_id: str = Field(description="the provider's id of the dispute")
    amount: str = Amount
    currency: str
    reason: str = Field(description="the provider's reason (Stripe's: `fraudulent`, …)")
    status: Literal["needs_response", "under_review", "won", "lost"]
    evidence_due_by: str | None = Field(description="RFC 3339, UTC; null when none is taken")
    created_at: str = Timestamp
    updated_at: str = Timestamp
    closed_at: str | None


class DisputePage(Out):
    data: list[DisputeOut] = Field(description="newest first")
    next_cursor: str | None


class ProviderRefundOut(Out):
    provider_refund_id: str
    amount: str = Amount
    status: Literal["REFUNDED", "PROCESSING", "FAILED"]
    idempotency_key: str | None = Field(
        description="the provider key tillpoint sent it with; null for one made at the provider"
    )
    created_at: str | None = Timestamp


class ProviderDisputeOut(Out):
    provider_dispute_id: str
    amount: str = Amount
    reason: str
    status: Literal["needs_response", "under_review", "won", "lost"]
    evidence_due_by: str | None = Timestamp


class ProviderPaymentOut(Out):
    """A provider's whole view of one of its payments (the mock dashboard's answer)."""

    provider_payment_id: str
    payment_id: str | None = Field(description="ours, when the provider carries it")
    status: Literal[
        "REQUIRES_ACTION", "PROCESSING", "AUTHORIZED", "CAPTURED", "REFUNDED", "CANCELED", "FAILED"
    ]
    amount: str = Amount
    currency: str
    authorized_amount: str = Amount
    captured_amount: str = Amount
    refunded_amount: str = Amount
    created_at: str = Timestamp
    refunds: list[ProviderRefundOut]
    disputes: list[ProviderDisputeOut]


class TransactionOut(Out):
    transaction_id: str
    kind: str
    status: str
    amount: str = Amount
    currency: str
    provider_idempotency_key: str
    provider_reference: str | None
    refund_id: str | None
    error_code: str | None
    error_message: str | None
    next_check_at: str | None
    created_at: str = Timestamp
    updated_at: str = Timestamp


class LedgerPaymentOut(PaymentOut):
    transactions: list[TransactionOut]
    refunds: list[RefundOut]


class LedgerOut(Out):
    order_id: str
    data: list[LedgerPaymentOut]


class EventOut(Out):
    event_id: str
    event_type: str
    payload: dict[str, Any]
    created_at: str = Timestamp


class EventList(Out):
    data: list[EventOut] = Field(description="oldest first")


class ProviderCallOut(Out):
    """One outbound call attempt to a provider (retries are rows of their own)."""

    call_id: str
    provider: str
    operation: str = Field(
        description="authorize, capture, void, refund, get_transaction, client_secret, complete"
    )
    payment_id: str | None
    idempotency_key: str | None = Field(description="the provider idempotency key sent")
    provider_request_id: str | None
    http_status: int | None
    outcome: str = Field(
        description="the provider's status (CAPTURED, FAILED, …), or why there was no answer: "
        "timeout, server_error, unavailable, circuit_open, error"
    )
    latency_ms: int
    correlation_id: str | None = Field(
        description="the X-Correlation-ID of the request that made the call, else its X-Request-ID"
    )
    request: dict[str, Any] | None = Field(description="redacted: no secrets, no card data")
    response: dict[str, Any] | None = Field(description="redacted: no secrets, no card data")
    created_at: str = Timestamp


class ProviderCallList(Out):
    data: list[ProviderCallOut] = Field(description="oldest first")


class SnapshotItemOut(Out):
    variant_id: str
    quantity: int
    unit_amount: str = Amount
    line_total: str = Amount


class TotalsOut(Out):
    subtotal: str = Amount
    discount: str = Amount
    shipping: str = Amount
    tax: str = Amount
    total: str = Amount


class SnapshotOut(Out):
    snapshot_id: str
    order_id: str
    currency: str
    items: list[SnapshotItemOut]
    totals: TotalsOut
    created_at: str = Timestamp
    expires_at: str = Timestamp


class RunStarted(Out):
    run_id: str


class RunOut(Out):
    run_id: str
    status: Literal["RUNNING", "FINISHED", "FAILED"]
    provider: str | None = Field(description="null: every configured provider")
    window_from: str = Timestamp
    window_to: str = Timestamp
    checked: int = Field(description="our payments compared with the provider's view")
    healed: int
    flagged: int
    resolved: int = Field(description="open operations settled by asking the provider")
    error: str | None
    started_at: str = Timestamp
    finished_at: str | None


class RunPage(Out):
    data: list[RunOut] = Field(description="newest first")
    next_cursor: str | None


class DiscrepancyOut(Out):
    discrepancy_id: str
    run_id: str
    provider: str
    kind: Literal[
        "missing_at_provider",
        "missing_locally",
        "status_mismatch",
        "amount_mismatch",
        "refund_mismatch",
        "dispute_opened",
        "stuck",
    ]
    action: Literal["healed", "flagged"]
    payment_id: str | None
    provider_payment_id: str | None
    ours: dict[str, Any] = Field(description="our side: status and amounts (decimal strings)")
    theirs: dict[str, Any] = Field(description="the provider's side, as it reported it")
    detail: str
    created_at: str = Timestamp
    resolved_at: str | None
    resolved_by: str | None
    resolution_note: str | None


class DiscrepancyPage(Out):
    data: list[DiscrepancyOut] = Field(description="oldest first")
    next_cursor: str | None


class WebhookReceived(Out):
    received: bool
    duplicate: bool


class WebhookEventOut(Out):
    webhook_event_id: str
    provider: str
    provider_event_id: str
    event_type: str | None
    signature_valid: bool
    status: Literal["PENDING", "PROCESSED", "IGNORED", "FAILED", "DEAD"]
    attempt_count: int
    last_error: str | None
    received_at: str = Timestamp
    processed_at: str | None
    next_attempt_at: str | None


class WebhookEventPage(Out):
    data: list[WebhookEventOut] = Field(description="newest first")
    next_cursor: str | None


class Alive(Out):
    status: Literal["UP"]


class Readiness(Out):
    status: Literal["UP", "DOWN"]
    checks: dict[str, str]
