"""What happened to a payment, as typed, past-tense events.

Every event is kept as a `payment_events` row (`type` and `payload()`), the payment's audit
trail. The `Published` ones are also announced to the rest of the shop; which message each
becomes (routing key, `type` header, body) is decided in one place, `service/messages.py`.
Their `sequence` counts up per payment, assigned by the aggregate as it records them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from tillpoint.domain.money import Money
from tillpoint.domain.payment.status import PaymentStatus
from tillpoint.domain.timestamps import rfc3339


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentEvent:
    type: ClassVar[str]
    # False for a message that is only published, never part of the audit trail.
    stored: ClassVar[bool] = True

    id: str
    payment_id: str
    order_id: str
    status: PaymentStatus  # the payment's status once this happened
    occurred_at: datetime

    def details(self) -> dict[str, Any]:
        return {}

    def payload(self) -> dict[str, Any]:
        """The audit row's payload."""
        return {"status": self.status.value, **self.details()}


@dataclass(frozen=True, slots=True, kw_only=True)
class Published(PaymentEvent):
    """An event the rest of the shop is told about."""

    sequence: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentInitiated(PaymentEvent):
    type = "PAYMENT_INITIATED"
    amount: Money
    capture_method: str
    provider: str

    def details(self) -> dict[str, Any]:
        return {
            "amount": self.amount.format(),
            "currency": self.amount.currency,
            "capture_method": self.capture_method,
            "provider": self.provider,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfirmed(PaymentEvent):
    """The provider is further than we knew (processing, or captured without our asking)."""

    type = "PROVIDER_CONFIRMED"
    source: str
    reason: str | None = None

    def details(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason}


@dataclass(frozen=True, slots=True, kw_only=True)
class ActionRequired(PaymentEvent):
    type = "ACTION_REQUIRED"
    next_action: Mapping[str, Any]
    source: str

    def details(self) -> dict[str, Any]:
        return {"next_action": dict(self.next_action), "source": self.source}


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentAuthorized(Published):
    type = "AUTHORIZATION_SUCCEEDED"
    amount: Money
    provider_payment_id: str | None
    payment_method: Mapping[str, Any]
    risk_score: int | None
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "amount": self.amount.format(),
            "provider_payment_id": self.provider_payment_id,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentCaptured(Published):
    type = "CAPTURE_SUCCEEDED"
    amount: Money
    transaction_id: str
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "amount": self.amount.format(),
            "transaction_id": self.transaction_id,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentFailed(Published):
    type = "AUTHORIZATION_FAILED"
    failure_code: str
    failure_message: str | None
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentCanceled(Published):
    type = "VOIDED"
    reason: str | None
    source: str

    def details(self) -> dict[str, Any]:
        return {"reason": self.reason, "source": self.source}


@dataclass(frozen=True, slots=True, kw_only=True)
class CaptureFailed(PaymentEvent):
    type = "CAPTURE_FAILED"
    transaction_id: str
    failure_code: str | None
    failure_message: str | None
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentRefunded(Published):
    type = "REFUND_SUCCEEDED"
    refund_id: str
    amount: Money
    refunded_amount: Money  # everything refunded so far
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "amount": self.amount.format(),
            "refunded_amount": self.refunded_amount.format(),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundFailed(PaymentEvent):
    type = "REFUND_FAILED"
    refund_id: str
    failure_code: str | None
    failure_message: str | None
    source: str

    def details(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "failure_code": self.failure_code,
            "failure_message": self.failure_message,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class StaleSignalIgnored(PaymentEvent):
    """A signal for a state the payment already passed: recorded, and nothing changes."""

    type = "STALE_SIGNAL_IGNORED"
    signal: str
    source: str

    def details(self) -> dict[str, Any]:
        return {"signal": self.signal, "source": self.source}


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookReceived(PaymentEvent):
    type = "WEBHOOK_RECEIVED"
    webhook_event_id: str
    provider: str
    provider_event_id: str
    provider_event_type: str
    signal: str

    def details(self) -> dict[str, Any]:
        return {
            "webhook_event_id": self.webhook_event_id,
            "provider": self.provider,
            "provider_event_id": self.provider_event_id,
            "provider_event_type": self.provider_event_type,
            "signal": self.signal,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled(PaymentEvent):
    type = "RECONCILED"
    transaction_id: str
    provider_status: str
    operation: str
    # What a reconciliation run found and healed (its kind, the provider's view): the evidence.
    evidence: Mapping[str, Any] | None = None

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "transaction_id": self.transaction_id,
            "provider_status": self.provider_status,
            "operation": self.operation,
        }
        if self.evidence is not None:
            details["evidence"] = dict(self.evidence)
        return details


@dataclass(frozen=True, slots=True, kw_only=True)
class DisputeFacts:
    """What a dispute event says about its dispute, as it stood once the event happened."""

    dispute_id: str
    provider_dispute_id: str
    amount: Money
    reason: str
    status: str  # the dispute's own: needs_response, under_review, won, lost
    evidence_due_by: datetime | None

    def payload(self) -> dict[str, Any]:
        return {
            "dispute_id": self.dispute_id,
            "provider_dispute_id": self.provider_dispute_id,
            "amount": self.amount.format(),
            "reason": self.reason,
            "dispute_status": self.status,
            "evidence_due_by": rfc3339(self.evidence_due_by) if self.evidence_due_by else None,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentDisputed(Published):
    """A chargeback was opened (published as `payment.disputed`)."""

    type = "DISPUTE_OPENED"
    dispute: DisputeFacts
    disputed_amount: Money  # the payment's, with this dispute
    source: str

    def details(self) -> dict[str, Any]:
        return {
            **self.dispute.payload(),
            "disputed_amount": self.disputed_amount.format(),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DisputeUpdated(PaymentEvent):
    """An open dispute moved on (under review, a new deadline or amount): audit trail only."""

    type = "DISPUTE_UPDATED"
    dispute: DisputeFacts
    disputed_amount: Money
    source: str

    def details(self) -> dict[str, Any]:
        return {
            **self.dispute.payload(),
            "disputed_amount": self.disputed_amount.format(),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentDisputeClosed(Published):
    """A dispute was won or lost (published as `payment.dispute_closed`). A lost one's amount
    is no longer refundable: `refundable_amount` is what is, once this happened."""

    type = "DISPUTE_CLOSED"
    dispute: DisputeFacts
    disputed_amount: Money
    refundable_amount: Money
    source: str

    def details(self) -> dict[str, Any]:
        return {
            **self.dispute.payload(),
            "disputed_amount": self.disputed_amount.format(),
            "refundable_amount": self.refundable_amount.format(),
            "source": self.source,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeRepublished(Published):
    """The payment's latest outcome message, announced again (a consumer asked twice): the
    same facts under a new event id and the payment's next sequence."""

    type = "OUTCOME_REPUBLISHED"
    stored = False
    routing_key: str
    message_type: str
    body: str  # the original message's body, as it was published
