"""The provider call audit (`provider_call_audit`): one row per outbound call attempt.

Rows are written outside the use cases' units of work — a provider call happens between their
two transactions — each in a short transaction of its own (autocommit on PostgreSQL), so a row
is kept whatever the use case does next.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tillpoint.adapters.db.tables import provider_call_audit as audit
from tillpoint.service.ports import ProviderCall

_INSERT = audit.insert()
_FOR_PAYMENT = (
    sa.select(audit)
    .where(audit.c.payment_id == sa.bindparam("b_payment"))
    .order_by(audit.c.created_at, audit.c.id)
)


def _fit(value: str | None, column: str) -> str | None:
    """Cut a text to its column (a provider's request id or a correlation id is theirs to
    size): an audit row is better shortened than lost."""
    length: int | None = getattr(audit.c[column].type, "length", None)
    return value[:length] if value is not None and length else value


def _values(call: ProviderCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "provider": _fit(call.provider, "provider"),
        "operation": _fit(call.operation, "operation"),
        "payment_id": _fit(call.payment_id, "payment_id"),
        "idempotency_key": _fit(call.idempotency_key, "idempotency_key"),
        "provider_request_id": _fit(call.provider_request_id, "provider_request_id"),
        "http_status": call.http_status,
        "outcome": _fit(call.outcome, "outcome"),
        "latency_ms": call.latency_ms,
        "correlation_id": _fit(call.correlation_id, "correlation_id"),
        "request_body": _body(call.request_body),
        "response_body": _body(call.response_body),
        "created_at": call.created_at,
    }


def _body(body: Mapping[str, object] | None) -> dict[str, object] | None:
    return dict(body) if body is not None else None


def _call(row: Any) -> ProviderCall:
    return ProviderCall(
        id=row.id,
        provider=row.provider,
        operation=row.operation,
        payment_id=row.payment_id,
        idempotency_key=row.idempotency_key,
        provider_request_id=row.provider_request_id,
        http_status=row.http_status,
        outcome=row.outcome,
        latency_ms=row.latency_ms,
        correlation_id=row.correlation_id,
        request_body=row.request_body,
        response_body=row.response_body,
        created_at=row.created_at,
    )


class SqlProviderCallLog:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """One INSERT: autocommit on PostgreSQL (no BEGIN/COMMIT round trips); SQLite keeps its
        explicit IMMEDIATE transaction, which queues its writers."""
        if self._engine.dialect.name == "postgresql":
            return self._autocommit.connect()
        return self._engine.begin()

    async def record(self, call: ProviderCall) -> None:
        async with self._connect() as conn:
            await conn.execute(_INSERT, _values(call))

    async def for_payment(self, payment_id: str) -> list[ProviderCall]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(_FOR_PAYMENT, {"b_payment": payment_id})
            return [_call(row) for row in rows]
