"""The payment's parts: its method, its provider operations (the ledger), its refunds and its
disputes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tillpoint.domain.money import Money
from tillpoint.domain.payment.status import (
    CLOSED_DISPUTE,
    OPEN_OPERATION,
    DisputeStatus,
    OperationKind,
    OperationStatus,
    RefundStatus,
)


@dataclass(frozen=True, slots=True)
class PaymentMethod:
    """What we may know of a card: a provider token and display data, never a PAN or CVC."""

    type: str = "card"
    token: str | None = None
    brand: str | None = None
    last4: str | None = None
    exp_month: int | None = None
    exp_year: int | None = None
    holder_name: str | None = None

    def public(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "brand": self.brand,
            "last4": self.last4,
            "exp_month": self.exp_month,
            "exp_year": self.exp_year,
        }


@dataclass(slots=True)
class Operation:
    """One provider operation (a `payment_transactions` ledger row) with its own status.

    The row is committed `PENDING` with its provider idempotency key *before* the call, so a
    crash or timeout leaves evidence that the janitor resolves by asking the provider.
    """

    id: str
    payment_id: str
    kind: OperationKind
    status: OperationStatus
    amount: Money
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    provider_reference: str | None = None
    refund_id: str | None = None
    reason: str | None = None  # the client's reason for the operation (a void's)
    error_code: str | None = None
    error_message: str | None = None
    check_count: int = 0
    next_check_at: datetime | None = None
    # The request that sent it (a hash of principal, route and Idempotency-Key): that request's
    # retry resumes this operation instead of starting another one.
    request_key: str | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN_OPERATION

    def send(self, now: datetime, check_by: datetime) -> None:
        """Hand the operation to the provider (again). Touching `updated_at` tells the janitor
        it is with the provider right now; the check at `check_by` is the safety net should this
        process die before recording the answer."""
        self.updated_at = now
        if self.next_check_at is None or self.next_check_at < check_by:
            self.next_check_at = check_by

    def resend_for(self, request_key: str | None, now: datetime) -> None:
        """Another request takes over this open operation (mock complete after confirm): its
        retry must find the operation too. The provider key stays the same."""
        if request_key is not None:
            self.request_key = request_key
        self.updated_at = now

    def succeed(self, now: datetime, provider_reference: str | None) -> None:
        self.status = OperationStatus.SUCCEEDED
        self.provider_reference = provider_reference or self.provider_reference
        self.updated_at = now
        self.next_check_at = None

    def fail(self, now: datetime, code: str | None, message: str | None) -> None:
        self.status = OperationStatus.FAILED
        self.error_code, self.error_message = code, message
        self.updated_at = now
        self.next_check_at = None

    def lose_track(self, now: datetime, reason: str, check_at: datetime) -> None:
        """The call may have acted, but we do not know: UNKNOWN until the provider is asked."""
        self.status = OperationStatus.UNKNOWN
        self.error_message = reason
        self.updated_at = now
        self.next_check_at = check_at

    def reschedule(self, now: datetime, reason: str, check_at: datetime) -> None:
        """Still open (the customer or the provider is not done): ask again at `check_at`."""
        self.error_message = reason
        self.updated_at = now
        self.next_check_at = check_at

    def lease(self, until: datetime) -> None:
        """Claimed by a janitor until `until`: the others skip it meanwhile."""
        self.next_check_at = until

    def defer(self, until: datetime) -> None:
        """Not to be asked about before `until` (it may be with the provider right now)."""
        if self.next_check_at is None or self.next_check_at < until:
            self.next_check_at = until

    def checked(self) -> None:
        """One more time the provider was asked about it (the recheck schedule advances)."""
        self.check_count += 1


@dataclass(slots=True)
class Refund:
    id: str
    payment_id: str
    amount: Money
    reason: str | None
    status: RefundStatus
    created_at: datetime
    provider_refund_id: str | None = None
    processed_at: datetime | None = None


@dataclass(slots=True)
class Dispute:
    """A chargeback on a payment, as its provider reports it (a webhook, or reconciliation).

    `id` is ours (`dsp_…`); `provider_dispute_id` is the provider's (Stripe's `du_…`/`dp_…`),
    unique per provider, so a report about a dispute we know updates it, never adds another.
    The payment keeps the money side (`Payment.disputed_minor`, `dispute_lost_minor`)."""

    id: str
    payment_id: str
    provider: str
    provider_dispute_id: str
    amount: Money
    reason: str
    status: DisputeStatus
    evidence_due_by: datetime | None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.status not in CLOSED_DISPUTE
