"""The dispute rule of the payment aggregate (`Payment.record_dispute`): forward-only statuses,
and the money a dispute holds or takes, which the amount invariants include."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.unit.domain.support import NOW, captured, new_payment
from tillpoint.domain.errors import AmountExceedsRefundable, InvalidStateTransition
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Dispute, DisputeStatus, Payment, PaymentStatus, RefundStatus
from tillpoint.domain.payment import events as ev

D = DisputeStatus
DUE = NOW + timedelta(days=10)


def report(
    payment: Payment,
    known: Dispute | None,
    status: DisputeStatus,
    minor: int = 4_000,
    *,
    reference: str = "du_1",
    due: object = DUE,
) -> Dispute | None:
    return payment.record_dispute(
        known,
        reference=reference,
        amount=Money(minor, payment.amount.currency),
        reason="fraudulent",
        status=status,
        evidence_due_by=DUE if due is DUE else None,
        now=NOW,
        source="test",
    )


def types(payment: Payment) -> list[str]:
    return [e.type for e in payment.take_events()]


class TestOpening:
    def test_holds_the_amount_and_announces_it(self) -> None:
        payment = captured(10_000)
        dispute = report(payment, None, D.NEEDS_RESPONSE)
        assert dispute is not None
        assert dispute.id.startswith("dsp_")
        assert (dispute.provider_dispute_id, dispute.status, dispute.open) == (
            "du_1",
            D.NEEDS_RESPONSE,
            True,
        )
        assert (payment.disputed_minor, payment.dispute_lost_minor) == (4_000, 0)
        assert payment.refundable == Money(10_000, "USD")  # an open dispute takes nothing yet
        assert payment.status is PaymentStatus.CAPTURED
        (opened,) = payment.take_events()
        assert isinstance(opened, ev.PaymentDisputed)
        assert (opened.dispute.status, opened.disputed_amount, opened.sequence) == (
            "needs_response",
            Money(4_000, "USD"),
            payment.sequence,
        )

    def test_needs_captured_money(self) -> None:
        payment = new_payment()
        with pytest.raises(InvalidStateTransition):
            report(payment, None, D.NEEDS_RESPONSE)
        assert payment.disputed_minor == 0

    def test_never_more_than_was_captured(self) -> None:
        payment = captured(10_000)
        report(payment, None, D.NEEDS_RESPONSE, 6_000)
        with pytest.raises(AmountExceedsRefundable):
            report(payment, None, D.NEEDS_RESPONSE, 4_001, reference="du_2")
        assert payment.disputed_minor == 6_000

    def test_first_heard_of_once_lost_opens_and_closes_it(self) -> None:
        payment = captured(10_000)
        dispute = report(payment, None, D.LOST)
        assert dispute is not None
        assert (dispute.status, dispute.closed_at) == (D.LOST, NOW)
        assert types(payment) == ["DISPUTE_OPENED", "DISPUTE_CLOSED"]
        assert payment.refundable == Money(6_000, "USD")


class TestMovingOn:
    def test_under_review_is_an_audit_row_only(self) -> None:
        payment = captured()
        dispute = report(payment, None, D.NEEDS_RESPONSE)
        payment.take_events()
        before = payment.sequence
        assert report(payment, dispute, D.UNDER_REVIEW) is dispute
        assert dispute is not None
        assert dispute.status is D.UNDER_REVIEW
        (updated,) = payment.take_events()
        assert isinstance(updated, ev.DisputeUpdated)
        assert payment.sequence == before  # not published

    def test_the_same_report_again_changes_nothing_silently(self) -> None:
        payment = captured()
        dispute = report(payment, None, D.UNDER_REVIEW)
        payment.take_events()
        assert report(payment, dispute, D.UNDER_REVIEW) is None
        assert payment.take_events() == []

    def test_a_new_deadline_is_an_update(self) -> None:
        payment = captured()
        dispute = report(payment, None, D.NEEDS_RESPONSE, due=None)
        payment.take_events()
        assert report(payment, dispute, D.NEEDS_RESPONSE) is dispute
        assert dispute is not None
        assert dispute.evidence_due_by == DUE
        assert types(payment) == ["DISPUTE_UPDATED"]

    @pytest.mark.parametrize(
        ("recorded", "late"),
        [
            (D.UNDER_REVIEW, D.NEEDS_RESPONSE),
            (D.WON, D.UNDER_REVIEW),
            (D.LOST, D.NEEDS_RESPONSE),
            (D.WON, D.LOST),
            (D.LOST, D.WON),
        ],
    )
    def test_a_stale_status_never_moves_it_back(
        self, recorded: DisputeStatus, late: DisputeStatus
    ) -> None:
        payment = captured()
        dispute = report(payment, None, recorded)
        assert dispute is not None
        payment.take_events()
        held = (payment.disputed_minor, payment.dispute_lost_minor)
        assert report(payment, dispute, late) is None
        assert dispute.status is recorded
        assert (payment.disputed_minor, payment.dispute_lost_minor) == held
        (stale,) = payment.take_events()
        assert isinstance(stale, ev.StaleSignalIgnored)
        assert stale.signal == f"dispute_{late.value}:{dispute.id}"


class TestClosing:
    def test_won_gives_the_amount_back(self) -> None:
        payment = captured(10_000)
        dispute = report(payment, None, D.NEEDS_RESPONSE)
        payment.take_events()
        report(payment, dispute, D.WON)
        assert (payment.disputed_minor, payment.dispute_lost_minor) == (0, 0)
        (closed,) = payment.take_events()
        assert isinstance(closed, ev.PaymentDisputeClosed)
        assert (closed.dispute.status, closed.refundable_amount) == ("won", Money(10_000, "USD"))

    def test_lost_is_no_longer_refundable(self) -> None:
        payment = captured(10_000)
        dispute = report(payment, None, D.UNDER_REVIEW)
        report(payment, dispute, D.LOST)
        assert (payment.disputed_minor, payment.dispute_lost_minor) == (4_000, 4_000)
        assert payment.refundable == Money(6_000, "USD")
        with pytest.raises(AmountExceedsRefundable):
            payment.begin_refund(Money(6_001, "USD"), None, NOW)
        refund, _ = payment.begin_refund(None, None, NOW)  # the default: everything refundable
        assert refund.amount == Money(6_000, "USD")

    def test_lost_after_a_refund_took_the_money_is_refused(self) -> None:
        """The provider cannot have taken back what was refunded: refused (and retried once a
        pending refund settles) rather than counting the money twice."""
        payment = captured(10_000)
        dispute = report(payment, None, D.NEEDS_RESPONSE, 8_000)
        payment.begin_refund(Money(5_000, "USD"), None, NOW)
        with pytest.raises(AmountExceedsRefundable):
            report(payment, dispute, D.LOST, 8_000)
        assert dispute is not None
        assert dispute.open
        assert payment.dispute_lost_minor == 0


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """(what, which dispute or refund, amount) — reports and refunds in any order."""
    return draw(
        st.lists(
            st.tuples(
                st.sampled_from(["report", "refund", "settle", "fail"]),
                st.integers(0, 3),
                st.integers(1, 6_000),
            ),
            max_size=25,
        )
    )


def state(payment: Payment, disputes: dict[int, Dispute]) -> tuple[object, ...]:
    amounts = (payment.disputed_minor, payment.dispute_lost_minor)
    refunds = (payment.refunded_minor, payment.refund_pending_minor)
    return amounts, refunds, sorted((d.id, d.status, d.amount.minor) for d in disputes.values())


class TestInvariants:
    @given(
        plan=steps(),
        statuses=st.lists(st.sampled_from(list(D)), min_size=25, max_size=25),
    )
    def test_refunded_pending_and_lost_never_exceed_captured(
        self, plan: list[tuple[str, int, int]], statuses: list[DisputeStatus]
    ) -> None:
        payment = captured(10_000)
        disputes: dict[int, Dispute] = {}
        refunds = []
        for (what, n, minor), status in zip(plan, statuses, strict=False):
            before = state(payment, disputes)
            try:
                if what == "report":
                    found = report(payment, disputes.get(n), status, minor, reference=f"du_{n}")
                    if found is not None:
                        disputes[n] = found
                elif what == "refund":
                    refunds.append(payment.begin_refund(Money(minor, "USD"), None, NOW)[0])
                elif refunds:
                    refund = refunds[n % len(refunds)]
                    if what == "settle":
                        payment._refund_succeeded(refund, NOW, "test")
                    else:
                        payment._refund_failed(refund, None, None, NOW, "test")
            except (AmountExceedsRefundable, InvalidStateTransition):
                assert state(payment, disputes) == before  # refused: nothing changed
            payment.check_invariants()
            lost = sum(d.amount.minor for d in disputes.values() if d.status is D.LOST)
            held = sum(d.amount.minor for d in disputes.values() if d.status is not D.WON)
            assert payment.dispute_lost_minor == lost
            assert payment.disputed_minor == held
            pending = sum(r.amount.minor for r in refunds if r.status is RefundStatus.PENDING)
            assert payment.refund_pending_minor == pending
            taken = payment.refunded_minor + pending + lost
            assert taken <= payment.captured_minor
            assert payment.refundable.minor == payment.captured_minor - taken
