"""Checkout snapshots: the priced cart a payment was created from."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.domain.money import Money
from tillpoint.domain.snapshot import CheckoutSnapshot, LineItem, Totals


class SqlSnapshots:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, snapshot: CheckoutSnapshot) -> None:
        totals = snapshot.totals
        await self.conn.execute(
            t.checkout_snapshots.insert().values(
                snapshot_id=snapshot.id,
                order_id=snapshot.order_id,
                currency=totals.total.currency,
                items=[
                    {
                        "variant_id": i.variant_id,
                        "quantity": i.quantity,
                        "unit_amount_minor": i.unit_amount.minor,
                    }
                    for i in snapshot.items
                ],
                subtotal_minor=totals.subtotal.minor,
                discount_minor=totals.discount.minor,
                shipping_minor=totals.shipping.minor,
                tax_minor=totals.tax.minor,
                total_minor=totals.total.minor,
                created_at=snapshot.created_at,
                expires_at=snapshot.expires_at,
            )
        )

    async def get(self, snapshot_id: str) -> CheckoutSnapshot | None:
        s = t.checkout_snapshots
        row = (await self.conn.execute(sa.select(s).where(s.c.snapshot_id == snapshot_id))).first()
        if row is None:
            return None
        cur = row.currency
        items = tuple(
            LineItem(i["variant_id"], i["quantity"], Money(i["unit_amount_minor"], cur))
            for i in row.items
        )
        totals = Totals(
            Money(row.subtotal_minor, cur),
            Money(row.discount_minor, cur),
            Money(row.shipping_minor, cur),
            Money(row.tax_minor, cur),
            Money(row.total_minor, cur),
        )
        return CheckoutSnapshot(
            row.snapshot_id, row.order_id, items, totals, row.created_at, row.expires_at
        )
