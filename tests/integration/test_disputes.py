"""Disputes in the database: the repository reads a dispute back whole, a provider's dispute id
is stored once, and the database itself refuses what the dispute invariants forbid. Each test
runs in a transaction that is rolled back when it ends (`conn`)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support.records import captured
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.repositories.disputes import SqlDisputes
from tillpoint.adapters.db.repositories.orders import SqlOrders
from tillpoint.adapters.db.repositories.payments import SqlPayments
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Dispute, DisputeStatus, Payment
from tillpoint.service.ports import DisputeFilter

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def stored_payment(conn: AsyncConnection) -> Payment:
    order, payment = captured(NOW, Money(1000, "EUR"))
    await SqlOrders(conn).add(order)
    await SqlPayments(conn).add(payment)
    return payment


def report(payment: Payment, known: Dispute | None, status: DisputeStatus) -> Dispute:
    dispute = payment.record_dispute(
        known,
        reference=f"du_{payment.id}",
        amount=Money(400, "EUR"),
        reason="fraudulent",
        status=status,
        evidence_due_by=NOW + timedelta(days=9),
        now=NOW,
        source="test",
    )
    assert dispute is not None
    return dispute


async def test_a_dispute_and_the_payments_amounts_are_read_back(conn: AsyncConnection) -> None:
    payment = await stored_payment(conn)
    payments, disputes = SqlPayments(conn), SqlDisputes(conn)
    dispute = report(payment, None, DisputeStatus.NEEDS_RESPONSE)
    await disputes.add(dispute)
    await payments.save(payment)
    lost = report(payment, dispute, DisputeStatus.LOST)
    await disputes.save(lost)
    await payments.save(payment)

    got = await disputes.by_provider_id("mock", f"du_{payment.id}")
    assert got == lost
    assert (got.status, got.closed_at, got.evidence_due_by) == (
        DisputeStatus.LOST,
        NOW,
        NOW + timedelta(days=9),
    )
    again = await payments.get(payment.id)
    assert again is not None
    assert (again.disputed_minor, again.dispute_lost_minor) == (400, 400)
    assert again.refundable == Money(600, "EUR")
    assert await disputes.for_payment(payment.id) == [lost]
    page, cursor = await disputes.page(DisputeFilter(payment_id=payment.id), 10, None)
    assert (page, cursor) == ([lost], None)
    none, _ = await disputes.page(DisputeFilter("won", payment.id), 10, None)
    assert none == []


async def test_a_providers_dispute_id_is_stored_once(conn: AsyncConnection) -> None:
    payment = await stored_payment(conn)
    dispute = report(payment, None, DisputeStatus.NEEDS_RESPONSE)
    await SqlDisputes(conn).add(dispute)
    twin = dataclasses.replace(dispute, id="dsp_twin")
    savepoint = await conn.begin_nested()
    with pytest.raises(IntegrityError):
        await SqlDisputes(conn).add(twin)
    await savepoint.rollback()


@pytest.mark.parametrize(
    ("disputed", "lost", "refunded"),
    [
        (1000, 700, 400),  # lost + refunded > captured
        (300, 400, 0),  # lost > disputed
        (1001, 0, 0),  # disputed > captured
    ],
)
async def test_the_database_refuses_what_the_invariants_forbid(
    conn: AsyncConnection, disputed: int, lost: int, refunded: int
) -> None:
    payment = await stored_payment(conn)
    savepoint = await conn.begin_nested()
    with pytest.raises(IntegrityError):
        await conn.execute(
            t.payments.update()
            .where(t.payments.c.payment_id == payment.id)
            .values(disputed_minor=disputed, dispute_lost_minor=lost, refunded_minor=refunded)
        )
    await savepoint.rollback()
    row = (
        await conn.execute(
            sa.select(t.payments.c.disputed_minor).where(t.payments.c.payment_id == payment.id)
        )
    ).one()
    assert row.disputed_minor == 0
