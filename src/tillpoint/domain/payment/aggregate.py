"""The payment aggregate: commands that begin provider operations, and `apply`, the one rule
that moves a payment when the outside world says how an operation ended.

Commands from clients that would break the transition table raise `InvalidStateTransition`;
signals (our calls' answers, webhooks, reconciliation) that arrive for a state already passed
are recorded as `StaleSignalIgnored` and change nothing.

Longer than the project's other modules on purpose: the guards of the commands, the one
outcome rule and the transitions it calls are read (and changed) together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from tillpoint.domain.errors import (
    AmountExceedsCapturable,
    AmountExceedsRefundable,
    InvalidStateTransition,
)
from tillpoint.domain.ids import new_id
from tillpoint.domain.mock_cards import check_test_card
from tillpoint.domain.money import Money
from tillpoint.domain.payment import events as ev
from tillpoint.domain.payment.outcome import NoAnswer, Outcome, ProviderStatus, Silence
from tillpoint.domain.payment.records import Dispute, Operation, PaymentMethod, Refund
from tillpoint.domain.payment.status import (
    ACTIVE,
    DISPUTE_STAGE,
    NOT_YET_AUTHORIZED,
    PAYMENT_OPERATIONS,
    CaptureMethod,
    DisputeStatus,
    OperationKind,
    OperationStatus,
    PaymentStatus,
    RefundStatus,
    can_move,
)

E = TypeVar("E", bound=ev.PaymentEvent)
K = OperationKind
P = ProviderStatus


@dataclass(frozen=True, slots=True)
class Change:
    """What one step did to a payment: the order follows it, the logs report it."""

    before: PaymentStatus
    after: PaymentStatus
    refunded: bool = False  # money went back (a partial refund moves no status)

    @property
    def moved(self) -> bool:
        return self.after is not self.before or self.refunded


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
    # Under open disputes or lost to closed ones (a won dispute gives its amount back), and of
    # that the lost part, which is no longer refundable.
    disputed_minor: int = 0
    dispute_lost_minor: int = 0
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, Any] | None = None
    snapshot_id: str | None = None
    request_key: str | None = None
    sequence: int = 0
    version: int = 0
    operation_count: int = 0
    number: int | None = None  # assigned by the database when the payment is first saved
    events: list[ev.PaymentEvent] = field(default_factory=list)

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
            ev.PaymentInitiated,
            now,
            amount=amount,
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
        """Captured, less what was refunded, is being refunded, or was lost to a chargeback."""
        taken = self.refunded_minor + self.refund_pending_minor + self.dispute_lost_minor
        return self.money(self.captured_minor - taken)

    # -- commands: each begins a PENDING provider operation -------------------------------------

    def _begin(
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
        kind = K.SALE if self.capture_method is CaptureMethod.AUTOMATIC else K.AUTHORIZE
        return self._begin(kind, self.amount, now, request_key=request_key)

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
        return self._begin(K.CAPTURE, amount, now, request_key=request_key)

    def begin_void(
        self, now: datetime, request_key: str | None = None, reason: str | None = None
    ) -> Operation:
        """The void's `reason` rides on its operation, so it is published with the
        cancellation whoever records the provider's answer."""
        if not can_move(self.status, PaymentStatus.CANCELED):
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status} and can no longer be voided",
                payment_id=self.id,
            )
        return self._begin(K.VOID, self.amount, now, request_key=request_key, reason=reason)

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
        op = self._begin(K.REFUND, amount, now, refund.id, request_key=request_key)
        return refund, op

    def cancel_unsent(
        self, reason: str | None, now: datetime, source: str, request_key: str | None = None
    ) -> tuple[Operation, Change]:
        """Cancel a payment that never reached its provider. The void is recorded as a finished
        operation with no provider call, so a retry of the same request finds it."""
        before = self.status
        op = self.begin_void(now, request_key, reason)
        self._cancel(reason, now, source)
        op.succeed(now, None)
        op.error_message = "canceled before it reached the provider"
        return op, Change(before, self.status)

    def expire(self, now: datetime, source: str) -> Change:
        """Nobody confirmed it in time (the payment TTL): canceled as `payment_expired`."""
        before = self.status
        self._cancel("payment_expired", now, source)
        return Change(before, self.status)

    # -- the one rule: what an operation's outcome does to the payment ------------------------

    def apply(
        self,
        outcome: Outcome | NoAnswer,
        *,
        op: Operation | None,
        now: datetime,
        source: str,
        check_at: datetime,
        refund: Refund | None = None,
        transaction_id: str | None = None,
    ) -> Change:
        """Move the payment (and settle `op` and `refund`) to where `outcome` says it ended.

        Used for the answers to our own calls, for webhooks and for reconciliation alike, so
        the same forward-only rules hold whatever the source. `op` is the open operation the
        outcome resolves, or None for a signal about the payment that no open operation waits
        for (then `transaction_id` names the ledger row a capture belongs to). An operation
        that stays open is asked about again at `check_at`.
        """
        before, refunded = self.status, self.refunded_minor
        if op is not None and not op.open:
            self._answered_again(outcome, op, refund, now, source)
        elif isinstance(outcome, NoAnswer):
            assert op is not None, "only a call we made can go unanswered"
            self._unanswered(op, outcome, refund, now, source, check_at)
        else:
            self._answered(outcome, op, refund, now, source, check_at, transaction_id)
        return Change(before, self.status, refunded=self.refunded_minor != refunded)

    def _answered(
        self,
        result: Outcome,
        op: Operation | None,
        refund: Refund | None,
        now: datetime,
        source: str,
        check_at: datetime,
        transaction_id: str | None,
    ) -> None:
        if result.provider_payment_id and not self.provider_payment_id:
            self.provider_payment_id = result.provider_payment_id
        amount = self.money(result.amount_minor)
        ledger_id = op.id if op is not None else transaction_id or result.provider_payment_id
        match (op.kind if op is not None else None, result.status):
            case (K.REFUND, P.REFUNDED) if refund is not None:
                refund.provider_refund_id = result.reference
                self._refund_succeeded(refund, now, source)
            case (K.REFUND, P.FAILED) if refund is not None:
                self._refund_failed(
                    refund, result.failure_code, result.failure_message, now, source
                )
            case (K.REFUND, _):
                assert op is not None
                op.reschedule(now, f"refund is {result.status}", check_at)
                return
            case (K.VOID, P.CANCELED):
                assert op is not None
                self._cancel(op.reason, now, source)
            case (_, P.DISPUTED):
                return  # a chargeback moves no payment state and settles no operation
            case (None, P.REFUNDED):
                # Money back with no refund of ours waiting for it: nothing to settle here.
                return self.ignore_stale("refunded", now, source)
            case (K.VOID, P.CAPTURED | P.REFUNDED):
                # Captured before the void reached it: the payment follows the money, and the
                # void did not happen.
                assert op is not None
                captured = transaction_id or result.provider_payment_id or op.id
                self._capture(amount, captured, result.provider_payment_id, now, source)
                op.fail(now, "already_captured", "the payment was captured before the void")
                return
            case (K.VOID | K.CAPTURE, P.AUTHORIZED):
                # The provider still holds the authorization: this capture or void has not
                # happened (yet). Never settled by guess: asked about again.
                assert op is not None
                op.reschedule(now, "the provider still holds the authorization", check_at)
                return
            case (K.VOID | K.CAPTURE, P.FAILED):
                assert op is not None
                op.fail(now, result.failure_code, result.failure_message)
                if op.kind is K.CAPTURE:
                    self._record(
                        ev.CaptureFailed,
                        now,
                        transaction_id=op.id,
                        failure_code=op.error_code,
                        failure_message=op.error_message,
                        source=source,
                    )
                return
            case (_, P.CAPTURED | P.REFUNDED):
                # A sale, a capture, or a capture overtaking its authorization (then the
                # authorization is implied: `payment.authorized` is only published for holds).
                assert ledger_id is not None
                self._capture(amount, ledger_id, result.provider_payment_id, now, source)
            case (_, P.AUTHORIZED):
                self._authorize(amount, result.provider_payment_id, now, source, result.risk_score)
            case (_, P.FAILED):
                code = result.failure_code or "card_declined"
                self._fail(code, result.failure_message, now, source)
            case (_, P.CANCELED):
                self._cancel("canceled at the provider", now, source)
                if op is not None:
                    op.fail(now, "canceled", "canceled at the provider")
                return
            case (_, P.REQUIRES_ACTION):
                self._require_action(
                    result.next_action or {}, result.provider_payment_id, now, source
                )
                if op is not None:
                    op.reschedule(now, "waiting for the customer", check_at)
                return
            case (_, P.PROCESSING):
                self._mark_processing(now, source)
                if op is not None:
                    op.reschedule(now, "provider is processing", check_at)
                return
        if op is None:
            return
        if result.status is P.FAILED:
            op.fail(now, result.failure_code, result.failure_message)
        else:
            op.succeed(now, result.reference)

    def _answered_again(
        self,
        outcome: Outcome | NoAnswer,
        op: Operation,
        refund: Refund | None,
        now: datetime,
        source: str,
    ) -> None:
        """An answer about an operation already settled (a repeated or late signal): the
        operation stays as it ended; a refund's own rule decides (a settled refund stays
        settled), anything else is a recorded no-op."""
        if refund is not None and isinstance(outcome, Outcome):
            if outcome.status is P.REFUNDED:
                return self._refund_succeeded(refund, now, source)
            if outcome.status is P.FAILED:
                return self._refund_failed(
                    refund, outcome.failure_code, outcome.failure_message, now, source
                )
        signal = outcome.status.value if isinstance(outcome, Outcome) else outcome.code
        self.ignore_stale(f"{op.kind.value.lower()}:{signal.lower()}", now, source)

    def _unanswered(
        self,
        op: Operation,
        silence: NoAnswer,
        refund: Refund | None,
        now: datetime,
        source: str,
        check_at: datetime,
    ) -> None:
        match silence.reason:
            case Silence.TIMEOUT:
                op.lose_track(now, silence.message, check_at)
                if op.kind in PAYMENT_OPERATIONS:
                    self._mark_processing(now, source, reason=silence.code)
            case Silence.UNREACHABLE | Silence.ERROR:
                op.fail(now, silence.code, silence.message)
                if refund is not None:
                    self._refund_failed(refund, silence.code, silence.message, now, source)
            case Silence.NOT_FOUND:
                op.fail(now, silence.code, "the provider has no record of this operation")
                if op.kind in PAYMENT_OPERATIONS:
                    never = "the provider never received the payment"
                    self._fail(Silence.TIMEOUT.value, never, now, source)
                elif refund is not None:
                    never = "the provider never received the refund"
                    self._refund_failed(refund, Silence.TIMEOUT.value, never, now, source)

    # -- transitions (each one is a no-op or a recorded stale signal when already passed) -------

    def ignore_stale(self, signal: str, now: datetime, source: str) -> None:
        """Record a signal for a state already passed; nothing changes."""
        self._record(ev.StaleSignalIgnored, now, signal=signal, source=source)

    def _move_to(self, target: PaymentStatus, now: datetime) -> None:
        if not can_move(self.status, target):
            raise InvalidStateTransition(
                f"payment {self.id} cannot move from {self.status} to {target}",
                payment_id=self.id,
            )
        self.status = target
        self.updated_at = now

    def _mark_processing(self, now: datetime, source: str, reason: str | None = None) -> None:
        if self.status is PaymentStatus.PROCESSING:
            return
        if not can_move(self.status, PaymentStatus.PROCESSING):
            return self.ignore_stale("processing", now, source)
        self._move_to(PaymentStatus.PROCESSING, now)
        self._record(ev.ProviderConfirmed, now, source=source, reason=reason)

    def _require_action(
        self,
        next_action: Mapping[str, Any],
        provider_payment_id: str | None,
        now: datetime,
        source: str,
    ) -> None:
        if self.status is PaymentStatus.REQUIRES_ACTION:
            return
        if not can_move(self.status, PaymentStatus.REQUIRES_ACTION):
            return self.ignore_stale("requires_action", now, source)
        self._move_to(PaymentStatus.REQUIRES_ACTION, now)
        self.provider_payment_id = provider_payment_id or self.provider_payment_id
        self.next_action = dict(next_action)
        self._record(ev.ActionRequired, now, next_action=dict(next_action), source=source)

    def _authorize(
        self,
        amount: Money,
        provider_payment_id: str | None,
        now: datetime,
        source: str,
        risk_score: int | None,
    ) -> None:
        if self.status not in NOT_YET_AUTHORIZED:
            return self.ignore_stale("authorized", now, source)
        self._move_to(PaymentStatus.AUTHORIZED, now)
        self.provider_payment_id = provider_payment_id or self.provider_payment_id
        self.authorized_minor = amount.minor
        self.next_action = None
        self._record(
            ev.PaymentAuthorized,
            now,
            amount=amount,
            provider_payment_id=self.provider_payment_id,
            payment_method=self.payment_method.public(),
            risk_score=risk_score,
            source=source,
        )

    def _capture(
        self,
        amount: Money,
        transaction_id: str,
        provider_payment_id: str | None,
        now: datetime,
        source: str,
    ) -> None:
        """Money taken. From any not-yet-captured active state: a capture that overtakes its
        authorization still lands here (the authorization is implied)."""
        if self.status not in ACTIVE:
            return self.ignore_stale("captured", now, source)
        if self.status is not PaymentStatus.AUTHORIZED:
            self.authorized_minor = max(self.authorized_minor, amount.minor)
            self._record(ev.ProviderConfirmed, now, status=PaymentStatus.CAPTURED, source=source)
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
            ev.PaymentCaptured, now, amount=amount, transaction_id=transaction_id, source=source
        )

    def _fail(self, code: str, message: str | None, now: datetime, source: str) -> None:
        if self.status not in NOT_YET_AUTHORIZED:
            return self.ignore_stale("failed", now, source)
        self._move_to(PaymentStatus.FAILED, now)
        self.failure_code, self.failure_message = code, message
        self.next_action = None
        self._record(
            ev.PaymentFailed, now, failure_code=code, failure_message=message, source=source
        )

    def _cancel(self, reason: str | None, now: datetime, source: str) -> None:
        if self.status is PaymentStatus.CANCELED:
            return
        if not can_move(self.status, PaymentStatus.CANCELED):
            return self.ignore_stale("canceled", now, source)
        self._move_to(PaymentStatus.CANCELED, now)
        self.next_action = None
        self._record(ev.PaymentCanceled, now, reason=reason, source=source)

    def _refund_succeeded(self, refund: Refund, now: datetime, source: str) -> None:
        if refund.status is RefundStatus.SUCCEEDED:
            return
        if refund.status is not RefundStatus.PENDING:
            # A failed refund released its amount, which another refund may since have taken:
            # counting it now could refund more than was captured. Settled refunds stay settled.
            return self.ignore_stale(f"refund_succeeded:{refund.id}", now, source)
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
            ev.PaymentRefunded,
            now,
            refund_id=refund.id,
            amount=refund.amount,
            refunded_amount=self.money(self.refunded_minor),
            source=source,
        )

    def _refund_failed(
        self, refund: Refund, code: str | None, message: str | None, now: datetime, source: str
    ) -> None:
        if refund.status is not RefundStatus.PENDING:
            return
        self.refund_pending_minor -= refund.amount.minor
        refund.status = RefundStatus.FAILED
        refund.processed_at = now
        self.updated_at = now
        self._record(
            ev.RefundFailed,
            now,
            refund_id=refund.id,
            failure_code=code,
            failure_message=message,
            source=source,
        )

    # -- disputes (chargebacks): money, never the payment's status -------------------------------

    def record_dispute(
        self,
        known: Dispute | None,
        *,
        reference: str,
        amount: Money,
        reason: str,
        status: DisputeStatus,
        evidence_due_by: datetime | None,
        now: datetime,
        source: str,
    ) -> Dispute | None:
        """Apply what the provider reports about one of its disputes (`reference`) on this
        payment; `known` is our record of that dispute, if any. Returns the dispute to store
        when it was opened or changed, None when the report changed nothing.

        Forward-only like the payment: `needs_response → under_review → won | lost`. A report
        of an earlier stage, or of another ending for a closed dispute, is a recorded stale
        signal; the same report again is a silent no-op (reconciliation reports every open
        dispute on each pass). Opening adds the amount to `disputed_minor`; losing moves it to
        `dispute_lost_minor`, which `refundable` subtracts; winning gives it back.
        """
        if amount.currency != self.amount.currency:
            raise ValueError(
                f"a dispute in {amount.currency} on a payment in {self.amount.currency}"
            )
        if status is DisputeStatus.LOST and (known is None or known.open):
            self._check_loss(amount)  # before anything changes
        if known is None:
            return self._open_dispute(
                reference, amount, reason, status, evidence_due_by, now, source
            )
        dispute = known
        if DISPUTE_STAGE[status] < DISPUTE_STAGE[dispute.status] or (
            not dispute.open and status is not dispute.status
        ):
            self.ignore_stale(f"dispute_{status.value}:{dispute.id}", now, source)
            return None
        if not dispute.open:
            return None  # closed as reported: nothing more can change
        unchanged = (status, amount, evidence_due_by) == (
            dispute.status,
            dispute.amount,
            dispute.evidence_due_by,
        ) and reason == dispute.reason
        if unchanged:
            return None
        if amount != dispute.amount:
            self._hold_for_dispute(amount.minor - dispute.amount.minor)
            dispute.amount = amount
        dispute.reason, dispute.evidence_due_by, dispute.updated_at = reason, evidence_due_by, now
        self.updated_at = now
        if status is DisputeStatus.WON or status is DisputeStatus.LOST:
            self._close_dispute(dispute, status, now, source)
        else:
            dispute.status = status
            self._record(
                ev.DisputeUpdated,
                now,
                dispute=_facts(dispute),
                disputed_amount=self.money(self.disputed_minor),
                source=source,
            )
        return dispute

    def _open_dispute(
        self,
        reference: str,
        amount: Money,
        reason: str,
        status: DisputeStatus,
        evidence_due_by: datetime | None,
        now: datetime,
        source: str,
    ) -> Dispute:
        if self.captured_minor == 0:
            # Nothing was taken yet as far as we know: the capture's own signal is still on its
            # way. Refused, so the report is tried again once it has arrived.
            raise InvalidStateTransition(
                f"payment {self.id} is {self.status}: no captured money to dispute",
                payment_id=self.id,
            )
        if amount.minor <= 0:
            raise ValueError(f"a dispute of {amount.format()}")
        self._hold_for_dispute(amount.minor)
        dispute = Dispute(
            id=new_id("dsp"),
            payment_id=self.id,
            provider=self.provider,
            provider_dispute_id=reference,
            amount=amount,
            reason=reason,
            status=status,  # as first reported (a dispute first heard of once it ended: closed)
            evidence_due_by=evidence_due_by,
            created_at=now,
            updated_at=now,
        )
        self.updated_at = now
        self._record(
            ev.PaymentDisputed,
            now,
            dispute=_facts(dispute),
            disputed_amount=self.money(self.disputed_minor),
            source=source,
        )
        if status is DisputeStatus.WON or status is DisputeStatus.LOST:
            self._close_dispute(dispute, status, now, source)
        return dispute

    def _check_loss(self, amount: Money) -> None:
        if amount > self.refundable:
            # Refunded (or being refunded) already: the provider cannot have taken it twice.
            # Refused, so it is tried again once a pending refund has settled.
            raise AmountExceedsRefundable(
                f"a lost dispute of {amount.format()}: only {self.refundable.format()} of "
                f"payment {self.id} is not refunded",
                payment_id=self.id,
            )

    def _hold_for_dispute(self, minor: int) -> None:
        if self.disputed_minor + minor > self.captured_minor:
            raise AmountExceedsRefundable(
                f"disputes of {self.money(self.disputed_minor + minor).format()} on a payment "
                f"that captured {self.money(self.captured_minor).format()}",
                payment_id=self.id,
            )
        if self.disputed_minor + minor < self.dispute_lost_minor:
            raise AmountExceedsRefundable(
                f"payment {self.id}: an open dispute cannot shrink below what was lost",
                payment_id=self.id,
            )
        self.disputed_minor += minor

    def _close_dispute(
        self, dispute: Dispute, status: DisputeStatus, now: datetime, source: str
    ) -> None:
        if status is DisputeStatus.LOST:
            self.dispute_lost_minor += dispute.amount.minor
        else:
            self.disputed_minor -= dispute.amount.minor
        dispute.status = status
        dispute.closed_at = dispute.updated_at = self.updated_at = now
        self._record(
            ev.PaymentDisputeClosed,
            now,
            dispute=_facts(dispute),
            disputed_amount=self.money(self.disputed_minor),
            refundable_amount=self.refundable,
            source=source,
        )

    # -- notes that change no state -------------------------------------------------------------

    def webhook_received(
        self,
        now: datetime,
        *,
        webhook_event_id: str,
        provider_event_id: str,
        provider_event_type: str,
        signal: str,
    ) -> None:
        self._record(
            ev.WebhookReceived,
            now,
            webhook_event_id=webhook_event_id,
            provider=self.provider,
            provider_event_id=provider_event_id,
            provider_event_type=provider_event_type,
            signal=signal,
        )

    def reconciled(
        self,
        now: datetime,
        op: Operation,
        provider_status: str,
        *,
        evidence: Mapping[str, Any] | None = None,
    ) -> None:
        self._record(
            ev.Reconciled,
            now,
            transaction_id=op.id,
            provider_status=provider_status,
            operation=op.kind.value,
            evidence=evidence,
        )

    def republish(self, routing_key: str, message_type: str, body: str, now: datetime) -> None:
        """Announce the latest outcome again, as the next message of this payment."""
        self._record(
            ev.OutcomeRepublished,
            now,
            routing_key=routing_key,
            message_type=message_type,
            body=body,
        )

    # -- bookkeeping ----------------------------------------------------------------------------

    def _record(self, kind: type[E], now: datetime, **fields: Any) -> E:
        fields.setdefault("status", self.status)
        if issubclass(kind, ev.Published):
            self.sequence += 1
            fields["sequence"] = self.sequence
        event = kind(
            id=new_id("evt"), payment_id=self.id, order_id=self.order_id, occurred_at=now, **fields
        )
        self.events.append(event)
        return event

    def take_events(self) -> list[ev.PaymentEvent]:
        events, self.events = self.events, []
        return events

    def check_invariants(self) -> None:
        """`refunded + pending + lost ≤ captured ≤ authorized ≤ amount` and `lost ≤ disputed ≤
        captured`, also enforced by database checks."""
        taken = self.refunded_minor + self.refund_pending_minor + self.dispute_lost_minor
        assert 0 <= self.refunded_minor + self.refund_pending_minor <= taken <= self.captured_minor
        assert 0 <= self.dispute_lost_minor <= self.disputed_minor <= self.captured_minor
        assert self.captured_minor <= self.authorized_minor <= self.amount.minor


def _facts(dispute: Dispute) -> ev.DisputeFacts:
    return ev.DisputeFacts(
        dispute_id=dispute.id,
        provider_dispute_id=dispute.provider_dispute_id,
        amount=dispute.amount,
        reason=dispute.reason,
        status=dispute.status.value,
        evidence_due_by=dispute.evidence_due_by,
    )


def payment_of_key(idempotency_key: str) -> str:
    """The payment an operation's provider idempotency key belongs to: `Payment._begin` makes
    every key `{payment_id}:{kind}:{n}` (`pay_…:capture:2` → `pay_…`)."""
    return idempotency_key.partition(":")[0]
