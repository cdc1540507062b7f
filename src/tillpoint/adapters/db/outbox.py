"""The `outbox` table: rows written with each state change, claimed and marked by the relay."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.service.outbox import BACKLOG_CAP
from tillpoint.service.ports import OutboxMessage

o = t.outbox


def _message(row: sa.Row[Any]) -> OutboxMessage:
    return OutboxMessage(
        id=row.id,
        event_id=row.event_id,
        aggregate_id=row.aggregate_id,
        routing_key=row.routing_key,
        message_type=row.message_type,
        sequence=row.sequence,
        body=row.body,
        created_at=row.created_at,
        attempts=row.attempts,
    )


_INSERT = o.insert()


class SqlOutbox:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def write(self, messages: Sequence[OutboxMessage]) -> None:
        """The one writer of outbox rows (called by the payment repository as it saves the
        payment's published events): one multi-row INSERT."""
        if not messages:
            return
        await self.conn.execute(
            _INSERT,
            [
                {
                    "event_id": m.event_id,
                    "aggregate_id": m.aggregate_id,
                    "routing_key": m.routing_key,
                    "message_type": m.message_type,
                    "sequence": m.sequence,
                    "body": m.body,
                    "created_at": m.created_at,
                }
                for m in messages
            ],
        )

    async def claim(self, limit: int) -> list[OutboxMessage]:
        stmt = sa.select(o).where(o.c.published_at.is_(None)).order_by(o.c.id).limit(limit)
        if self.conn.dialect.name != "sqlite":  # SQLite has one writer at a time anyway
            stmt = stmt.with_for_update(skip_locked=True)
        return [_message(r) for r in await self.conn.execute(stmt)]

    async def unpublished_sequences(self, aggregate_ids: Sequence[str]) -> dict[str, list[int]]:
        if not aggregate_ids:
            return {}
        rows = await self.conn.execute(
            sa.select(o.c.aggregate_id, o.c.sequence)
            .where(o.c.published_at.is_(None), o.c.aggregate_id.in_(list(aggregate_ids)))
            .order_by(o.c.aggregate_id, o.c.sequence, o.c.id)
        )
        result: dict[str, list[int]] = defaultdict(list)
        for aggregate_id, sequence in rows:
            result[aggregate_id].append(sequence)
        return dict(result)

    async def mark_published(self, ids: Sequence[int], now: datetime) -> None:
        if ids:
            await self.conn.execute(
                o.update()
                .where(o.c.id.in_(list(ids)))
                .values(published_at=now, attempts=o.c.attempts + 1, last_error=None)
            )

    async def mark_failed(self, ids: Sequence[int], error: str) -> None:
        if ids:
            await self.conn.execute(
                o.update()
                .where(o.c.id.in_(list(ids)))
                .values(attempts=o.c.attempts + 1, last_error=error[:500])
            )

    async def latest(self, aggregate_id: str, routing_keys: Sequence[str]) -> OutboxMessage | None:
        row = (
            await self.conn.execute(
                sa.select(o)
                .where(o.c.aggregate_id == aggregate_id, o.c.routing_key.in_(list(routing_keys)))
                .order_by(o.c.sequence.desc(), o.c.id.desc())
                .limit(1)
            )
        ).first()
        return _message(row) if row else None

    async def backlog(self, cap: int = BACKLOG_CAP) -> int:
        # Counts over the partial index `ix_outbox_unpublished`, and stops at `cap`.
        waiting = sa.select(o.c.id).where(o.c.published_at.is_(None)).limit(cap).subquery()
        count = await self.conn.scalar(sa.select(sa.func.count()).select_from(waiting))
        return int(count or 0)

    async def oldest_unpublished_at(self) -> datetime | None:
        # The lowest unpublished id is the oldest row: one step along the partial index.
        return await self.conn.scalar(
            sa.select(o.c.created_at).where(o.c.published_at.is_(None)).order_by(o.c.id).limit(1)
        )
