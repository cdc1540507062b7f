"""Focused cases the state machine found or that are too rare for it to hit every run."""

from __future__ import annotations

import pytest

from tests.unit.domain.support import NOW, apply, captured, says
from tillpoint.domain.cards import carries_raw_card_data
from tillpoint.domain.money import Money
from tillpoint.domain.payment import PaymentStatus, ProviderStatus, RefundStatus
from tillpoint.domain.payment import events as ev

P = ProviderStatus


class TestRefundSignals:
    def test_a_late_success_for_a_failed_refund_is_a_recorded_no_op(self) -> None:
        """Its amount was released and refunded again: counting it would exceed the capture."""
        payment = captured()
        failed, failed_op = payment.begin_refund(None, None, NOW)
        apply(
            payment,
            says(P.FAILED, payment, failure_code="provider_error"),
            failed_op,
            refund=failed,
        )
        again, again_op = payment.begin_refund(None, None, NOW)
        assert apply(payment, says(P.REFUNDED, payment), again_op, refund=again).refunded
        payment.take_events()

        late = apply(payment, says(P.REFUNDED, payment), failed_op, refund=failed, source="webhook")

        assert not late.moved
        assert failed.status is RefundStatus.FAILED
        assert (payment.refunded_minor, payment.captured_minor) == (10_000, 10_000)
        assert payment.status is PaymentStatus.REFUNDED
        [event] = payment.take_events()
        assert isinstance(event, ev.StaleSignalIgnored)
        assert event.signal == f"refund_succeeded:{failed.id}"
        assert not isinstance(event, ev.Published)
        payment.check_invariants()

    def test_a_repeated_success_changes_nothing(self) -> None:
        payment = captured()
        refund, op = payment.begin_refund(Money(2_500, "USD"), None, NOW)
        assert apply(payment, says(P.REFUNDED, payment, 2_500), op, refund=refund).refunded
        sequence = payment.sequence
        again = apply(payment, says(P.REFUNDED, payment, 2_500), op, refund=refund)
        assert not again.moved
        assert (payment.refunded_minor, payment.sequence) == (2_500, sequence)
        assert payment.status is PaymentStatus.PARTIALLY_REFUNDED

    def test_a_failure_after_success_changes_nothing(self) -> None:
        payment = captured()
        refund, op = payment.begin_refund(None, None, NOW)
        assert apply(payment, says(P.REFUNDED, payment), op, refund=refund).refunded
        late = says(P.FAILED, payment, failure_code="late")
        assert not apply(payment, late, op, refund=refund, source="webhook").moved
        assert refund.status is RefundStatus.SUCCEEDED
        assert payment.refunded_minor == 10_000
        assert payment.refund_pending_minor == 0


class TestRawCardData:
    """One rule for the API and the consumers: no card number or CVC, under any spelling."""

    @pytest.mark.parametrize(
        "method",
        [
            {"number": "4242424242424242"},
            {"cardNumber": "4242424242424242"},
            {"CVV2": "123"},
            {"security_code": "123"},
            {"token": "4242 4242 4242 4242"},
            {"token": "4000-0000-0000-0002"},
        ],
    )
    def test_refuses_card_numbers_and_cvcs(self, method: dict[str, str]) -> None:
        assert carries_raw_card_data(method)

    @pytest.mark.parametrize(
        "method",
        [{"token": "pm_card_visa"}, {"last4": "4242", "brand": "visa"}, {"token": "1234"}, {}],
    )
    def test_accepts_tokens_and_display_data(self, method: dict[str, str]) -> None:
        assert not carries_raw_card_data(method)
