"""The money movements of a window, streamed: one query (operations, and refunds that have no
operation of their own), read in batches through a server-side cursor on PostgreSQL and a
stepped cursor on SQLite, so a month of payments never sits in memory.

The read runs in its own read-only transaction: on PostgreSQL one snapshot for the whole file;
on SQLite a deferred `BEGIN` (see `engine.py`), which in WAL mode holds no write lock, so
payments keep committing while an export streams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tillpoint.adapters.db.engine import read_only
from tillpoint.adapters.db.errors import unavailable_as_storage_error
from tillpoint.adapters.db.tables import payment_transactions as txn
from tillpoint.adapters.db.tables import payments as p
from tillpoint.adapters.db.tables import refunds as r
from tillpoint.service.ports import ExportWindow, Movement

# Rows fetched per round trip: large enough to keep the database busy, small enough that a
# batch is a few hundred kilobytes.
BATCH = 1000


def _window(column: sa.ColumnElement[Any], window: ExportWindow) -> list[sa.ColumnElement[bool]]:
    conditions = [column >= window.created_from, column < window.created_to]
    if window.provider is not None:
        conditions.append(p.c.provider == window.provider)
    return conditions


def _statement(window: ExportWindow) -> sa.Select[Any]:
    operations = (
        sa.select(
            txn.c.transaction_id,
            txn.c.kind,
            txn.c.status,
            txn.c.amount_minor,
            txn.c.currency,
            txn.c.payment_id,
            p.c.order_id,
            p.c.provider,
            p.c.provider_payment_id,
            txn.c.provider_reference,
            txn.c.idempotency_key,
            txn.c.refund_id,
            sa.func.coalesce(txn.c.reason, r.c.reason).label("reason"),
            txn.c.error_code,
            txn.c.created_at,
            txn.c.updated_at,
            txn.c.transaction_id.label("sort_id"),
        )
        .select_from(
            txn.join(p, p.c.payment_id == txn.c.payment_id).outerjoin(
                r, r.c.refund_id == txn.c.refund_id
            )
        )
        .where(*_window(txn.c.created_at, window))
    )
    no_operation = ~sa.exists().where(txn.c.refund_id == r.c.refund_id)
    text_null = sa.cast(sa.null(), sa.String)
    lone_refunds = (
        sa.select(
            text_null,
            sa.literal_column("'REFUND'", sa.String),
            r.c.status,
            r.c.amount_minor,
            r.c.currency,
            r.c.payment_id,
            p.c.order_id,
            p.c.provider,
            p.c.provider_payment_id,
            r.c.provider_refund_id,
            text_null,
            r.c.refund_id,
            r.c.reason,
            text_null,
            r.c.created_at,
            r.c.processed_at,
            r.c.refund_id,
        )
        .select_from(r.join(p, p.c.payment_id == r.c.payment_id))
        .where(*_window(r.c.created_at, window), no_operation)
    )
    movements = sa.union_all(operations, lone_refunds).subquery("movements")
    return sa.select(movements).order_by(movements.c.created_at, movements.c.sort_id)


def _movement(row: Any) -> Movement:
    return Movement(
        transaction_id=row.transaction_id,
        kind=row.kind,
        status=row.status,
        amount_minor=row.amount_minor,
        currency=row.currency,
        payment_id=row.payment_id,
        order_id=row.order_id,
        provider=row.provider,
        provider_payment_id=row.provider_payment_id,
        provider_reference=row.provider_reference,
        idempotency_key=row.idempotency_key,
        refund_id=row.refund_id,
        reason=row.reason,
        error_code=row.error_code,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlMovementSource:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = read_only(engine)

    async def movements(self, window: ExportWindow) -> AsyncIterator[Movement]:
        statement = _statement(window).execution_options(yield_per=BATCH)
        async with unavailable_as_storage_error(), self._engine.connect() as conn:
            result = await conn.stream(statement)
            async for row in result:
                yield _movement(row)

    async def count(self, window: ExportWindow) -> int:
        movements = _statement(window).order_by(None).subquery()
        async with unavailable_as_storage_error(), self._engine.connect() as conn:
            found = await conn.scalar(sa.select(sa.func.count()).select_from(movements))
        return int(found or 0)
