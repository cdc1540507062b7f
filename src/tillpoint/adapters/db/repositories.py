"""Repositories: explicit Core statements mapped to domain objects. Few round trips: a payment's
save is one UPDATE plus one multi-row INSERT per table it touches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.domain.errors import ActivePaymentExists, ConcurrentUpdate
from tillpoint.domain.money import Money
from tillpoint.domain.order import HistoryEntry, Order, OrderStatus
from tillpoint.domain.payment import (
    ACTIVE,
    CaptureMethod,
    Operation,
    OperationKind,
    OperationStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from tillpoint.domain.payment.events import PaymentEvent, Published
from tillpoint.domain.snapshot import CheckoutSnapshot, LineItem, Totals
from tillpoint.service.messages import EventDialect, outbox_message
from tillpoint.service.ports import PaymentFilter, StoredEvent

Row = sa.Row[Any]


# Hot statements are built once with bind parameters: building and coercing a statement on every
# call cost more CPU than executing it (see docs/performance.md).
_O = t.orders.c
_P = t.payments.c
_TX = t.payment_transactions.c
_INSERT_ORDER = t.orders.insert()
_UPDATE_ORDER = t.orders.update().where(
    _O.order_id == sa.bindparam("b_id"), _O.version == sa.bindparam("b_version")
)
_GET_ORDER = sa.select(t.orders).where(_O.order_id == sa.bindparam("b_id"))
_INSERT_HISTORY = t.order_status_history.insert()
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
_INSERT_OPERATION = t.payment_transactions.insert()
_UPDATE_OPERATION = t.payment_transactions.update().where(
    _TX.transaction_id == sa.bindparam("b_id")
)
_GET_OPERATION = sa.select(t.payment_transactions).where(_TX.transaction_id == sa.bindparam("b_id"))
_OPEN_OPERATIONS = (
    sa.select(t.payment_transactions)
    .where(
        _TX.payment_id == sa.bindparam("b_payment_id"),
        _TX.status.in_([OperationStatus.PENDING.value, OperationStatus.UNKNOWN.value]),
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


def _lock(stmt: sa.Select[Any], conn: AsyncConnection, for_update: bool) -> sa.Select[Any]:
    # SQLite serializes writers with BEGIN IMMEDIATE; FOR UPDATE is PostgreSQL's row lock.
    if for_update and conn.dialect.name != "sqlite":
        return stmt.with_for_update()
    return stmt


# -- orders --------------------------------------------------------------------------------------


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
        stmt = _lock(_GET_ORDER, self.conn, for_update)
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


# -- payments ------------------------------------------------------------------------------------


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
        stmt = _lock(_GET_PAYMENT, self.conn, for_update)
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
        row = (await self.conn.execute(_lock(stmt, self.conn, for_update))).first()
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


# -- operations (the provider ledger) ------------------------------------------------------------


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


# -- refunds ------------------------------------------------------------------------------------


def _refund(row: Row) -> Refund:
    return Refund(
        id=row.refund_id,
        payment_id=row.payment_id,
        amount=Money(row.amount_minor, row.currency),
        reason=row.reason,
        status=RefundStatus(row.status),
        provider_refund_id=row.provider_refund_id,
        created_at=row.created_at,
        processed_at=row.processed_at,
    )


class SqlRefunds:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, refund: Refund) -> None:
        await self.conn.execute(
            t.refunds.insert().values(
                refund_id=refund.id,
                payment_id=refund.payment_id,
                amount_minor=refund.amount.minor,
                currency=refund.amount.currency,
                reason=refund.reason,
                status=refund.status.value,
                provider_refund_id=refund.provider_refund_id,
                created_at=refund.created_at,
                processed_at=refund.processed_at,
            )
        )

    async def save(self, refund: Refund) -> None:
        await self.conn.execute(
            t.refunds.update()
            .where(t.refunds.c.refund_id == refund.id)
            .values(
                status=refund.status.value,
                provider_refund_id=refund.provider_refund_id,
                processed_at=refund.processed_at,
            )
        )

    async def get(self, refund_id: str) -> Refund | None:
        row = (
            await self.conn.execute(sa.select(t.refunds).where(t.refunds.c.refund_id == refund_id))
        ).first()
        return _refund(row) if row else None

    async def for_payment(self, payment_id: str) -> list[Refund]:
        rows = await self.conn.execute(
            sa.select(t.refunds)
            .where(t.refunds.c.payment_id == payment_id)
            .order_by(t.refunds.c.created_at, t.refunds.c.refund_id)
        )
        return [_refund(r) for r in rows]


# -- checkout snapshots --------------------------------------------------------------------------


class SqlSnapshots:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def add(self, snapshot: CheckoutSnapshot) -> None:
        totals = snapshot.totals
        await self.conn.execute(
            t.checkout_snapshots.insert().values(
                snapshot_id=snapshot.id,
                order_id=snapshot.order_id,
                currency=totals.total.currency,
                items=[
                    {
                        "variant_id": i.variant_id,
                        "quantity": i.quantity,
                        "unit_amount_minor": i.unit_amount.minor,
                    }
                    for i in snapshot.items
                ],
                subtotal_minor=totals.subtotal.minor,
                discount_minor=totals.discount.minor,
                shipping_minor=totals.shipping.minor,
                tax_minor=totals.tax.minor,
                total_minor=totals.total.minor,
                created_at=snapshot.created_at,
                expires_at=snapshot.expires_at,
            )
        )

    async def get(self, snapshot_id: str) -> CheckoutSnapshot | None:
        s = t.checkout_snapshots
        row = (await self.conn.execute(sa.select(s).where(s.c.snapshot_id == snapshot_id))).first()
        if row is None:
            return None
        cur = row.currency
        items = tuple(
            LineItem(i["variant_id"], i["quantity"], Money(i["unit_amount_minor"], cur))
            for i in row.items
        )
        totals = Totals(
            Money(row.subtotal_minor, cur),
            Money(row.discount_minor, cur),
            Money(row.shipping_minor, cur),
            Money(row.tax_minor, cur),
            Money(row.total_minor, cur),
        )
        return CheckoutSnapshot(
            row.snapshot_id, row.order_id, items, totals, row.created_at, row.expires_at
        )


# -- reconciliation runs -------------------------------------------------------------------------


class SqlReconciliations:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def start(self, run_id: str, now: datetime) -> None:
        await self.conn.execute(
            t.reconciliation_runs.insert().values(run_id=run_id, status="RUNNING", started_at=now)
        )

    async def finish(
        self, run_id: str, now: datetime, *, status: str, checked: int, resolved: int
    ) -> None:
        runs = t.reconciliation_runs
        await self.conn.execute(
            runs.update()
            .where(runs.c.run_id == run_id)
            .values(status=status, checked=checked, resolved=resolved, finished_at=now)
        )
