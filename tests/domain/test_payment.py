"""Focused cases the state machine found or that are too rare for it to hit every run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tillpoint.domain.cards import carries_raw_card_data
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    CaptureMethod,
    Payment,
    PaymentMethod,
    PaymentStatus,
    RefundStatus,
)

NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


def captured(minor: int = 10_000) -> Payment:
    payment = Payment.initiate(
        order_id="ord-1",
        buyer_id="buyer-1",
        amount=Money(minor, "USD"),
        capture_method=CaptureMethod.AUTOMATIC,
        provider="mock",
        payment_method=PaymentMethod(token="pm_card_visa"),
        snapshot_id=None,
        request_key=None,
        now=NOW,
    )
    payment.begin_confirmation(NOW, None)
    payment.captured(payment.amount, "txn_1", "pi_1", NOW, "test")
    payment.take_events()
    return payment


class TestRefundSignals:
    def test_a_late_success_for_a_failed_refund_is_a_recorded_no_op(self) -> None:
        """Its amount was released and refunded again: counting it would exceed the capture."""
        payment = captured()
        failed, _ = payment.begin_refund(None, None, NOW)
        payment.refund_failed(failed, "provider_error", "boom", NOW, "api")
        again, _ = payment.begin_refund(None, None, NOW)
        assert payment.refund_succeeded(again, NOW, "api")
        payment.take_events()

        assert not payment.refund_succeeded(failed, NOW, "webhook")

        assert failed.status is RefundStatus.FAILED
        assert (payment.refunded_minor, payment.captured_minor) == (10_000, 10_000)
        assert payment.status is PaymentStatus.REFUNDED
        [event] = payment.take_events()
        assert event.event_type == "STALE_SIGNAL_IGNORED"
        assert event.routing_key is None
        payment.check_invariants()

    def test_a_repeated_success_changes_nothing(self) -> None:
        payment = captured()
        refund, _ = payment.begin_refund(Money(2_500, "USD"), None, NOW)
        assert payment.refund_succeeded(refund, NOW, "api")
        sequence = payment.sequence
        assert not payment.refund_succeeded(refund, NOW, "webhook")
        assert (payment.refunded_minor, payment.sequence) == (2_500, sequence)
        assert payment.status is PaymentStatus.PARTIALLY_REFUNDED

    def test_a_failure_after_success_changes_nothing(self) -> None:
        payment = captured()
        refund, _ = payment.begin_refund(None, None, NOW)
        assert payment.refund_succeeded(refund, NOW, "api")
        payment.refund_failed(refund, "late", "late", NOW, "webhook")
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
