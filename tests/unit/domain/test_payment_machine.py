"""A Hypothesis state machine over the pure Payment and Order aggregates.

It drives random sequences of client commands (confirm, capture, void, refund, mock completion,
expiry) and everything the outside world says — the provider's answers to our calls (declines,
3-D Secure, async, timeouts, an unreachable provider), the janitor's lookups, webhooks, late or
repeated signals, refund answers — and every one of those goes through `Payment.apply`, the one
rule the service uses. After every step it checks what must always hold: only transitions of
the table happen, `refunded ≤ captured ≤ authorized ≤ amount`, the order mirrors its payment,
and published events count up without gaps.

Where the service refuses a command before the aggregate is touched (a second capture while
one is with the provider, mock completion after authorization), the machine does too.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tillpoint.domain.errors import (
    AmountExceedsCapturable,
    AmountExceedsRefundable,
    InvalidStateTransition,
)
from tillpoint.domain.money import Money
from tillpoint.domain.order import ORDER_NEXT, ChangeContext, FailurePolicy, Order, OrderStatus
from tillpoint.domain.payment import (
    NEXT,
    NOT_YET_AUTHORIZED,
    PAYMENT_OPERATIONS,
    CaptureMethod,
    Change,
    NoAnswer,
    Operation,
    OperationKind,
    OperationStatus,
    Outcome,
    Payment,
    PaymentMethod,
    PaymentStatus,
    ProviderStatus,
    Refund,
    RefundStatus,
    Silence,
    can_move,
)
from tillpoint.domain.payment import events as ev

S = PaymentStatus
OS = OrderStatus
P = ProviderStatus
OpS = OperationStatus
DECLINES = ["card_declined", "insufficient_funds", "expired_card", "fraud_suspected"]
SIGNALS = [P.AUTHORIZED, P.CAPTURED, P.FAILED, P.CANCELED, P.PROCESSING, P.REQUIRES_ACTION]
LOOKUPS = [*SIGNALS, P.REFUNDED, None]  # None: the provider has no record of the operation
RECHECK = timedelta(minutes=5)
ORDER_OF: dict[PaymentStatus, OrderStatus] = {
    S.CAPTURED: OS.PAID,
    S.PARTIALLY_REFUNDED: OS.PARTIALLY_REFUNDED,
    S.REFUNDED: OS.REFUNDED,
}
TIMEOUT = NoAnswer(Silence.TIMEOUT, "the provider timed out")
UNREACHABLE = NoAnswer(Silence.UNREACHABLE, "connection refused")
REFUSED = NoAnswer(Silence.ERROR, "the provider refused the call")
NOT_FOUND = NoAnswer(Silence.NOT_FOUND, "the provider has no record of it")


class PaymentLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
        self.sequences: list[int] = []
        # Refunds waiting for their answer, with their operations; and those answered.
        self.pending: list[tuple[Refund, Operation]] = []
        self.resolved: list[tuple[Refund, Operation]] = []
        self.succeeded_minor = 0
        self.confirmation: Operation | None = None  # an open SALE or AUTHORIZE
        self.in_flight: Operation | None = None  # an open CAPTURE or VOID (after a timeout)

    # -- set-up and bookkeeping ---------------------------------------------------------------

    @initialize(
        currency=st.sampled_from(["USD", "JPY", "KWD"]),
        minor=st.integers(1, 10**7),
        manual=st.booleans(),
        policy=st.sampled_from(list(FailurePolicy)),
    )
    def start(self, currency: str, minor: int, manual: bool, policy: FailurePolicy) -> None:
        amount = Money(minor, currency)
        self.policy = policy
        self.ctx = ChangeContext(source="test", actor="machine")
        self.order = Order.register("ord-1", "buyer-1", amount, self.now, self.ctx)
        self.order.take_history()
        self.payment = Payment.initiate(
            order_id="ord-1",
            buyer_id="buyer-1",
            amount=amount,
            capture_method=CaptureMethod.MANUAL if manual else CaptureMethod.AUTOMATIC,
            provider="mock",
            payment_method=PaymentMethod(token="pm_card_visa"),
            snapshot_id=None,
            request_key=None,
            now=self.now,
        )
        self.settle(S.INITIATED, None)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def says(
        self,
        status: ProviderStatus,
        minor: int | None = None,
        *,
        failure_code: str | None = None,
        reference: str | None = None,
    ) -> Outcome:
        p = self.payment
        next_action = {"type": "three_d_secure"} if status is P.REQUIRES_ACTION else None
        return Outcome(
            status=status,
            provider_payment_id="pi_1",
            amount_minor=p.amount.minor if minor is None else minor,
            currency=p.amount.currency,
            next_action=next_action,
            failure_code=failure_code,
            reference=reference,
        )

    def apply(
        self,
        outcome: Outcome | NoAnswer,
        op: Operation | None,
        *,
        source: str = "provider",
        refund: Refund | None = None,
    ) -> Change:
        """What every source of an outcome does: `Payment.apply`, nothing else."""
        now = self.tick()
        change = self.payment.apply(
            outcome,
            op=op,
            now=now,
            source=source,
            check_at=now + RECHECK,
            refund=refund,
            transaction_id=None if op is not None else "txn_hook",
        )
        return change

    def sent(self, op: Operation) -> Operation:
        """Phase 1 of every command: the operation is handed to the provider."""
        op.send(self.now, check_by=self.now + RECHECK)
        return op

    def settle(self, before: PaymentStatus, change: Change | None) -> list[ev.PaymentEvent]:
        """What a unit of work does after a step: check the path, move the order, collect."""
        p = self.payment
        events = p.take_events()
        path = [before, *(e.status for e in events), p.status]
        for a, b in itertools.pairwise(path):
            assert a == b or b in NEXT[a], f"illegal transition {a} -> {b} in {path}"
        published = [e for e in events if isinstance(e, ev.Published)]
        self.sequences.extend(e.sequence for e in published)
        refunded = any(isinstance(e, ev.PaymentRefunded) for e in events)
        moved = p.status is not before or refunded
        if change is not None:
            assert (change.before, change.after) == (before, p.status)
            assert change.refunded is refunded
            assert change.moved is moved
        if published:
            assert moved, f"{[e.type for e in published]} published without a change"
        if moved:
            order_before = self.order.status
            self.order.follow(p.status, self.policy, self.now, self.ctx, "payment")
            walked = [order_before]
            for entry in self.order.take_history():
                assert entry.from_status is walked[-1]
                assert entry.to_status in ORDER_NEXT[entry.from_status]
                walked.append(entry.to_status)
            assert walked[-1] is self.order.status
        self.track()
        return events

    def track(self) -> None:
        """Forget operations that are settled; count refunds as they settle."""
        if self.confirmation is not None and not self.confirmation.open:
            self.confirmation = None
        if self.in_flight is not None and not self.in_flight.open:
            self.in_flight = None
        for pair in list(self.pending):
            refund, op = pair
            if refund.status is RefundStatus.PENDING:
                assert op.open
                continue
            assert not op.open
            self.pending.remove(pair)
            self.resolved.append(pair)
            if refund.status is RefundStatus.SUCCEEDED:
                self.succeeded_minor += refund.amount.minor

    def money(self, minor: int) -> Money:
        return self.payment.money(minor)

    def confirmed(self, kind: OperationKind) -> ProviderStatus:
        return P.CAPTURED if kind is OperationKind.SALE else P.AUTHORIZED

    # -- client commands ------------------------------------------------------------------------

    @rule(
        # success is the road to capture and refunds, where most of the rules live
        answer=st.sampled_from(
            ["success"] * 4 + ["decline", "three_ds", "async", "timeout", "unreachable", "refused"]
        ),
        code=st.sampled_from(DECLINES),
    )
    def confirm(self, answer: str, code: str) -> None:
        p, before = self.payment, self.payment.status
        if before is not S.INITIATED:
            with pytest.raises(InvalidStateTransition):
                p.begin_confirmation(self.tick(), None)
            assert p.status is before
            return
        op = self.sent(p.begin_confirmation(self.tick(), None))
        expected_kind = OperationKind.SALE if p.capture_method is CaptureMethod.AUTOMATIC else None
        assert op.kind is (expected_kind or OperationKind.AUTHORIZE)
        assert op.idempotency_key == f"{p.id}:{op.kind.value.lower()}:{p.operation_count}"
        answers: dict[str, tuple[Outcome | NoAnswer, PaymentStatus, OperationStatus]] = {
            "success": (
                self.says(self.confirmed(op.kind)),
                S(self.confirmed(op.kind)),
                OpS.SUCCEEDED,
            ),
            "decline": (self.says(P.FAILED, failure_code=code), S.FAILED, OpS.FAILED),
            "three_ds": (self.says(P.REQUIRES_ACTION), S.REQUIRES_ACTION, OpS.PENDING),
            "async": (self.says(P.PROCESSING), S.PROCESSING, OpS.PENDING),
            "timeout": (TIMEOUT, S.PROCESSING, OpS.UNKNOWN),
            "unreachable": (UNREACHABLE, S.INITIATED, OpS.FAILED),
            "refused": (REFUSED, S.INITIATED, OpS.FAILED),
        }
        outcome, status, op_status = answers[answer]
        change = self.apply(outcome, op)
        assert (p.status, op.status) == (status, op_status)
        if p.status is S.FAILED:
            assert p.failure_code == code
        self.confirmation = op if op.open else None
        self.settle(before, change)

    @rule(success=st.booleans(), code=st.sampled_from(DECLINES))
    def mock_complete(self, success: bool, code: str) -> None:
        """The customer finishes 3-D Secure (or the mock is told how an async payment ends):
        the open confirmation is answered, or one is begun for an unsent payment."""
        p, before = self.payment, self.payment.status
        if before not in NOT_YET_AUTHORIZED:
            return  # the use case refuses with 409 before the aggregate is touched
        op = self.confirmation
        if op is None:
            if before is not S.INITIATED:  # moved by a signal, with no confirmation open
                with pytest.raises(InvalidStateTransition):
                    p.begin_confirmation(self.tick(), None)
                return
            op = self.sent(p.begin_confirmation(self.tick(), None))
        outcome = self.says(self.confirmed(op.kind)) if success else self.says(P.FAILED)
        change = self.apply(outcome, op, source="api")
        assert not op.open
        assert p.status is (S(self.confirmed(op.kind)) if success else S.FAILED)
        self.settle(before, change)

    @rule(
        share=st.integers(1, 120),
        everything=st.booleans(),
        answer=st.sampled_from(["ok", "ok", "refused", "timeout", "unreachable"]),
    )
    def capture(self, share: int, everything: bool, answer: str) -> None:
        p, before = self.payment, self.payment.status
        if before is not S.AUTHORIZED:
            with pytest.raises(InvalidStateTransition):
                p.begin_capture(None, self.tick())
            return
        if self.in_flight is not None:
            return  # one capture or void at a time: the use case refuses with 409
        amount = None if everything else self.money(max(1, p.authorized_minor * share // 100))
        if amount is not None and amount.minor > p.authorized_minor:
            with pytest.raises(AmountExceedsCapturable):
                p.begin_capture(amount, self.tick())
            assert p.status is S.AUTHORIZED
            return
        op = self.sent(p.begin_capture(amount, self.tick()))
        assert op.amount.minor == (amount or self.money(p.authorized_minor)).minor
        answers: dict[str, Outcome | NoAnswer] = {
            "ok": self.says(P.CAPTURED, op.amount.minor),
            "refused": self.says(P.FAILED, failure_code="capture_failed"),
            "timeout": TIMEOUT,
            "unreachable": UNREACHABLE,
        }
        outcome = answers[answer]
        change = self.apply(outcome, op, source="api")
        if answer == "ok":
            assert (p.status, p.captured_minor) == (S.CAPTURED, op.amount.minor)
            assert op.status is OpS.SUCCEEDED
        else:
            assert p.status is S.AUTHORIZED
            assert op.status is (OpS.UNKNOWN if answer == "timeout" else OpS.FAILED)
        self.in_flight = op if op.open else None
        events = self.settle(before, change)
        if answer == "refused":
            assert [e.type for e in events] == ["CAPTURE_FAILED"]

    @rule(answer=st.sampled_from(["ok", "ok", "refused", "timeout"]))
    def void(self, answer: str) -> None:
        p, before = self.payment, self.payment.status
        if not can_move(before, S.CANCELED):
            with pytest.raises(InvalidStateTransition):
                p.begin_void(self.tick())
            return
        if self.in_flight is not None:
            return  # one capture or void at a time: the use case refuses with 409
        if before is S.INITIATED:  # nothing reached the provider: canceled without a call
            op, change = p.cancel_unsent("requested", self.tick(), "api")
            assert (p.status, op.status) == (S.CANCELED, OpS.SUCCEEDED)
        else:
            op = self.sent(p.begin_void(self.tick(), reason="requested"))
            answers: dict[str, Outcome | NoAnswer] = {
                "ok": self.says(P.CANCELED),
                "refused": self.says(P.FAILED, failure_code="void_failed"),
                "timeout": TIMEOUT,
            }
            outcome = answers[answer]
            change = self.apply(outcome, op, source="api")
            expected = {"ok": OpS.SUCCEEDED, "refused": OpS.FAILED, "timeout": OpS.UNKNOWN}
            assert op.status is expected[answer]
            assert p.status is (S.CANCELED if answer == "ok" else before)
            self.in_flight = op if op.open else None
        events = self.settle(before, change)
        if p.status is S.CANCELED:
            [canceled] = [e for e in events if isinstance(e, ev.PaymentCanceled)]
            assert canceled.reason == "requested"

    @rule(share=st.integers(0, 110), everything=st.booleans())
    def refund(self, share: int, everything: bool) -> None:
        p, before = self.payment, self.payment.status
        if before not in (S.CAPTURED, S.PARTIALLY_REFUNDED):
            # Fully refunded: nothing is left (API.md's code), rather than a wrong state.
            refused = AmountExceedsRefundable if before is S.REFUNDED else InvalidStateTransition
            with pytest.raises(refused):
                p.begin_refund(None, None, self.tick())
            return
        refundable = p.refundable.minor
        amount = None if everything else self.money(p.captured_minor * share // 100)
        wanted = refundable if amount is None else amount.minor
        if wanted <= 0 or wanted > refundable:
            with pytest.raises(AmountExceedsRefundable):
                p.begin_refund(amount, None, self.tick())
            assert p.refundable.minor == refundable
            return
        refund, op = p.begin_refund(amount, "test", self.tick())
        self.sent(op)
        assert (refund.amount.minor, op.amount.minor, op.refund_id) == (wanted, wanted, refund.id)
        assert p.refundable.minor == refundable - wanted
        self.pending.append((refund, op))
        self.settle(before, None)

    @precondition(
        lambda self: (
            hasattr(self, "payment")
            and self.payment.status is S.INITIATED
            and self.confirmation is None
        )
    )
    @rule()
    def expire(self) -> None:
        """Nobody confirmed it within the payment TTL: the janitor cancels it."""
        change = self.payment.expire(self.tick(), "janitor")
        assert self.payment.status is S.CANCELED
        [canceled] = [
            e for e in self.settle(S.INITIATED, change) if isinstance(e, ev.PaymentCanceled)
        ]
        assert canceled.reason == "payment_expired"

    # -- what the outside world says ----------------------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(
        pick=st.integers(0, 10),
        answer=st.sampled_from(["success", "success", "failed", "timeout", "unreachable", "slow"]),
    )
    def refund_answer(self, pick: int, answer: str) -> None:
        before = self.payment.status
        refund, op = self.pending[pick % len(self.pending)]
        answers: dict[str, tuple[Outcome | NoAnswer, RefundStatus]] = {
            "success": (
                self.says(P.REFUNDED, refund.amount.minor, reference="re_1"),
                RefundStatus.SUCCEEDED,
            ),
            "failed": (self.says(P.FAILED, failure_code="refund_failed"), RefundStatus.FAILED),
            "timeout": (TIMEOUT, RefundStatus.PENDING),
            "unreachable": (UNREACHABLE, RefundStatus.FAILED),
            "slow": (self.says(P.PROCESSING), RefundStatus.PENDING),
        }
        outcome, status = answers[answer]
        change = self.apply(outcome, op, refund=refund)
        assert refund.status is status
        if answer == "success":
            assert refund.provider_refund_id == "re_1"
        self.settle(before, change)

    @precondition(lambda self: bool(self.resolved))
    @rule(pick=st.integers(0, 10), success=st.booleans())
    def repeated_refund_answer(self, pick: int, success: bool) -> None:
        """The answer about a refund already settled (either way) arrives again."""
        p, before = self.payment, self.payment.status
        refund, op = self.resolved[pick % len(self.resolved)]
        status, amounts = refund.status, (p.refunded_minor, p.refund_pending_minor)
        outcome = self.says(P.REFUNDED if success else P.FAILED, refund.amount.minor)
        change = self.apply(outcome, op, source="webhook", refund=refund)
        assert refund.status is status
        assert (p.refunded_minor, p.refund_pending_minor) == amounts
        assert p.status is before
        assert not change.moved
        self.settle(before, change)

    @precondition(
        lambda self: self.confirmation is not None or self.in_flight is not None or self.pending
    )
    @rule(pick=st.integers(0, 10), truth=st.sampled_from(LOOKUPS))
    def janitor_lookup(self, pick: int, truth: ProviderStatus | None) -> None:
        """The janitor asks the provider about an open operation and applies what it hears
        (a record of any status, or none at all), then notes the reconciliation."""
        p, before = self.payment, self.payment.status
        open_ops = [o for o in (self.confirmation, self.in_flight) if o is not None]
        candidates: list[tuple[Operation, Refund | None]] = [(o, None) for o in open_ops]
        candidates += [(op, refund) for refund, op in self.pending]
        op, refund = candidates[pick % len(candidates)]
        outcome = NOT_FOUND if truth is None else self.says(truth, op.amount.minor)
        op.checked()
        change = self.apply(outcome, op, source="janitor", refund=refund)
        p.reconciled(self.now, op, truth.value if truth else "NOT_FOUND")
        if truth is None:  # it never happened: the operation failed, and a payment it was to
            assert op.status is OpS.FAILED  # take somewhere failed with it
            if op.kind in PAYMENT_OPERATIONS and before in NOT_YET_AUTHORIZED:
                assert (p.status, p.failure_code) == (S.FAILED, Silence.TIMEOUT.value)
        if truth is P.FAILED and op.kind in (OperationKind.CAPTURE, OperationKind.VOID):
            assert (op.status, p.status) == (OpS.FAILED, before)
        events = self.settle(before, change)
        assert events[-1].type == "RECONCILED"

    @rule(signal=st.sampled_from([*SIGNALS, P.DISPUTED]), code=st.sampled_from(DECLINES))
    def late_or_repeated_signal(self, signal: ProviderStatus, code: str) -> None:
        """A webhook about the payment, possibly for a state already passed. It settles the
        open confirmation when one waits for it (as the webhook use case does)."""
        p, before = self.payment, self.payment.status
        amounts = (p.authorized_minor, p.captured_minor, p.refunded_minor)
        minor = p.authorized_minor if before is S.AUTHORIZED else p.amount.minor
        op = self.confirmation if before in NOT_YET_AUTHORIZED else None
        failure = {"failure_code": code} if signal is P.FAILED else {}
        change = self.apply(self.says(signal, minor, **failure), op, source="webhook")
        if not change.moved:
            assert p.status is before
            assert (p.authorized_minor, p.captured_minor, p.refunded_minor) == amounts
        if signal is P.DISPUTED:
            assert not change.moved
        self.settle(before, change)

    # -- what always holds --------------------------------------------------------------------

    @invariant()
    def amounts_nest(self) -> None:
        if not hasattr(self, "payment"):
            return
        p = self.payment
        p.check_invariants()
        assert 0 <= p.refunded_minor <= p.captured_minor <= p.authorized_minor <= p.amount.minor
        assert p.refunded_minor == self.succeeded_minor
        assert p.refund_pending_minor == sum(r.amount.minor for r, _ in self.pending)
        assert all(r.status is RefundStatus.PENDING for r, _ in self.pending)
        if p.status in (S.REFUNDED, S.PARTIALLY_REFUNDED):
            assert p.refunded_minor > 0
        if p.status is S.REFUNDED:
            assert p.refunded_minor == p.captured_minor

    @invariant()
    def order_mirrors_payment(self) -> None:
        if not hasattr(self, "payment"):
            return
        status = self.payment.status
        if status in ORDER_OF:
            expected = ORDER_OF[status]
        elif status in (S.FAILED, S.CANCELED) and self.policy is FailurePolicy.CANCEL:
            expected = OS.CANCELED
        else:
            expected = OS.PAYMENT_PENDING
        assert self.order.status is expected, (status, self.order.status)

    @invariant()
    def published_sequence_counts_up(self) -> None:
        assert self.sequences == list(range(1, len(self.sequences) + 1))
        if hasattr(self, "payment"):
            assert self.payment.sequence == len(self.sequences)

    @invariant()
    def open_operations_wait_to_be_asked_about(self) -> None:
        for op in (self.confirmation, self.in_flight, *(op for _, op in self.pending)):
            if op is not None:
                assert op.open
                assert op.next_check_at is not None


PaymentLifecycle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPaymentLifecycle = PaymentLifecycle.TestCase
