"""The idempotency store: one row per (scope, key), guarded by a unique constraint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tillpoint.adapters.db.tables import idempotency_keys as keys
from tillpoint.service.idempotency import Claim, ClaimOutcome, StoredResponse

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"


class SqlIdempotencyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        dialect: Any = postgresql if self._postgres else sqlite
        self._insert = dialect.insert
        # Single statements need no BEGIN/COMMIT round trips of their own on PostgreSQL.
        # (SQLite keeps explicit transactions: its BEGIN IMMEDIATE is what serializes writers.)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    @asynccontextmanager
    async def _statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection for one self-contained statement."""
        if self._postgres:
            async with self._autocommit.connect() as conn:
                yield conn
        else:
            async with self._engine.begin() as conn:
                yield conn

    async def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        now: datetime,
        expires_at: datetime,
        lock_timeout: timedelta,
    ) -> Claim:
        async with self._statement() as conn:
            inserted = (
                await conn.execute(
                    self._insert(keys)
                    .values(
                        scope=scope,
                        key=key,
                        request_hash=fingerprint,
                        status=IN_PROGRESS,
                        locked_at=now,
                        created_at=now,
                        expires_at=expires_at,
                    )
                    .on_conflict_do_nothing(index_elements=["scope", "key"])
                    .returning(keys.c.id)
                )
            ).first()
        if inserted is not None:
            return Claim(ClaimOutcome.STARTED)
        async with self._engine.begin() as conn:
            stmt = sa.select(keys).where(keys.c.scope == scope, keys.c.key == key)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()
            row = (await conn.execute(stmt)).first()
            if row is None:  # reaped in between: the caller may simply retry
                return Claim(ClaimOutcome.IN_USE)
            restart = sa.update(keys).where(keys.c.id == row.id)
            if row.expires_at <= now:  # expired but not reaped yet: a fresh key
                await conn.execute(
                    restart.values(
                        request_hash=fingerprint,
                        status=IN_PROGRESS,
                        locked_at=now,
                        response_code=None,
                        response_body=None,
                        response_headers=None,
                        created_at=now,
                        expires_at=expires_at,
                    )
                )
                return Claim(ClaimOutcome.STARTED)
            if row.request_hash != fingerprint:
                return Claim(ClaimOutcome.REUSED)
            if row.status == COMPLETED:
                return Claim(
                    ClaimOutcome.REPLAY,
                    StoredResponse(
                        row.response_code,
                        bytes(row.response_body),
                        dict(row.response_headers or {}),
                        replayed=True,
                    ),
                )
            if row.locked_at is not None and row.locked_at > now - lock_timeout:
                return Claim(ClaimOutcome.IN_USE)
            await conn.execute(restart.values(locked_at=now))
            return Claim(ClaimOutcome.RESUMED)

    async def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        async with self._statement() as conn:
            await conn.execute(
                sa.update(keys)
                .where(keys.c.scope == scope, keys.c.key == key)
                .values(
                    status=COMPLETED,
                    response_code=response.status_code,
                    response_body=response.body,
                    response_headers=dict(response.headers),
                    locked_at=None,
                )
            )

    async def release(self, scope: str, key: str) -> None:
        async with self._statement() as conn:
            await conn.execute(
                sa.delete(keys).where(
                    keys.c.scope == scope, keys.c.key == key, keys.c.status == IN_PROGRESS
                )
            )

    async def reap(self, now: datetime, limit: int = 1000) -> int:
        async with self._engine.begin() as conn:
            expired = sa.select(keys.c.id).where(keys.c.expires_at <= now).limit(limit)
            result = await conn.execute(sa.delete(keys).where(keys.c.id.in_(expired)))
            return int(result.rowcount or 0)
