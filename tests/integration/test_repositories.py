"""The order and payment repositories on the caller's connection: what is added is read back
whole, with the rows that go with it (status history, payment events, outbox). Each test runs
in a transaction of the session's database that is rolled back when it ends (`conn`)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tests.support.records import captured
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.repositories.orders import SqlOrders
from tillpoint.adapters.db.repositories.payments import SqlPayments
from tillpoint.domain.money import Money

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


async def test_an_order_is_read_back_as_it_was_added(conn: AsyncConnection) -> None:
    orders = SqlOrders(conn)
    order, _ = captured(NOW, Money(2550, "USD"))

    await orders.add(order)

    got = await orders.get(order.order_id)
    assert got is not None
    assert (got.order_id, got.buyer_id, got.amount, got.status) == (
        order.order_id,
        order.buyer_id,
        Money(2550, "USD"),
        order.status,
    )
    assert [entry.to_status for entry in await orders.history(order.order_id)] == [order.status]
    assert await orders.get(f"{order.order_id}-other") is None


async def test_a_payment_is_read_back_with_its_events_and_outbox_rows(
    conn: AsyncConnection,
) -> None:
    order, payment = captured(NOW)
    payments = SqlPayments(conn)
    await SqlOrders(conn).add(order)

    await payments.add(payment)

    got = await payments.get(payment.id)
    assert got is not None
    assert (got.order_id, got.status, got.amount, got.captured_minor) == (
        order.order_id,
        payment.status,
        payment.amount,
        payment.amount.minor,
    )
    assert got.number is not None
    assert got.number > 0
    assert got.provider_payment_id == payment.provider_payment_id
    assert payment.provider_payment_id is not None
    by_provider = await payments.by_provider_id("mock", payment.provider_payment_id)
    assert by_provider is not None
    assert by_provider.id == payment.id
    assert [p.id for p in await payments.for_order(order.order_id)] == [payment.id]
    assert len(await payments.events(payment.id)) >= 2
    assert await SqlOutbox(conn).unpublished_sequences([payment.id]) == {payment.id: [1, 2]}
