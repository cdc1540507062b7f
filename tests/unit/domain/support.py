"""Payments in a given state, built the only way the code builds them: commands that begin
operations, and `Payment.apply` for what the provider says."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    CaptureMethod,
    Change,
    NoAnswer,
    Operation,
    Outcome,
    Payment,
    PaymentMethod,
    ProviderStatus,
    Refund,
)

NOW = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)
RECHECK = timedelta(minutes=5)  # an operation that stays open is asked about again after this
P = ProviderStatus


def new_payment(minor: int = 10_000, currency: str = "USD", *, manual: bool = False) -> Payment:
    return Payment.initiate(
        order_id="ord-1",
        buyer_id="buyer-1",
        amount=Money(minor, currency),
        capture_method=CaptureMethod.MANUAL if manual else CaptureMethod.AUTOMATIC,
        provider="mock",
        payment_method=PaymentMethod(token="pm_card_visa"),
        snapshot_id=None,
        request_key=None,
        now=NOW,
    )


def says(
    status: ProviderStatus,
    payment: Payment,
    minor: int | None = None,
    *,
    failure_code: str | None = None,
    reference: str | None = None,
    next_action: Mapping[str, Any] | None = None,
) -> Outcome:
    """What the provider says about `payment` (for its whole amount unless `minor`)."""
    return Outcome(
        status=status,
        provider_payment_id="pi_1",
        amount_minor=payment.amount.minor if minor is None else minor,
        currency=payment.amount.currency,
        reference=reference,
        failure_code=failure_code,
        failure_message=f"{failure_code} at the provider" if failure_code else None,
        next_action=next_action,
    )


def apply(
    payment: Payment,
    outcome: Outcome | NoAnswer,
    op: Operation | None = None,
    *,
    refund: Refund | None = None,
    source: str = "test",
    now: datetime = NOW,
    transaction_id: str | None = None,
) -> Change:
    return payment.apply(
        outcome,
        op=op,
        now=now,
        source=source,
        check_at=now + RECHECK,
        refund=refund,
        transaction_id=transaction_id,
    )


def authorized(minor: int = 10_000) -> Payment:
    """A manual-capture payment its provider authorized; its events already taken."""
    payment = new_payment(minor, manual=True)
    op = payment.begin_confirmation(NOW, None)
    apply(payment, says(P.AUTHORIZED, payment), op)
    payment.take_events()
    return payment


def captured(minor: int = 10_000) -> Payment:
    """An automatic-capture payment its provider captured; its events already taken."""
    payment = new_payment(minor)
    op = payment.begin_confirmation(NOW, None)
    apply(payment, says(P.CAPTURED, payment), op)
    payment.take_events()
    return payment
