"""Payments, with the events they recorded: each event becomes a `payment_events` row and, when
it is published, an outbox row in the same transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.repositories.common import Row, locked
from tillpoint.domain.errors import ActivePaymentExists, ConcurrentUpdate
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    ACTIVE,
    CaptureMethod,
    Payment,
    PaymentMethod,
    PaymentStatus,
)
from tillpoint.domain.payment.events import PaymentEvent, Published
from tillpoint.service.messages import EventDialect, outbox_message
from tillpoint.service.ports import PaymentFilter, StoredEvent

_P = t.payments.c
# PostgreSQL fills `payment_number` from its sequence; SQLite takes max + 1 (see tables.py).
_INSERT_PAYMENT = t.payments.insert().returning(_P.payment_number)
_INSERT_PAYMENT_SQLITE = (
    t.payments.insert()
    .values(
        payment_number=sa.select(sa.func.coalesce(sa.func.max(_P.payment_number), 0) + 1)
        .select_from(t.payments)
        .scalar_subquery()
    )
    .returning(_P.payment_number)
)
_UPDATE_PAYMENT = t.payments.update().where(
    _P.payment_id == sa.bindparam("b_id"), _P.version == sa.bindparam("b_version")
)
_GET_PAYMENT = sa.select(t.payments).where(_P.payment_id == sa.bindparam("b_id"))
_INSERT_EVENTS = t.payment_events.insert()


def _payment(row: Row) -> Payment:
    method = dict(row.payment_method or {})
    return Payment(
        id=row.payment_id,
        order_id=row.order_id,
        buyer_id=row.buyer_id,
        status=PaymentStatus(row.status),
        amount=Money(row.amount_minor, row.currency),
        capture_method=CaptureMethod(row.capture_method),
        provider=row.provider,
        provider_payment_id=row.provider_payment_id,
        payment_method=PaymentMethod(**method),
        authorized_minor=row.authorized_minor,
        captured_minor=row.captured_minor,
        refunded_minor=row.refunded_minor,
        refund_pending_minor=row.refund_pending_minor,
        disputed_minor=row.disputed_minor,
        dispute_lost_minor=row.dispute_lost_minor,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        next_action=row.next_action,
        snapshot_id=row.snapshot_id,
        request_key=row.request_key,
        sequence=row.sequence,
        version=row.version,
        operation_count=row.operation_count,
        number=row.payment_number,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _method(method: PaymentMethod) -> dict[str, Any]:
    return {
        k: v
        for k, v in {
            "type": method.type,
            "token": method.token,
            "brand": method.brand,
            "last4": method.last4,
            "exp_month": method.exp_month,
            "exp_year": method.exp_year,
            "holder_name": method.holder_name,
        }.items()
        if v is not None
    }


def _mutable(payment: Payment) -> dict[str, Any]:
    return {
        "status": payment.status.value,
        "provider_payment_id": payment.provider_payment_id,
        "payment_method": _method(payment.payment_method),
        "authorized_minor": payment.authorized_minor,
        "captured_minor": payment.captured_minor,
        "refunded_minor": payment.refunded_minor,
        "refund_pending_minor": payment.refund_pending_minor,
        "disputed_minor": payment.disputed_minor,
        "dispute_lost_minor": payment.dispute_lost_minor,
        "failure_code": payment.failure_code,
        "failure_message": payment.failure_message,
        "next_action": dict(payment.next_action) if payment.next_action is not None else None,
        "sequence": payment.sequence,
        "operation_count": payment.operation_count,
        "updated_at": payment.updated_at,
    }


# How each database names the violated one-active-payment-per-order index.
_ONE_ACTIVE = ("uq_payments_one_active_per_order", "payments.order_id")


class SqlPayments:
    def __init__(
        self, conn: AsyncConnection, *, dialect: EventDialect = EventDialect.DEFAULT
    ) -> None:
        self.conn = conn
        self.dialect = dialect
        self.outbox = SqlOutbox(conn)

    async def add(self, payment: Payment) -> None:
        insert = _INSERT_PAYMENT_SQLITE if self.conn.dialect.name == "sqlite" else _INSERT_PAYMENT
        try:
            result = await self.conn.execute(
                insert,
                {
                    "payment_id": payment.id,
                    "order_id": payment.order_id,
                    "buyer_id": payment.buyer_id,
                    "amount_minor": payment.amount.minor,
                    "currency": payment.amount.currency,
                    "capture_method": payment.capture_method.value,
                    "provider": payment.provider,
                    "snapshot_id": payment.snapshot_id,
                    "request_key": payment.request_key,
                    "version": 0,
                    "created_at": payment.created_at,
                    **_mutable(payment),
                },
            )
        except IntegrityError as exc:  # the transaction is over either way
            if not any(name in str(exc.orig) for name in _ONE_ACTIVE):
                raise
            raise ActivePaymentExists(
                f"order {payment.order_id} already has an active payment"
            ) from exc
        payment.number = result.scalar_one()
        await self._events(payment.take_events(), payment)

    async def save(self, payment: Payment) -> None:
        result = await self.conn.execute(
            _UPDATE_PAYMENT,
            {
                "b_id": payment.id,
                "b_version": payment.version,
                "version": payment.version + 1,
                **_mutable(payment),
            },
        )
        if result.rowcount != 1:
            raise ConcurrentUpdate(f"payment {payment.id} changed concurrently; retry")
        payment.version += 1
        await self._events(payment.take_events(), payment)

    async def _events(self, events: list[PaymentEvent], payment: Payment) -> None:
        if not events:
            return
        payment_id = payment.id
        stored = [e for e in events if e.stored]
        if stored:
            await self.conn.execute(
                _INSERT_EVENTS,
                [
                    {
                        "event_id": e.id,
                        "payment_id": payment_id,
                        "event_type": e.type,
                        "payload": e.payload(),
                        "created_at": e.occurred_at,
                    }
                    for e in stored
                ],
            )
        await self.outbox.write(
            [
                outbox_message(e, dialect=self.dialect, payment_number=payment.number)
                for e in events
                if isinstance(e, Published)
            ]
        )

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        stmt = locked(_GET_PAYMENT, self.conn, for_update)
        row = (await self.conn.execute(stmt, {"b_id": payment_id})).first()
        return _payment(row) if row else None

    async def by_request_key(self, request_key: str) -> Payment | None:
        stmt = (
            sa.select(t.payments)
            .where(t.payments.c.request_key == request_key)
            .order_by(t.payments.c.payment_id.desc())
            .limit(1)
        )
        row = (await self.conn.execute(stmt)).first()
        return _payment(row) if row else None

    async def by_provider_id(
        self, provider: str, provider_payment_id: str, *, for_update: bool = False
    ) -> Payment | None:
        stmt = sa.select(t.payments).where(
            t.payments.c.provider == provider,
            t.payments.c.provider_payment_id == provider_payment_id,
        )
        row = (await self.conn.execute(locked(stmt, self.conn, for_update))).first()
        return _payment(row) if row else None

    async def active_for_order(self, order_id: str) -> Payment | None:
        stmt = sa.select(t.payments).where(
            t.payments.c.order_id == order_id,
            t.payments.c.status.in_([s.value for s in ACTIVE]),
        )
        row = (await self.conn.execute(stmt)).first()
        return _payment(row) if row else None

    async def for_order(self, order_id: str) -> list[Payment]:
        stmt = (
            sa.select(t.payments)
            .where(t.payments.c.order_id == order_id)
            .order_by(t.payments.c.payment_id.desc())
        )
        return [_payment(r) for r in await self.conn.execute(stmt)]

    async def page(
        self, filters: PaymentFilter, limit: int, cursor: str | None
    ) -> tuple[list[Payment], str | None]:
        p = t.payments.c
        stmt = sa.select(t.payments).order_by(p.payment_id.desc()).limit(limit + 1)
        conditions: list[sa.ColumnElement[bool]] = []
        if filters.status:
            conditions.append(p.status == filters.status)
        if filters.order_id:
            conditions.append(p.order_id == filters.order_id)
        if filters.provider:
            conditions.append(p.provider == filters.provider)
        if filters.buyer_id:
            conditions.append(p.buyer_id == filters.buyer_id)
        if filters.created_from:
            conditions.append(p.created_at >= filters.created_from)
        if filters.created_to:
            conditions.append(p.created_at < filters.created_to)
        if cursor:
            conditions.append(p.payment_id < cursor)
        rows = [_payment(r) for r in await self.conn.execute(stmt.where(*conditions))]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    async def events(self, payment_id: str) -> list[StoredEvent]:
        e = t.payment_events
        rows = await self.conn.execute(
            sa.select(e).where(e.c.payment_id == payment_id).order_by(e.c.id)
        )
        return [StoredEvent(r.event_id, r.event_type, r.payload, r.created_at) for r in rows]

    async def stale_initiated(self, older_than: datetime, limit: int) -> list[str]:
        p = t.payments.c
        rows = await self.conn.execute(
            sa.select(p.payment_id)
            .where(p.status == PaymentStatus.INITIATED.value, p.created_at < older_than)
            .order_by(p.created_at)
            .limit(limit)
        )
        return [r.payment_id for r in rows]
