"""Operations: the provider ledger (one row per call to a provider, with its own status)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.repositories.common import Row
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    OPEN_OPERATION,
    Operation,
    OperationKind,
    OperationStatus,
)

_TX = t.payment_transactions.c
_INSERT_OPERATION = t.payment_transactions.insert()
_UPDATE_OPERATION = t.payment_transactions.update().where(
    _TX.transaction_id == sa.bindparam("b_id")
)
_GET_OPERATION = sa.select(t.payment_transactions).where(_TX.transaction_id == sa.bindparam("b_id"))
_OPEN_OPERATIONS = (
    sa.select(t.payment_transactions)
    .where(
        _TX.payment_id == sa.bindparam("b_payment_id"),
        _TX.status.in_([s.value for s in OPEN_OPERATION]),
    )
    .order_by(_TX.created_at)
)
_BY_REQUEST_KEY = (
    sa.select(t.payment_transactions)
    .where(
        _TX.payment_id == sa.bindparam("b_payment_id"),
        _TX.request_key == sa.bindparam("b_request_key"),
    )
    .order_by(_TX.created_at.desc())
    .limit(1)
)


def _operation(row: Row) -> Operation:
    return Operation(
        id=row.transaction_id,
        payment_id=row.payment_id,
        kind=OperationKind(row.kind),
        status=OperationStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        idempotency_key=row.idempotency_key,
        provider_reference=row.provider_reference,
        refund_id=row.refund_id,
        reason=row.reason,
        error_code=row.error_code,
        error_message=row.error_message,
        check_count=row.check_count,
        next_check_at=row.next_check_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
        request_key=row.request_key,
    )


def _operation_state(op: Operation) -> dict[str, Any]:
    return {
        "request_key": op.request_key,
        "status": op.status.value,
        "provider_reference": op.provider_reference,
        "error_code": op.error_code,
        "error_message": (op.error_message or "")[:500] or None,
        "check_count": op.check_count,
        "next_check_at": op.next_check_at,
        "updated_at": op.updated_at,
    }


class SqlOperations:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, op: Operation) -> None:
        await self.conn.execute(
            _INSERT_OPERATION,
            {
                "transaction_id": op.id,
                "payment_id": op.payment_id,
                "kind": op.kind.value,
                "amount_minor": op.amount.minor,
                "currency": op.amount.currency,
                "idempotency_key": op.idempotency_key,
                "refund_id": op.refund_id,
                "reason": op.reason,
                "created_at": op.created_at,
                **_operation_state(op),
            },
        )

    async def save(self, op: Operation) -> None:
        await self.conn.execute(_UPDATE_OPERATION, {"b_id": op.id, **_operation_state(op)})

    async def get(self, op_id: str) -> Operation | None:
        row = (await self.conn.execute(_GET_OPERATION, {"b_id": op_id})).first()
        return _operation(row) if row else None

    async def open_for(self, payment_id: str) -> list[Operation]:
        rows = await self.conn.execute(_OPEN_OPERATIONS, {"b_payment_id": payment_id})
        return [_operation(r) for r in rows]

    async def by_request_key(self, payment_id: str, request_key: str) -> Operation | None:
        row = (
            await self.conn.execute(
                _BY_REQUEST_KEY, {"b_payment_id": payment_id, "b_request_key": request_key}
            )
        ).first()
        return _operation(row) if row else None

    async def for_payment(self, payment_id: str) -> list[Operation]:
        tx = t.payment_transactions
        rows = await self.conn.execute(
            sa.select(tx).where(tx.c.payment_id == payment_id).order_by(tx.c.created_at)
        )
        return [_operation(r) for r in rows]

    async def due_for_check(self, now: datetime, limit: int) -> list[Operation]:
        tx = t.payment_transactions
        stmt = (
            sa.select(tx)
            .where(
                sa.text(t.OPEN_OPERATIONS),  # literal: matches the partial index
                tx.c.next_check_at <= now,
            )
            .order_by(tx.c.next_check_at)
            .limit(limit)
        )
        if self.conn.dialect.name != "sqlite":
            stmt = stmt.with_for_update(skip_locked=True)
        return [_operation(r) for r in await self.conn.execute(stmt)]
