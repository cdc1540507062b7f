"""The idempotency store: one row per (scope, key), guarded by a unique constraint."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tillpoint.adapters.db.errors import unavailable_as_storage_error
from tillpoint.adapters.db.tables import idempotency_keys as keys
from tillpoint.service.ports import Claim, ClaimOutcome, StoredResponse

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"

# Built once: constructing and coercing statements per call cost more CPU than running them.
_BY_SCOPE_KEY = sa.and_(
    keys.c.scope == sa.bindparam("b_scope"), keys.c.key == sa.bindparam("b_key")
)
_SELECT = sa.select(keys).where(_BY_SCOPE_KEY)
_RESTART = sa.update(keys).where(keys.c.id == sa.bindparam("b_id"))
_COMPLETE = sa.update(keys).where(_BY_SCOPE_KEY)
_RELEASE = sa.delete(keys).where(_BY_SCOPE_KEY, keys.c.status == IN_PROGRESS)


def _finished(row: Any, fingerprint: str) -> Claim:
    """A stored key that is not ours to run: another request's, or a finished one to replay."""
    if row.request_hash != fingerprint:
        return Claim(ClaimOutcome.REUSED)
    return Claim(
        ClaimOutcome.REPLAY,
        StoredResponse(
            row.response_code,
            bytes(row.response_body),
            dict(row.response_headers or {}),
            replayed=True,
        ),
    )


def _claim_insert(dialect: Any) -> Any:
    return (
        dialect.insert(keys)
        .on_conflict_do_nothing(index_elements=["scope", "key"])
        .returning(keys.c.id)
    )


class SqlIdempotencyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = _claim_insert(postgresql if self._postgres else sqlite)
        self._select = _SELECT.with_for_update() if self._postgres else _SELECT
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

    @unavailable_as_storage_error()
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
                    self._insert,
                    {
                        "scope": scope,
                        "key": key,
                        "request_hash": fingerprint,
                        "status": IN_PROGRESS,
                        "locked_at": now,
                        "created_at": now,
                        "expires_at": expires_at,
                    },
                )
            ).first()
        if inserted is not None:
            return Claim(ClaimOutcome.STARTED)
        if self._postgres:
            # The common repeat is of a finished request: a completed row never changes again
            # (until reaped), so it can be answered from a plain read, without a lock.
            async with self._statement() as conn:
                row = (await conn.execute(_SELECT, {"b_scope": scope, "b_key": key})).first()
            if row is not None and row.status == COMPLETED and row.expires_at > now:
                return _finished(row, fingerprint)
        async with self._engine.begin() as conn:
            row = (await conn.execute(self._select, {"b_scope": scope, "b_key": key})).first()
            if row is None:  # reaped in between: the caller may simply retry
                return Claim(ClaimOutcome.IN_USE)
            if row.expires_at <= now:  # expired but not reaped yet: a fresh key
                await conn.execute(
                    _RESTART,
                    {
                        "b_id": row.id,
                        "request_hash": fingerprint,
                        "status": IN_PROGRESS,
                        "locked_at": now,
                        "response_code": None,
                        "response_body": None,
                        "response_headers": None,
                        "created_at": now,
                        "expires_at": expires_at,
                    },
                )
                return Claim(ClaimOutcome.STARTED)
            if row.request_hash != fingerprint or row.status == COMPLETED:
                return _finished(row, fingerprint)
            if row.locked_at is not None and row.locked_at > now - lock_timeout:
                return Claim(ClaimOutcome.IN_USE)
            await conn.execute(_RESTART, {"b_id": row.id, "locked_at": now})
            return Claim(ClaimOutcome.RESUMED)

    @unavailable_as_storage_error()
    async def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        async with self._statement() as conn:
            await conn.execute(
                _COMPLETE,
                {
                    "b_scope": scope,
                    "b_key": key,
                    "status": COMPLETED,
                    "response_code": response.status_code,
                    "response_body": response.body,
                    "response_headers": dict(response.headers),
                    "locked_at": None,
                },
            )

    @unavailable_as_storage_error()
    async def release(self, scope: str, key: str) -> None:
        async with self._statement() as conn:
            await conn.execute(_RELEASE, {"b_scope": scope, "b_key": key})

    async def reap(self, now: datetime, limit: int = 1000) -> int:
        async with self._engine.begin() as conn:
            expired = sa.select(keys.c.id).where(keys.c.expires_at <= now).limit(limit)
            result = await conn.execute(sa.delete(keys).where(keys.c.id.in_(expired)))
            return int(result.rowcount or 0)
