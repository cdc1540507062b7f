"""Refunds."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.repositories.common import Row
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Refund, RefundStatus


def _refund(row: Row) -> Refund:
    return Refund(
        id=row.refund_id,
        payment_id=row.payment_id,
        amount=Money(row.amount_minor, row.currency),
        reason=row.reason,
        status=RefundStatus(row.status),
        provider_refund_id=row.provider_refund_id,
        created_at=row.created_at,
        processed_at=row.processed_at,
    )


class SqlRefunds:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, refund: Refund) -> None:
        await self.conn.execute(
            t.refunds.insert().values(
                refund_id=refund.id,
                payment_id=refund.payment_id,
                amount_minor=refund.amount.minor,
                currency=refund.amount.currency,
                reason=refund.reason,
                status=refund.status.value,
                provider_refund_id=refund.provider_refund_id,
                created_at=refund.created_at,
                processed_at=refund.processed_at,
            )
        )

    async def save(self, refund: Refund) -> None:
        await self.conn.execute(
            t.refunds.update()
            .where(t.refunds.c.refund_id == refund.id)
            .values(
                status=refund.status.value,
                provider_refund_id=refund.provider_refund_id,
                processed_at=refund.processed_at,
            )
        )

    async def get(self, refund_id: str) -> Refund | None:
        row = (
            await self.conn.execute(sa.select(t.refunds).where(t.refunds.c.refund_id == refund_id))
        ).first()
        return _refund(row) if row else None

    async def for_payment(self, payment_id: str) -> list[Refund]:
        rows = await self.conn.execute(
            sa.select(t.refunds)
            .where(t.refunds.c.payment_id == payment_id)
            .order_by(t.refunds.c.created_at, t.refunds.c.refund_id)
        )
        return [_refund(r) for r in rows]
