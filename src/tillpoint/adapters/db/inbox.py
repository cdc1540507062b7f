"""The `inbox` table (consumed message ids) and the unit of work the event use cases need:
payments, orders, outbox and inbox on one connection, so a consumer's bookkeeping commits with
the change it describes."""

from __future__ import annotations

from typing import Self

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.uow import SqlUnitOfWork
from tillpoint.service.consumers import InboxEntry, InboxRepository
from tillpoint.service.messages import EventDialect
from tillpoint.service.outbox import OutboxRepository

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


class SqlEventsUnitOfWork(SqlUnitOfWork):
    outbox: OutboxRepository
    inbox: InboxRepository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self.outbox = SqlOutbox(self.connection)
        self.inbox = SqlInbox(self.connection)
        return self


class SqlEventsUnitOfWorkFactory:
    def __init__(
        self, engine: AsyncEngine, *, dialect: EventDialect = EventDialect.DEFAULT
    ) -> None:
        self.engine = engine
        self.dialect = dialect

    def __call__(self) -> SqlEventsUnitOfWork:
        return SqlEventsUnitOfWork(self.engine, dialect=self.dialect)
