"""Recording disputes (service/disputes.py) against the fakes: what a webhook does now and
reconciliation will do with a provider's `ProviderDispute` values."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.unit.fakes import START, World
from tests.unit.service.steps import API, confirmed, eur
from tillpoint.domain.errors import AmountExceedsRefundable
from tillpoint.domain.payment import DisputeStatus, Payment
from tillpoint.service.disputes import (
    DisputedPaymentNotFound,
    DisputeOfAnotherPayment,
    RecordedDispute,
    list_disputes,
    record_dispute,
)
from tillpoint.service.payments import refund_payment

DUE = START + timedelta(days=7)


async def report(
    w: World,
    payment: Payment,
    status: str,
    minor: int = 400,
    *,
    reference: str = "du_1",
    source: str = "webhook",
) -> RecordedDispute:
    assert payment.provider_payment_id is not None
    return await record_dispute(
        payment.provider,
        payment.provider_payment_id,
        reference=reference,
        amount_minor=minor,
        reason="fraudulent",
        status=status,
        evidence_due_by=DUE,
        deps=w.deps,
        source=source,
    )


class TestRecordDispute:
    async def test_opens_a_dispute_in_one_transaction_with_its_message(self, w: World) -> None:
        payment = await confirmed(w)
        recorded = await report(w, payment, "needs_response")
        assert (recorded.opened, recorded.changed) == (True, True)
        assert recorded.dispute is not None
        (stored,) = w.store.disputes.values()
        assert (stored.id, stored.payment_id, stored.provider_dispute_id) == (
            recorded.dispute.id,
            payment.id,
            "du_1",
        )
        assert (stored.status, stored.evidence_due_by) == (DisputeStatus.NEEDS_RESPONSE, DUE)
        assert w.store.payment(payment.id).disputed_minor == 400
        assert w.store.routing_keys(payment.id)[-1] == "payment.disputed"
        body = json.loads(w.store.messages(payment.id)[-1].body)
        assert (body["dispute_id"], body["amount"], body["disputed_amount"]) == (
            stored.id,
            "4.00",
            "4.00",
        )
        assert "DISPUTE_OPENED" in w.store.event_types(payment.id)

    async def test_the_same_report_twice_is_one_dispute(self, w: World) -> None:
        payment = await confirmed(w)
        await report(w, payment, "under_review")
        again = await report(w, payment, "under_review", source="reconciliation")
        assert (again.opened, again.changed) == (False, False)
        assert again.dispute is not None
        assert again.dispute.status is DisputeStatus.UNDER_REVIEW
        assert len(w.store.disputes) == 1
        assert w.store.payment(payment.id).disputed_minor == 400

    async def test_a_lost_dispute_limits_the_refunds(self, w: World) -> None:
        payment = await confirmed(w, minor=1_000)
        await report(w, payment, "needs_response")
        closed = await report(w, payment, "lost")
        assert closed.changed
        assert closed.dispute is not None
        assert closed.dispute.status is DisputeStatus.LOST
        with pytest.raises(AmountExceedsRefundable):
            await refund_payment(payment.id, eur(601), None, API, deps=w.deps)
        refund = await refund_payment(payment.id, None, None, API, deps=w.deps)
        assert refund.amount == eur(600)
        assert w.store.routing_keys(payment.id)[-2:] == [
            "payment.dispute_closed",
            "payment.refunded",
        ]

    async def test_a_payment_we_do_not_know_is_not_found(self, w: World) -> None:
        with pytest.raises(DisputedPaymentNotFound):
            await record_dispute(
                "fake",
                "fp_nobody",
                reference="du_1",
                amount_minor=100,
                reason="general",
                status="needs_response",
                evidence_due_by=None,
                deps=w.deps,
                source="webhook",
            )
        assert w.store.disputes == {}

    async def test_a_dispute_id_is_never_moved_to_another_payment(self, w: World) -> None:
        first, second = await confirmed(w), await confirmed(w)
        await report(w, first, "needs_response")
        with pytest.raises(DisputeOfAnotherPayment):
            await report(w, second, "needs_response")
        assert w.store.payment(second.id).disputed_minor == 0


class TestListDisputes:
    async def test_filters_and_pages_newest_first(self, w: World) -> None:
        """Newest first by id (time-ordered; two made in one millisecond in either order)."""
        payments = [await confirmed(w) for _ in range(3)]
        for n, payment in enumerate(payments):
            await report(w, payment, "lost" if n == 1 else "needs_response", reference=f"du_{n}")
        newest_first = sorted(w.store.disputes, reverse=True)
        page, cursor = await list_disputes(None, None, 2, None, deps=w.deps)
        assert [d.id for d in page] == newest_first[:2]
        rest, end = await list_disputes(None, None, 2, cursor, deps=w.deps)
        assert ([d.id for d in rest], end) == (newest_first[2:], None)
        lost, _ = await list_disputes(DisputeStatus.LOST, None, 20, None, deps=w.deps)
        assert [d.payment_id for d in lost] == [payments[1].id]
        mine, _ = await list_disputes(None, payments[0].id, 20, None, deps=w.deps)
        assert [d.provider_dispute_id for d in mine] == ["du_0"]
