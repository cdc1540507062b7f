"""The `inbox` table: the ids of consumed messages, so a redelivery changes nothing."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.service.ports import InboxEntry

i = t.inbox


class SqlInbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def get(self, consumer: str, message_id: str) -> InboxEntry | None:
        row = (
            await self.conn.execute(
                sa.select(i).where(i.c.consumer == consumer, i.c.message_id == message_id)
            )
        ).first()
        if row is None:
            return None
        return InboxEntry(
            row.consumer, row.message_id, row.order_id, row.payment_id, row.received_at
        )

    async def add(self, entry: InboxEntry) -> bool:
        """Record a consumed message; False when it was already recorded (the primary key)."""
        dialect = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(i)
            .values(
                consumer=entry.consumer,
                message_id=entry.message_id,
                order_id=entry.order_id,
                payment_id=entry.payment_id,
                received_at=entry.received_at,
            )
            .on_conflict_do_nothing(index_elements=[i.c.consumer, i.c.message_id])
        )
        result = await self.conn.execute(stmt)
        return bool(result.rowcount)
