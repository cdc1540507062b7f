"""Orders and their status history."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.repositories.common import Row, locked
from tillpoint.domain.errors import ConcurrentUpdate
from tillpoint.domain.money import Money
from tillpoint.domain.order import HistoryEntry, Order, OrderStatus

_O = t.orders.c
_INSERT_ORDER = t.orders.insert()
_UPDATE_ORDER = t.orders.update().where(
    _O.order_id == sa.bindparam("b_id"), _O.version == sa.bindparam("b_version")
)
_GET_ORDER = sa.select(t.orders).where(_O.order_id == sa.bindparam("b_id"))
_INSERT_HISTORY = t.order_status_history.insert()


def _order(row: Row) -> Order:
    return Order(
        order_id=row.order_id,
        buyer_id=row.buyer_id,
        amount=Money(row.amount_minor, row.currency),
        status=OrderStatus(row.status),
        created_at=row.created_at,
        updated_at=row.updated_at,
        version=row.version,
        request_key=row.request_key,
    )


def _history_rows(order_id: str, entries: list[HistoryEntry]) -> list[dict[str, Any]]:
    return [
        {
            "order_id": order_id,
            "from_status": e.from_status.value if e.from_status else None,
            "to_status": e.to_status.value,
            "reason": e.reason[:200],
            "source": e.source,
            "actor": e.actor,
            "correlation_id": e.correlation_id,
            "created_at": e.created_at,
        }
        for e in entries
    ]


class SqlOrders:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, order: Order) -> None:
        await self.conn.execute(
            _INSERT_ORDER,
            {
                "order_id": order.order_id,
                "buyer_id": order.buyer_id,
                "amount_minor": order.amount.minor,
                "currency": order.amount.currency,
                "status": order.status.value,
                "version": 0,
                "request_key": order.request_key,
                "created_at": order.created_at,
                "updated_at": order.updated_at,
            },
        )
        await self._history(order)

    async def _history(self, order: Order) -> None:
        entries = order.take_history()
        if entries:
            await self.conn.execute(_INSERT_HISTORY, _history_rows(order.order_id, entries))

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        stmt = locked(_GET_ORDER, self.conn, for_update)
        row = (await self.conn.execute(stmt, {"b_id": order_id})).first()
        return _order(row) if row else None

    async def save(self, order: Order) -> None:
        result = await self.conn.execute(
            _UPDATE_ORDER,
            {
                "b_id": order.order_id,
                "b_version": order.version,
                "status": order.status.value,
                "amount_minor": order.amount.minor,
                "version": order.version + 1,
                "updated_at": order.updated_at,
            },
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"order {order.order_id} changed concurrently; retry")
        order.version += 1
        await self._history(order)

    async def history(self, order_id: str) -> list[HistoryEntry]:
        h = t.order_status_history
        rows = await self.conn.execute(
            sa.select(h).where(h.c.order_id == order_id).order_by(h.c.id)
        )
        return [
            HistoryEntry(
                OrderStatus(r.from_status) if r.from_status else None,
                OrderStatus(r.to_status),
                r.reason,
                r.source,
                r.actor,
                r.correlation_id,
                r.created_at,
            )
            for r in rows
        ]
