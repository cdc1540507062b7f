"""A Hypothesis state machine over the pure Payment and Order aggregates.

It drives random sequences of client commands (confirm, capture, void, refund), provider
answers (declines, 3-D Secure, async, timeouts, mock completion) and the outside world's late
or repeated signals, and checks after every step what must always hold: only transitions of
the table happen, `refunded ≤ captured ≤ authorized ≤ amount`, the order mirrors its payment,
and published events count up without gaps.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

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
    CaptureMethod,
    OperationKind,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
    can_move,
)

S = PaymentStatus
OS = OrderStatus
DECLINES = ["card_declined", "insufficient_funds", "expired_card", "fraud_suspected"]
SIGNALS = ["authorized", "captured", "failed", "canceled", "processing", "requires_action"]
ORDER_OF: dict[PaymentStatus, OrderStatus] = {
    S.CAPTURED: OS.PAID,
    S.PARTIALLY_REFUNDED: OS.PARTIALLY_REFUNDED,
    S.REFUNDED: OS.REFUNDED,
}


class PaymentLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
        self.sequences: list[int] = []
        self.pending: list[Refund] = []
        self.resolved: list[Refund] = []
        self.succeeded_minor = 0

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
        self.settle(S.INITIATED)

    def tick(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def settle(self, before: PaymentStatus) -> None:
        """What a unit of work does after a step: check the path, move the order, collect."""
        events = self.payment.take_events()
        path = [before, *(S(e.payload["status"]) for e in events), self.payment.status]
        for a, b in itertools.pairwise(path):
            assert a == b or b in NEXT[a], f"illegal transition {a} -> {b} in {path}"
        for event in events:
            if event.routing_key is not None:
                assert event.message is not None
                self.sequences.append(event.message["sequence"])
        refunded = any(e.event_type == "REFUND_SUCCEEDED" for e in events)
        if self.payment.status is not before or refunded:
            order_before = self.order.status
            self.order.follow(self.payment.status, self.policy, self.now, self.ctx, "payment")
            walked = [order_before]
            for entry in self.order.take_history():
                assert entry.from_status is walked[-1]
                assert entry.to_status in ORDER_NEXT[entry.from_status]
                walked.append(entry.to_status)
            assert walked[-1] is self.order.status

    def money(self, minor: int) -> Money:
        return self.payment.money(minor)

    def provider_says(self, success: bool, code: str, kind: OperationKind) -> None:
        """The provider's answer to a SALE or AUTHORIZE, as `apply_result` applies it."""
        p, now = self.payment, self.tick()
        if not success:
            p.failed(code, "declined", now, "test")
        elif kind is OperationKind.SALE:
            p.captured(p.amount, "txn_sale", "pi_1", now, "test")
        else:
            p.authorized(p.amount, "pi_1", now, "test", 10)

    # -- client commands ------------------------------------------------------------------------

    @rule(
        # success is the road to capture and refunds, where most of the rules live
        outcome=st.sampled_from(["success"] * 4 + ["decline", "three_ds", "async", "timeout"]),
        code=st.sampled_from(DECLINES),
    )
    def confirm(self, outcome: str, code: str) -> None:
        p, before = self.payment, self.payment.status
        if before is not S.INITIATED:
            with pytest.raises(InvalidStateTransition):
                p.begin_confirmation(self.tick(), None)
            assert p.status is before
            return
        op = p.begin_confirmation(self.tick(), None)
        expected = OperationKind.SALE if p.capture_method is CaptureMethod.AUTOMATIC else None
        assert op.kind is (expected or OperationKind.AUTHORIZE)
        match outcome:
            case "success" | "decline":
                self.provider_says(outcome == "success", code, op.kind)
            case "three_ds":
                p.require_action({"type": "three_d_secure"}, "pi_1", self.tick(), "test")
            case _:
                p.mark_processing(self.tick(), "test", reason=outcome)
        self.settle(before)

    @rule(success=st.booleans(), code=st.sampled_from(DECLINES))
    def mock_complete(self, success: bool, code: str) -> None:
        p, before = self.payment, self.payment.status
        if before not in NOT_YET_AUTHORIZED:
            return  # the use case refuses with 409 before the aggregate is touched
        kind = (
            OperationKind.SALE
            if p.capture_method is CaptureMethod.AUTOMATIC
            else OperationKind.AUTHORIZE
        )
        if before is S.INITIATED:
            kind = p.begin_confirmation(self.tick(), None).kind
        self.provider_says(success, code, kind)
        self.settle(before)

    @rule(share=st.integers(1, 120), everything=st.booleans(), provider_ok=st.booleans())
    def capture(self, share: int, everything: bool, provider_ok: bool) -> None:
        p, before = self.payment, self.payment.status
        if before is not S.AUTHORIZED:
            with pytest.raises(InvalidStateTransition):
                p.begin_capture(None, self.tick())
            return
        amount = None if everything else self.money(max(1, p.authorized_minor * share // 100))
        if amount is not None and amount.minor > p.authorized_minor:
            with pytest.raises(AmountExceedsCapturable):
                p.begin_capture(amount, self.tick())
            assert p.status is S.AUTHORIZED
            return
        op = p.begin_capture(amount, self.tick())
        assert op.amount.minor == (amount or self.money(p.authorized_minor)).minor
        if provider_ok:
            p.captured(op.amount, op.id, None, self.tick(), "test")
            assert p.captured_minor == op.amount.minor
        else:
            op.fail(self.tick(), "capture_failed", "nothing capturable")
            p.capture_failed(op, self.tick(), "test")
            assert p.status is S.AUTHORIZED
        self.settle(before)

    @rule()
    def void(self) -> None:
        p, before = self.payment, self.payment.status
        if not can_move(before, S.CANCELED):
            with pytest.raises(InvalidStateTransition):
                p.begin_void(self.tick())
            return
        if before is not S.INITIATED:
            p.begin_void(self.tick())
        assert p.canceled("requested", self.tick(), "test")
        assert p.status is S.CANCELED
        self.settle(before)

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
        assert (refund.amount.minor, op.amount.minor, op.refund_id) == (wanted, wanted, refund.id)
        assert p.refundable.minor == refundable - wanted
        self.pending.append(refund)
        self.settle(before)

    # -- the provider's answers and the outside world ------------------------------------------

    @precondition(lambda self: bool(self.pending))
    @rule(pick=st.integers(0, 10), success=st.booleans())
    def refund_answer(self, pick: int, success: bool) -> None:
        p, before = self.payment, self.payment.status
        refund = self.pending.pop(pick % len(self.pending))
        if success:
            assert p.refund_succeeded(refund, self.tick(), "test")
            self.succeeded_minor += refund.amount.minor
        else:
            p.refund_failed(refund, "refund_failed", "no", self.tick(), "test")
        self.resolved.append(refund)
        self.settle(before)

    @precondition(lambda self: bool(self.resolved))
    @rule(pick=st.integers(0, 10), success=st.booleans())
    def repeated_refund_answer(self, pick: int, success: bool) -> None:
        """A webhook for a refund already settled (either way) changes no amount."""
        p, before = self.payment, self.payment.status
        refund = self.resolved[pick % len(self.resolved)]
        status, amounts = refund.status, (p.refunded_minor, p.refund_pending_minor)
        if success:
            assert not p.refund_succeeded(refund, self.tick(), "webhook")
        else:
            p.refund_failed(refund, "refund_failed", "no", self.tick(), "webhook")
        assert refund.status is status
        assert (p.refunded_minor, p.refund_pending_minor) == amounts
        assert p.status is before
        self.settle(before)

    @rule(signal=st.sampled_from(SIGNALS), code=st.sampled_from(DECLINES))
    def late_or_repeated_signal(self, signal: str, code: str) -> None:
        """A webhook or reconciliation answer, possibly for a state already passed."""
        p, before, now = self.payment, self.payment.status, self.tick()
        amounts = (p.authorized_minor, p.captured_minor, p.refunded_minor)
        amount = self.money(p.authorized_minor if before is S.AUTHORIZED else p.amount.minor)
        handlers: dict[str, Any] = {
            "authorized": lambda: p.authorized(p.amount, "pi_1", now, "webhook"),
            "captured": lambda: p.captured(amount, "txn_hook", "pi_1", now, "webhook"),
            "failed": lambda: p.failed(code, "declined", now, "webhook"),
            "canceled": lambda: p.canceled(None, now, "webhook"),
            "processing": lambda: p.mark_processing(now, "webhook"),
            "requires_action": lambda: p.require_action({"type": "x"}, "pi_1", now, "webhook"),
        }
        moved = handlers[signal]()
        if not moved:
            assert p.status is before
            assert (p.authorized_minor, p.captured_minor, p.refunded_minor) == amounts
        self.settle(before)

    # -- what always holds --------------------------------------------------------------------

    @invariant()
    def amounts_nest(self) -> None:
        if not hasattr(self, "payment"):
            return
        p = self.payment
        p.check_invariants()
        assert 0 <= p.refunded_minor <= p.captured_minor <= p.authorized_minor <= p.amount.minor
        assert p.refunded_minor == self.succeeded_minor
        assert p.refund_pending_minor == sum(r.amount.minor for r in self.pending)
        assert all(r.status is RefundStatus.PENDING for r in self.pending)
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


PaymentLifecycle.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPaymentLifecycle = PaymentLifecycle.TestCase
