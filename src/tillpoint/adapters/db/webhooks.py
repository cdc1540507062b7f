"""The `webhook_events` table: the inbox of verified provider events.

Duplicates are refused by the unique `(provider, provider_event_id)` with
`INSERT … ON CONFLICT DO NOTHING`, so parallel deliveries of one event never race into an error.
Claiming uses `FOR UPDATE SKIP LOCKED` on PostgreSQL, so several workers never process the same
event at once; SQLite serializes writers with `BEGIN IMMEDIATE` instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.service.ports import CLAIMABLE, StoredWebhook, WebhookStatus

w = t.webhook_events


def _event(row: sa.Row[Any]) -> StoredWebhook:
    return StoredWebhook(
        id=row.webhook_event_id,
        provider=row.provider,
        provider_event_id=row.provider_event_id,
        event_type=row.event_type,
        signature_valid=row.signature_valid,
        status=WebhookStatus(row.status),
        provider_payment_id=row.provider_payment_id,
        headers=dict(row.headers),
        body=bytes(row.body),
        received_at=row.received_at,
        attempt_count=row.attempt_count,
        last_error=row.last_error,
        processed_at=row.processed_at,
        next_attempt_at=row.next_attempt_at,
    )


def _state(event: StoredWebhook) -> dict[str, Any]:
    return {
        "status": event.status.value,
        "attempt_count": event.attempt_count,
        "last_error": event.last_error[:1000] if event.last_error else None,
        "processed_at": event.processed_at,
        "next_attempt_at": event.next_attempt_at,
    }


class SqlWebhookEvents:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @property
    def _postgres(self) -> bool:
        return self.conn.dialect.name == "postgresql"

    async def insert(self, event: StoredWebhook) -> bool:
        values = {
            "webhook_event_id": event.id,
            "provider": event.provider,
            "provider_event_id": event.provider_event_id,
            "event_type": event.event_type[:64],
            "signature_valid": event.signature_valid,
            "provider_payment_id": event.provider_payment_id,
            "headers": event.headers,
            "body": event.body,
            "received_at": event.received_at,
            **_state(event),
        }
        dialect = postgresql if self._postgres else sqlite
        stmt = (
            dialect.insert(w)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["provider", "provider_event_id"])
        )
        result = await self.conn.execute(stmt)
        return bool(result.rowcount == 1)

    async def next_due(self, now: datetime) -> StoredWebhook | None:
        stmt = (
            sa.select(w)
            .where(
                # Literal, to match the partial index `ix_webhook_events_due`; every claimable
                # event has a `next_attempt_at` (set at ingest, failure and replay).
                sa.text(t.CLAIMABLE_WEBHOOKS),
                w.c.next_attempt_at <= now,
            )
            .order_by(w.c.next_attempt_at, w.c.webhook_event_id)
            .limit(1)
        )
        if self._postgres:
            stmt = stmt.with_for_update(skip_locked=True)
        row = (await self.conn.execute(stmt)).first()
        return _event(row) if row else None

    async def get(self, webhook_event_id: str, *, for_update: bool = False) -> StoredWebhook | None:
        stmt = sa.select(w).where(w.c.webhook_event_id == webhook_event_id)
        if for_update and self._postgres:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _event(row) if row else None

    async def save(self, event: StoredWebhook) -> None:
        await self.conn.execute(
            w.update().where(w.c.webhook_event_id == event.id).values(**_state(event))
        )

    async def page(
        self, provider: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[StoredWebhook], str | None]:
        conditions: list[sa.ColumnElement[bool]] = []
        if provider:
            conditions.append(w.c.provider == provider)
        if status:
            conditions.append(w.c.status == status)
        if cursor:
            conditions.append(w.c.webhook_event_id < cursor)
        stmt = (
            sa.select(w).where(*conditions).order_by(w.c.webhook_event_id.desc()).limit(limit + 1)
        )
        rows = [_event(r) for r in await self.conn.execute(stmt)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    async def backlog(self) -> int:
        stmt = (
            sa.select(sa.func.count())
            .select_from(w)
            .where(w.c.status.in_([s.value for s in CLAIMABLE]))
        )
        return int((await self.conn.execute(stmt)).scalar_one())
