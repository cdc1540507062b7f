"""The payment aggregate: its transition table, its provider operations and its refunds.

State moves only along `NEXT`. Commands from clients that would break the table raise
`InvalidStateTransition`; signals from the outside world (webhooks, reconciliation) that arrive
for a state already passed are recorded as `STALE_SIGNAL_IGNORED` and change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from tillpoint.domain.errors import (
    AmountExceedsCapturable,
    AmountExceedsRefundable,
    InvalidStateTransition,
)
from tillpoint.domain.ids import new_id
from tillpoint.domain.mock_cards import check_test_card
from tillpoint.domain.money import Money


class PaymentStatus(StrEnum):
    INITIATED = "INITIATED"
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


S = PaymentStatus
NEXT: Final[Mapping[PaymentStatus, frozenset[PaymentStatus]]] = {
    S.INITIATED: frozenset(
        {S.PROCESSING, S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}
    ),
    S.PROCESSING: frozenset({S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}),
    S.AUTHORIZED: frozenset({S.CAPTURED, S.CANCELED}),
    S.CAPTURED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}
ACTIVE: Final = frozenset({S.INITIATED, S.PROCESSING, S.REQUIRES_ACTION, S.AUTHORIZED})
NOT_YET_AUTHORIZED: Final = frozenset({S.INITIATED, S.PROCESSING, S.REQUIRES_ACTION})
TERMINAL: Final = frozenset(s for s, nxt in NEXT.items() if not nxt)


def can_move(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in NEXT[current]


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class OperationKind(StrEnum):
    AUTHORIZE = "AUTHORIZE"
    SALE = "SALE"
    CAPTURE = "CAPTURE"
    VOID = "VOID"
    REFUND = "REFUND"


class OperationStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


# An open operation has no final answer yet: the janitor asks the provider about it.
OPEN_OPERATION_STATUSES: Final = frozenset({OperationStatus.PENDING, OperationStatus.UNKNOWN})


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


# Failure codes of our API (402 codes) → the upper-case reasons of published events.
EVENT_FAILURE_CODES: Final[Mapping[str, str]] = {
    "insufficient_funds": "INSUFFICIENT_FUNDS",
    "card_declined": "CARD_DECLINED",
    "expired_card": "CARD_EXPIRED",
    "invalid_card": "INVALID_CARD",
    "fraud_suspected": "FRAUD_SUSPECTED",
    "provider_error": "GATEWAY_ERROR",
    "provider_timeout": "TIMEOUT",
    "payment_expired": "TIMEOUT",
}


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
        return self.status in OPEN_OPERATION_STATUSES

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

    def unknown(self, now: datetime, reason: str, next_check_at: datetime) -> None:
        self.status = OperationStatus.UNKNOWN
        self.error_message = reason
        self.updated_at = now
        self.next_check_at = next_check_at


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


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """A `payment_events` row; `routing_key`/`message` are set when it is also published."""

    id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime
    routing_key: str | None = None
    message: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Payment:
    id: str
    order_id: str
    buyer_id: str
    status: PaymentStatus
    amount: Money
    capture_method: CaptureMethod
    provider: str
    payment_method: PaymentMethod
    created_at: datetime
    updated_at: datetime
    provider_payment_id: str | None = None
    authorized_minor: int = 0
    captured_minor: int = 0
    refunded_minor: int = 0
    refund_pending_minor: int = 0
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, Any] | None = None
    snapshot_id: str | None = None
    request_key: str | None = None
    sequence: int = 0
    version: int = 0
    operation_count: int = 0
    number: int | None = None  # assigned by the database when the payment is first saved
    events: list[RecordedEvent] = field(default_factory=list)

    # -- creation -----------------------------------------------------------------------------

    @classmethod
    def initiate(
        cls,
        *,
        order_id: str,
        buyer_id: str,
        amount: Money,
        capture_method: CaptureMethod,
        provider: str,
        payment_method: PaymentMethod,
        snapshot_id: str | None,
        request_key: str | None,
        now: datetime,
    ) -> Payment:
        check_test_card(provider, payment_method.token)
        payment = cls(
            id=new_id("pay"),
            order_id=order_id,
            buyer_id=buyer_id,
            status=PaymentStatus.INITIATED,
            amount=amount,
            capture_method=capture_method,
            provider=provider,
            payment_method=payment_method,
            snapshot_id=snapshot_id,
            request_key=request_key,
            created_at=now,
            updated_at=now,
        )
        payment._record(
            "PAYMENT_INITIATED",
            now,
            amount=amount.format(),
            currency=amount.currency,
            capture_method=capture_method.value,
            provider=provider,
        )
        return payment

    # -- derived amounts ------------------------------------------------------------------------

    def money(self, minor: int) -> Money:
        return Money(minor, self.amount.currency)

    @property
    def capturable(self) -> Money:
        if self.status is not PaymentStatus.AUTHORIZED:
            return self.money(0)
        return self.money(self.authorized_minor)

    @property
    def refundable(self) -> Money:
        return self.money(self.captured_minor - self.refunded_minor - self.refund_pending_minor)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    # -- provider operations ----------------------------------------------------------------

    def begin_operation(
        self,
        kind: OperationKind,
        amount: Money,
        now: datetime,
        refund_id: str | None = None,
        request_key: str | None = None,
        reason: str | None = None,
    ) -> Operation:
        """A `PENDING` operation whose provider key derives from our ids (`pay_…:capture:1`)."""
        self.operation_count += 1
        self.updated_at = now
        return Operation(
            id=new_id("txn"),
            payment_id=self.id,
            kind=kind,
            status=OperationStatus.PENDING,
            amount=amount,
            idempotency_key=f"{self.id}:{kind.value.lower()}:{self.operation_count}",
            created_at=now,
            updated_at=now,
            refund_id=refund_id,
            request_key=request_key,
            reason=reason,
        )

    def begin_confirmation(
        self, now: datetime, method: PaymentMethod | None, request_key: str | None = None
    ) -> Operation:
        if self.status is not PaymentStatus.INITIATED:
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status}; only an INITIATED payment can be confirmed",
                payment_id=self.id,
            )
        if method is not None:
            check_test_card(self.provider, method.token)
            self.payment_method = method
        kind = (
            OperationKind.SALE
            if self.capture_method is CaptureMethod.AUTOMATIC
            else OperationKind.AUTHORIZE
        )
        return self.begin_operation(kind, self.amount, now, request_key=request_key)

    def begin_capture(
        self, amount: Money | None, now: datetime, request_key: str | None = None
    ) -> Operation:
        if self.status is not PaymentStatus.AUTHORIZED:
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status}; only an AUTHORIZED payment can be captured",
                payment_id=self.id,
            )
        amount = amount or self.capturable
        if amount > self.capturable:
            raise AmountExceedsCapturable(
                f"cannot capture {amount.format()}: {self.capturable.format()} is authorized",
                payment_id=self.id,
            )
        return self.begin_operation(OperationKind.CAPTURE, amount, now, request_key=request_key)

    def begin_void(
        self, now: datetime, request_key: str | None = None, reason: str | None = None
    ) -> Operation:
        """The void's `reason` rides on its operation, so `canceled(op.reason, …)` publishes it
        whoever records the provider's answer."""
        if not can_move(self.status, PaymentStatus.CANCELED):
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status} and can no longer be voided",
                payment_id=self.id,
            )
        return self.begin_operation(
            OperationKind.VOID, self.amount, now, request_key=request_key, reason=reason
        )

    def begin_refund(
        self,
        amount: Money | None,
        reason: str | None,
        now: datetime,
        request_key: str | None = None,
    ) -> tuple[Refund, Operation]:
        if self.status is PaymentStatus.REFUNDED:
            raise AmountExceedsRefundable(
                f"payment {self.id} is fully refunded: nothing is left to refund",
                payment_id=self.id,
            )
        if self.status not in (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED):
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status}; only a captured payment can be refunded",
                payment_id=self.id,
            )
        amount = amount or self.refundable
        if amount.minor <= 0 or amount > self.refundable:
            raise AmountExceedsRefundable(
                f"cannot refund {amount.format()}: {self.refundable.format()} is refundable",
                payment_id=self.id,
            )
        self.refund_pending_minor += amount.minor
        refund = Refund(
            id=new_id("re"),
            payment_id=self.id,
            amount=amount,
            reason=reason,
            status=RefundStatus.PENDING,
            created_at=now,
        )
        return refund, self.begin_operation(
            OperationKind.REFUND, amount, now, refund.id, request_key=request_key
        )

    def cancel_unsent(
        self, reason: str | None, now: datetime, source: str, request_key: str | None = None
    ) -> Operation:
        """Cancel a payment that never reached its provider. The void is recorded as a finished
        operation with no provider call, so a retry of the same request finds it."""
        op = self.begin_void(now, request_key, reason)
        self.canceled(reason, now, source)
        op.succeed(now, None)
        op.error_message = "canceled before it reached the provider"
        return op

    # -- outcomes (from the provider's answer, a webhook, or reconciliation) ------------------

    def _stale(self, signal: str, now: datetime, source: str) -> bool:
        self._record(
            "STALE_SIGNAL_IGNORED", now, signal=signal, status=self.status.value, source=source
        )
        return False

    def _move_to(self, target: PaymentStatus, now: datetime) -> None:
        if not can_move(self.status, target):
            raise InvalidStateTransition(
                f"payment {self.id} cannot move from {self.status} to {target}",
                payment_id=self.id,
            )
        self.status = target
        self.updated_at = now

    def mark_processing(self, now: datetime, source: str, reason: str | None = None) -> bool:
        if self.status is PaymentStatus.PROCESSING:
            return False
        if not can_move(self.status, PaymentStatus.PROCESSING):
            return self._stale("processing", now, source)
        self._move_to(PaymentStatus.PROCESSING, now)
        self._record("PROVIDER_CONFIRMED", now, status="PROCESSING", source=source, reason=reason)
        return True

    def require_action(
        self,
        next_action: Mapping[str, Any],
        provider_payment_id: str | None,
        now: datetime,
        source: str,
    ) -> bool:
        if self.status is PaymentStatus.REQUIRES_ACTION:
            return False
        if not can_move(self.status, PaymentStatus.REQUIRES_ACTION):
            return self._stale("requires_action", now, source)
        self._move_to(PaymentStatus.REQUIRES_ACTION, now)
        self.provider_payment_id = provider_payment_id or self.provider_payment_id
        self.next_action = dict(next_action)
        self._record("ACTION_REQUIRED", now, next_action=dict(next_action), source=source)
        return True

    def authorized(
        self,
        amount: Money,
        provider_payment_id: str | None,
        now: datetime,
        source: str,
        risk_score: int | None = None,
    ) -> bool:
        if self.status not in NOT_YET_AUTHORIZED:
            return self._stale("authorized", now, source)
        self._move_to(PaymentStatus.AUTHORIZED, now)
        self.provider_payment_id = provider_payment_id or self.provider_payment_id
        self.authorized_minor = amount.minor
        self.next_action = None
        self._record(
            "AUTHORIZATION_SUCCEEDED",
            now,
            routing_key="payment.authorized",
            message={
                "amount": amount.format(),
                "currency": amount.currency,
                "payment_method": self.payment_method.public(),
                "risk_score": risk_score,
            },
            amount=amount.format(),
            provider_payment_id=self.provider_payment_id,
            source=source,
        )
        return True

    def captured(
        self,
        amount: Money,
        transaction_id: str,
        provider_payment_id: str | None,
        now: datetime,
        source: str,
    ) -> bool:
        """Money taken. From any not-yet-captured active state: a capture that overtakes its
        authorization still lands here (the authorization is implied)."""
        if self.status not in ACTIVE:
            return self._stale("captured", now, source)
        if self.status is not PaymentStatus.AUTHORIZED:
            self.authorized_minor = max(self.authorized_minor, amount.minor)
            self._record("PROVIDER_CONFIRMED", now, status="CAPTURED", source=source)
        if amount.minor > self.authorized_minor:
            raise AmountExceedsCapturable(
                f"provider captured {amount.format()} of {self.money(self.authorized_minor)}",
                payment_id=self.id,
            )
        self._move_to(PaymentStatus.CAPTURED, now)
        self.provider_payment_id = provider_payment_id or self.provider_payment_id
        self.captured_minor = amount.minor
        self.next_action = None
        self._record(
            "CAPTURE_SUCCEEDED",
            now,
            routing_key="payment.succeeded",
            message={
                "transaction_id": transaction_id,
                "amount": amount.format(),
                "currency": amount.currency,
                "processed_at": _rfc3339(now),
            },
            amount=amount.format(),
            transaction_id=transaction_id,
            source=source,
        )
        return True

    def failed(
        self,
        code: str,
        message: str | None,
        now: datetime,
        source: str,
        event_type: str = "AUTHORIZATION_FAILED",
    ) -> bool:
        if self.status not in NOT_YET_AUTHORIZED:
            return self._stale("failed", now, source)
        self._move_to(PaymentStatus.FAILED, now)
        self.failure_code, self.failure_message = code, message
        self.next_action = None
        self._record(
            event_type,
            now,
            routing_key="payment.failed",
            message={
                "failure_reason": message or code,
                "failure_code": EVENT_FAILURE_CODES.get(code, "UNKNOWN"),
            },
            failure_code=code,
            failure_message=message,
            source=source,
        )
        return True

    def canceled(self, reason: str | None, now: datetime, source: str) -> bool:
        if self.status is PaymentStatus.CANCELED:
            return False
        if not can_move(self.status, PaymentStatus.CANCELED):
            return self._stale("canceled", now, source)
        self._move_to(PaymentStatus.CANCELED, now)
        self.next_action = None
        self._record(
            "VOIDED",
            now,
            routing_key="payment.canceled",
            message={"reason": reason},
            reason=reason,
            source=source,
        )
        return True

    def capture_failed(self, op: Operation, now: datetime, source: str) -> None:
        self._record(
            "CAPTURE_FAILED",
            now,
            transaction_id=op.id,
            failure_code=op.error_code,
            failure_message=op.error_message,
            source=source,
        )

    def refund_succeeded(self, refund: Refund, now: datetime, source: str) -> bool:
        if refund.status is RefundStatus.SUCCEEDED:
            return False
        if refund.status is not RefundStatus.PENDING:
            # A failed refund released its amount, which another refund may since have taken:
            # counting it now could refund more than was captured. Settled refunds stay settled.
            return self._stale(f"refund_succeeded:{refund.id}", now, source)
        self.refund_pending_minor -= refund.amount.minor
        refund.status = RefundStatus.SUCCEEDED
        refund.processed_at = now
        self.refunded_minor += refund.amount.minor
        target = (
            PaymentStatus.REFUNDED
            if self.refunded_minor >= self.captured_minor
            else PaymentStatus.PARTIALLY_REFUNDED
        )
        self._move_to(target, now)
        self._record(
            "REFUND_SUCCEEDED",
            now,
            routing_key="payment.refunded",
            message={
                "refund_id": refund.id,
                "amount": refund.amount.format(),
                "currency": refund.amount.currency,
            },
            refund_id=refund.id,
            amount=refund.amount.format(),
            refunded_amount=self.money(self.refunded_minor).format(),
            source=source,
        )
        return True

    def refund_failed(
        self, refund: Refund, code: str | None, message: str | None, now: datetime, source: str
    ) -> None:
        if refund.status is not RefundStatus.PENDING:
            return
        self.refund_pending_minor -= refund.amount.minor
        refund.status = RefundStatus.FAILED
        refund.processed_at = now
        self.updated_at = now
        self._record(
            "REFUND_FAILED",
            now,
            refund_id=refund.id,
            failure_code=code,
            failure_message=message,
            source=source,
        )

    def note(self, event_type: str, now: datetime, **payload: Any) -> None:
        """Record an event that changes no state (`WEBHOOK_RECEIVED`, `RECONCILED`)."""
        self._record(event_type, now, **payload)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _record(
        self,
        event_type: str,
        now: datetime,
        *,
        routing_key: str | None = None,
        message: Mapping[str, Any] | None = None,
        **payload: Any,
    ) -> None:
        event_id = new_id("evt")
        body: dict[str, Any] | None = None
        if routing_key is not None:
            self.sequence += 1
            body = {
                "event_id": event_id,
                "order_id": self.order_id,
                "payment_id": self.id,
                **(message or {}),
                "sequence": self.sequence,
            }
            if "processed_at" not in body:
                body["occurred_at"] = _rfc3339(now)
        self.events.append(
            RecordedEvent(
                id=event_id,
                event_type=event_type,
                payload={"status": self.status.value, **payload},
                created_at=now,
                routing_key=routing_key,
                message=body,
            )
        )

    def take_events(self) -> list[RecordedEvent]:
        events, self.events = self.events, []
        return events

    def check_invariants(self) -> None:
        """`refunded ≤ captured ≤ authorized ≤ amount`, also enforced by database checks."""
        assert 0 <= self.refunded_minor + self.refund_pending_minor <= self.captured_minor
        assert self.captured_minor <= self.authorized_minor <= self.amount.minor


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z"
    )


rfc3339 = _rfc3339
