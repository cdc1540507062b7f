"""Disputes (chargebacks)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.repositories.common import Row
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Dispute, DisputeStatus
from tillpoint.service.ports import DisputeFilter

_D = t.disputes.c


def _dispute(row: Row) -> Dispute:
    return Dispute(
        id=row.dispute_id,
        payment_id=row.payment_id,
        provider=row.provider,
        provider_dispute_id=row.provider_dispute_id,
        amount=Money(row.amount_minor, row.currency),
        reason=row.reason,
        status=DisputeStatus(row.status),
        evidence_due_by=row.evidence_due_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
    )


class SqlDisputes:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, dispute: Dispute) -> None:
        await self.conn.execute(
            t.disputes.insert().values(
                dispute_id=dispute.id,
                payment_id=dispute.payment_id,
                provider=dispute.provider,
                provider_dispute_id=dispute.provider_dispute_id,
                amount_minor=dispute.amount.minor,
                currency=dispute.amount.currency,
                reason=dispute.reason,
                status=dispute.status.value,
                evidence_due_by=dispute.evidence_due_by,
                created_at=dispute.created_at,
                updated_at=dispute.updated_at,
                closed_at=dispute.closed_at,
            )
        )

    async def save(self, dispute: Dispute) -> None:
        await self.conn.execute(
            t.disputes.update()
            .where(_D.dispute_id == dispute.id)
            .values(
                amount_minor=dispute.amount.minor,
                reason=dispute.reason,
                status=dispute.status.value,
                evidence_due_by=dispute.evidence_due_by,
                updated_at=dispute.updated_at,
                closed_at=dispute.closed_at,
            )
        )

    async def by_provider_id(self, provider: str, provider_dispute_id: str) -> Dispute | None:
        stmt = sa.select(t.disputes).where(
            _D.provider == provider, _D.provider_dispute_id == provider_dispute_id
        )
        row = (await self.conn.execute(stmt)).first()
        return _dispute(row) if row else None

    async def for_payment(self, payment_id: str) -> list[Dispute]:
        rows = await self.conn.execute(
            sa.select(t.disputes).where(_D.payment_id == payment_id).order_by(_D.dispute_id)
        )
        return [_dispute(r) for r in rows]

    async def page(
        self, filters: DisputeFilter, limit: int, cursor: str | None
    ) -> tuple[list[Dispute], str | None]:
        conditions: list[sa.ColumnElement[bool]] = []
        if filters.status:
            conditions.append(_D.status == filters.status)
        if filters.payment_id:
            conditions.append(_D.payment_id == filters.payment_id)
        if cursor:
            conditions.append(_D.dispute_id < cursor)
        stmt = (
            sa.select(t.disputes).where(*conditions).order_by(_D.dispute_id.desc()).limit(limit + 1)
        )
        rows = [_dispute(r) for r in await self.conn.execute(stmt)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None
