"""In-memory fakes of the service's ports, so the use cases run in a unit test without a
database, a provider or a broker.

They keep the semantics the use cases rely on, not the SQL: a unit of work sees the committed
rows plus its own writes, `commit()` publishes those writes, leaving without a commit discards
them; objects are copied in and out, so a change a use case does not save is not stored; a
payment's `save` turns its events into audit rows and outbox messages the way the SQL repository
does (`service/messages.py` decides each message) and bumps `version`. `for_update=True` only
reads: these fakes run one use case at a time.

`world()` wires them into a `Deps` for a test.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar

from tillpoint.domain.errors import ActivePaymentExists, ConcurrentUpdate
from tillpoint.domain.money import Money
from tillpoint.domain.order import HistoryEntry, Order
from tillpoint.domain.payment import (
    ACTIVE,
    Dispute,
    Operation,
    Outcome,
    Payment,
    PaymentStatus,
    ProviderStatus,
    Refund,
)
from tillpoint.domain.payment.events import PaymentEvent, Published
from tillpoint.domain.reconciliation import Discrepancy, Run, RunStatus
from tillpoint.domain.snapshot import CheckoutSnapshot
from tillpoint.service.context import Deps, ServiceConfig
from tillpoint.service.messages import EventDialect, outbox_message
from tillpoint.service.outbox import BACKLOG_CAP
from tillpoint.service.ports import (
    CLAIMABLE,
    AuthorizeRequest,
    Capabilities,
    Clock,
    DiscrepancyFilter,
    DisputeFilter,
    DisputeRepository,
    InboxEntry,
    InboxRepository,
    Lookup,
    OperationRepository,
    OrderRepository,
    OutboxMessage,
    OutboxRepository,
    PaymentFilter,
    PaymentProvider,
    PaymentRepository,
    ProviderCallLog,
    ProviderPayment,
    ProviderTimeout,
    ReconciliationRepository,
    RefundRepository,
    SnapshotRepository,
    StoredEvent,
    StoredWebhook,
    Telemetry,
    UnitOfWorkFactory,
    WebhookRepository,
)
from tillpoint.service.ports import ProviderCall as AuditedCall

K = TypeVar("K")
V = TypeVar("V")

START = datetime(2026, 11, 23, 10, 30, tzinfo=UTC)


class DuplicateKey(Exception):
    """A row with this primary key exists (the database would refuse the INSERT)."""


# -- the store and one transaction's view of it ---------------------------------------------------


@dataclass(slots=True)
class OutboxRow:
    message: OutboxMessage
    published_at: datetime | None = None
    last_error: str | None = None


@dataclass(slots=True)
class FakeStore:
    """The committed rows, table by table. Tests read (never write) it to see what a use case
    committed; the helpers below answer the usual questions."""

    orders: dict[str, Order] = field(default_factory=dict)
    history: dict[int, tuple[str, HistoryEntry]] = field(default_factory=dict)
    payments: dict[str, Payment] = field(default_factory=dict)
    events: dict[int, tuple[str, StoredEvent]] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    refunds: dict[str, Refund] = field(default_factory=dict)
    disputes: dict[str, Dispute] = field(default_factory=dict)
    snapshots: dict[str, CheckoutSnapshot] = field(default_factory=dict)
    reconciliations: dict[str, Run] = field(default_factory=dict)
    discrepancies: dict[str, Discrepancy] = field(default_factory=dict)
    outbox: dict[int, OutboxRow] = field(default_factory=dict)
    inbox: dict[tuple[str, str], InboxEntry] = field(default_factory=dict)
    webhooks: dict[str, StoredWebhook] = field(default_factory=dict)
    commits: int = 0
    # Row ids and payment numbers are handed out like database sequences: a rolled-back
    # transaction leaves a gap.
    row_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    payment_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def payment(self, payment_id: str) -> Payment:
        return self.payments[payment_id]

    def operations_of(self, payment_id: str) -> list[Operation]:
        return [op for op in self.operations.values() if op.payment_id == payment_id]

    def refunds_of(self, payment_id: str) -> list[Refund]:
        return [r for r in self.refunds.values() if r.payment_id == payment_id]

    def event_types(self, payment_id: str) -> list[str]:
        return [e.event_type for pid, e in self.events.values() if pid == payment_id]

    def messages(self, payment_id: str | None = None) -> list[OutboxMessage]:
        return [
            row.message
            for row in self.outbox.values()
            if payment_id is None or row.message.aggregate_id == payment_id
        ]

    def routing_keys(self, payment_id: str | None = None) -> list[str]:
        return [m.routing_key for m in self.messages(payment_id)]


class _Staged(Generic[K, V]):
    """One table as a transaction sees it: the committed rows overlaid with its own writes.

    Rows are copied on the way in and out, as a database does: a caller that changes what it
    read has changed nothing until it saves."""

    def __init__(self, committed: dict[K, V]) -> None:
        self._committed = committed
        self._written: dict[K, V] = {}

    def __contains__(self, key: K) -> bool:
        return key in self._written or key in self._committed

    def get(self, key: K) -> V | None:
        if key in self._written:
            return copy.deepcopy(self._written[key])
        value = self._committed.get(key)
        return None if value is None else copy.deepcopy(value)

    def put(self, key: K, value: V) -> None:
        self._written[key] = copy.deepcopy(value)

    def insert(self, key: K, value: V) -> None:
        if key in self:
            raise DuplicateKey(repr(key))
        self.put(key, value)

    def items(self) -> list[tuple[K, V]]:
        """Every row in insertion order (committed rows first), as copies."""
        merged = {**self._committed, **self._written}
        return [(k, copy.deepcopy(v)) for k, v in merged.items()]

    def rows(self) -> list[V]:
        return [v for _, v in self.items()]

    def commit(self) -> None:
        self._committed.update(self._written)
        self._written.clear()


class _Transaction:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.orders = _Staged(store.orders)
        self.history = _Staged(store.history)
        self.payments = _Staged(store.payments)
        self.events = _Staged(store.events)
        self.operations = _Staged(store.operations)
        self.refunds = _Staged(store.refunds)
        self.disputes = _Staged(store.disputes)
        self.snapshots = _Staged(store.snapshots)
        self.reconciliations = _Staged(store.reconciliations)
        self.discrepancies = _Staged(store.discrepancies)
        self.outbox = _Staged(store.outbox)
        self.inbox = _Staged(store.inbox)
        self.webhooks = _Staged(store.webhooks)
        self._tables: tuple[_Staged[Any, Any], ...] = (
            self.orders,
            self.history,
            self.payments,
            self.events,
            self.operations,
            self.refunds,
            self.disputes,
            self.snapshots,
            self.reconciliations,
            self.discrepancies,
            self.outbox,
            self.inbox,
            self.webhooks,
        )

    def row_id(self) -> int:
        return next(self.store.row_ids)

    def commit(self) -> None:
        for table in self._tables:
            table.commit()
        self.store.commits += 1


# -- repositories ------------------------------------------------------------------------------


class FakeOrders:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, order: Order) -> None:
        self.tx.orders.insert(order.order_id, replace(order, version=0, new_history=[]))
        self._history(order)

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        return self.tx.orders.get(order_id)

    async def save(self, order: Order) -> None:
        current = self.tx.orders.get(order.order_id)
        if current is None or current.version != order.version:
            raise ConcurrentUpdate(f"order {order.order_id} changed concurrently; retry")
        order.version += 1
        self.tx.orders.put(order.order_id, replace(order, new_history=[]))
        self._history(order)

    def _history(self, order: Order) -> None:
        for entry in order.take_history():
            self.tx.history.put(self.tx.row_id(), (order.order_id, entry))

    async def history(self, order_id: str) -> list[HistoryEntry]:
        return [entry for oid, entry in self.tx.history.rows() if oid == order_id]


class FakePayments:
    def __init__(self, tx: _Transaction, outbox: FakeOutbox, dialect: EventDialect) -> None:
        self.tx = tx
        self.outbox = outbox
        self.dialect = dialect

    async def add(self, payment: Payment) -> None:
        if payment.status in ACTIVE and any(
            p.order_id == payment.order_id and p.status in ACTIVE for p in self.tx.payments.rows()
        ):
            raise ActivePaymentExists(f"order {payment.order_id} already has an active payment")
        payment.number = next(self.tx.store.payment_numbers)
        events = payment.take_events()
        self.tx.payments.insert(payment.id, replace(payment, version=0, events=[]))
        self._events(events, payment)

    async def save(self, payment: Payment) -> None:
        current = self.tx.payments.get(payment.id)
        if current is None or current.version != payment.version:
            raise ConcurrentUpdate(f"payment {payment.id} changed concurrently; retry")
        payment.version += 1
        events = payment.take_events()
        self.tx.payments.put(payment.id, replace(payment, events=[]))
        self._events(events, payment)

    def _events(self, events: list[PaymentEvent], payment: Payment) -> None:
        """The audit rows of the stored events, the outbox rows of the published ones."""
        for e in events:
            if e.stored:
                row = StoredEvent(e.id, e.type, e.payload(), e.occurred_at)
                self.tx.events.put(self.tx.row_id(), (payment.id, row))
        self.outbox.write(
            [
                outbox_message(e, dialect=self.dialect, payment_number=payment.number)
                for e in events
                if isinstance(e, Published)
            ]
        )

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return self.tx.payments.get(payment_id)

    async def by_request_key(self, request_key: str) -> Payment | None:
        found = [p for p in self.tx.payments.rows() if p.request_key == request_key]
        return found[-1] if found else None

    async def by_provider_id(
        self, provider: str, provider_payment_id: str, *, for_update: bool = False
    ) -> Payment | None:
        for p in self.tx.payments.rows():
            if p.provider == provider and p.provider_payment_id == provider_payment_id:
                return p
        return None

    async def active_for_order(self, order_id: str) -> Payment | None:
        for p in self.tx.payments.rows():
            if p.order_id == order_id and p.status in ACTIVE:
                return p
        return None

    async def for_order(self, order_id: str) -> list[Payment]:
        return [p for p in reversed(self.tx.payments.rows()) if p.order_id == order_id]

    async def page(
        self, filters: PaymentFilter, limit: int, cursor: str | None
    ) -> tuple[list[Payment], str | None]:
        def wanted(p: Payment) -> bool:
            return (
                (filters.status is None or p.status.value == filters.status)
                and (filters.order_id is None or p.order_id == filters.order_id)
                and (filters.provider is None or p.provider == filters.provider)
                and (filters.buyer_id is None or p.buyer_id == filters.buyer_id)
                and (filters.created_from is None or p.created_at >= filters.created_from)
                and (filters.created_to is None or p.created_at < filters.created_to)
                and (cursor is None or p.id < cursor)
            )

        rows = sorted(
            (p for p in self.tx.payments.rows() if wanted(p)), key=lambda p: p.id, reverse=True
        )
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    async def events(self, payment_id: str) -> list[StoredEvent]:
        return [e for pid, e in self.tx.events.rows() if pid == payment_id]

    async def stale_initiated(self, older_than: datetime, limit: int) -> list[str]:
        stale = [
            p
            for p in self.tx.payments.rows()
            if p.status is PaymentStatus.INITIATED and p.created_at < older_than
        ]
        return [p.id for p in sorted(stale, key=lambda p: p.created_at)[:limit]]


class FakeOperations:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, op: Operation) -> None:
        self.tx.operations.insert(op.id, op)

    async def save(self, op: Operation) -> None:
        assert op.id in self.tx.operations, f"operation {op.id} was never added"
        self.tx.operations.put(op.id, op)

    async def get(self, op_id: str) -> Operation | None:
        return self.tx.operations.get(op_id)

    def _of(self, payment_id: str) -> list[Operation]:
        ops = [op for op in self.tx.operations.rows() if op.payment_id == payment_id]
        return sorted(ops, key=lambda op: op.created_at)  # stable: ties keep insertion order

    async def open_for(self, payment_id: str) -> list[Operation]:
        return [op for op in self._of(payment_id) if op.open]

    async def by_request_key(self, payment_id: str, request_key: str) -> Operation | None:
        found = [op for op in self._of(payment_id) if op.request_key == request_key]
        return found[-1] if found else None

    async def for_payment(self, payment_id: str) -> list[Operation]:
        return self._of(payment_id)

    async def due_for_check(self, now: datetime, limit: int) -> list[Operation]:
        due = [
            op
            for op in self.tx.operations.rows()
            if op.open and op.next_check_at is not None and op.next_check_at <= now
        ]
        return sorted(due, key=lambda op: op.next_check_at or now)[:limit]


class FakeRefunds:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, refund: Refund) -> None:
        self.tx.refunds.insert(refund.id, refund)

    async def save(self, refund: Refund) -> None:
        assert refund.id in self.tx.refunds, f"refund {refund.id} was never added"
        self.tx.refunds.put(refund.id, refund)

    async def get(self, refund_id: str) -> Refund | None:
        return self.tx.refunds.get(refund_id)

    async def for_payment(self, payment_id: str) -> list[Refund]:
        found = [r for r in self.tx.refunds.rows() if r.payment_id == payment_id]
        return sorted(found, key=lambda r: (r.created_at, r.id))


class FakeDisputes:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, dispute: Dispute) -> None:
        if await self.by_provider_id(dispute.provider, dispute.provider_dispute_id) is not None:
            raise DuplicateKey(f"{dispute.provider} dispute {dispute.provider_dispute_id}")
        self.tx.disputes.insert(dispute.id, dispute)

    async def save(self, dispute: Dispute) -> None:
        assert dispute.id in self.tx.disputes, f"dispute {dispute.id} was never added"
        self.tx.disputes.put(dispute.id, dispute)

    async def by_provider_id(self, provider: str, provider_dispute_id: str) -> Dispute | None:
        for d in self.tx.disputes.rows():
            if (d.provider, d.provider_dispute_id) == (provider, provider_dispute_id):
                return d
        return None

    async def for_payment(self, payment_id: str) -> list[Dispute]:
        return sorted(
            (d for d in self.tx.disputes.rows() if d.payment_id == payment_id), key=lambda d: d.id
        )

    async def page(
        self, filters: DisputeFilter, limit: int, cursor: str | None
    ) -> tuple[list[Dispute], str | None]:
        rows = sorted(
            (
                d
                for d in self.tx.disputes.rows()
                if (filters.status is None or d.status.value == filters.status)
                and (filters.payment_id is None or d.payment_id == filters.payment_id)
                and (cursor is None or d.id < cursor)
            ),
            key=lambda d: d.id,
            reverse=True,
        )
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None


class FakeSnapshots:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, snapshot: CheckoutSnapshot) -> None:
        self.tx.snapshots.insert(snapshot.id, snapshot)

    async def get(self, snapshot_id: str) -> CheckoutSnapshot | None:
        return self.tx.snapshots.get(snapshot_id)


class FakeReconciliations:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def add(self, run: Run) -> bool:
        if run.slot is not None and any(r.slot == run.slot for r in self.tx.reconciliations.rows()):
            return False
        self.tx.reconciliations.insert(run.run_id, run)
        return True

    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None:
        return self.tx.reconciliations.get(run_id)

    async def save(self, run: Run) -> None:
        assert run.run_id in self.tx.reconciliations, f"run {run.run_id} was never added"
        self.tx.reconciliations.put(run.run_id, run)

    async def page(self, limit: int, cursor: str | None) -> tuple[list[Run], str | None]:
        runs = sorted(
            (r for r in self.tx.reconciliations.rows() if cursor is None or r.run_id < cursor),
            key=lambda r: r.run_id,
            reverse=True,
        )
        if len(runs) > limit:
            return runs[:limit], runs[limit - 1].run_id
        return runs, None

    async def running(self) -> list[Run]:
        return [r for r in self.tx.reconciliations.rows() if r.status is RunStatus.RUNNING]

    async def last_finished_at(self) -> datetime | None:
        done = [
            r.finished_at
            for r in self.tx.reconciliations.rows()
            if r.status is RunStatus.FINISHED and r.finished_at is not None
        ]
        return max(done, default=None)

    async def add_discrepancy(self, found: Discrepancy) -> bool:
        if any(d.fingerprint == found.fingerprint for d in self.tx.discrepancies.rows()):
            return False
        self.tx.discrepancies.insert(found.id, found)
        return True

    async def discrepancy(
        self, discrepancy_id: str, *, for_update: bool = False
    ) -> Discrepancy | None:
        return self.tx.discrepancies.get(discrepancy_id)

    async def save_discrepancy(self, found: Discrepancy) -> None:
        self.tx.discrepancies.put(found.id, found)

    async def discrepancies(
        self, run_id: str, filters: DiscrepancyFilter, limit: int, cursor: str | None
    ) -> tuple[list[Discrepancy], str | None]:
        rows = sorted(
            (
                d
                for d in self.tx.discrepancies.rows()
                if d.run_id == run_id
                and (filters.kind is None or d.kind.value == filters.kind)
                and (filters.action is None or d.action.value == filters.action)
                and (cursor is None or d.id > cursor)
            ),
            key=lambda d: d.id,
        )
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None


class FakeOutbox:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    def write(self, messages: Sequence[OutboxMessage]) -> None:
        """The one writer of outbox rows, called as a payment is saved."""
        for message in messages:
            row_id = self.tx.row_id()
            self.tx.outbox.put(row_id, OutboxRow(replace(message, id=row_id)))

    def _unpublished(self) -> list[OutboxRow]:
        return [row for row in self.tx.outbox.rows() if row.published_at is None]

    async def claim(self, limit: int) -> list[OutboxMessage]:
        return [row.message for row in self._unpublished()[:limit]]

    async def unpublished_sequences(self, aggregate_ids: Sequence[str]) -> dict[str, list[int]]:
        result: dict[str, list[int]] = {}
        for row in self._unpublished():
            if row.message.aggregate_id in aggregate_ids:
                result.setdefault(row.message.aggregate_id, []).append(row.message.sequence)
        return {k: sorted(v) for k, v in result.items()}

    def _mark(self, ids: Sequence[int], published_at: datetime | None, error: str | None) -> None:
        for row_id in ids:
            row = self.tx.outbox.get(row_id)
            assert row is not None
            row.message = replace(row.message, attempts=row.message.attempts + 1)
            row.published_at, row.last_error = published_at, error
            self.tx.outbox.put(row_id, row)

    async def mark_published(self, ids: Sequence[int], now: datetime) -> None:
        self._mark(ids, now, None)

    async def mark_failed(self, ids: Sequence[int], error: str) -> None:
        self._mark(ids, None, error[:500])

    async def latest(self, aggregate_id: str, routing_keys: Sequence[str]) -> OutboxMessage | None:
        found = [
            row.message
            for row in self.tx.outbox.rows()
            if row.message.aggregate_id == aggregate_id and row.message.routing_key in routing_keys
        ]
        return max(found, key=lambda m: (m.sequence, m.id or 0), default=None)

    async def backlog(self, cap: int = BACKLOG_CAP) -> int:
        return min(len(self._unpublished()), cap)

    async def oldest_unpublished_at(self) -> datetime | None:
        unpublished = self._unpublished()
        return unpublished[0].message.created_at if unpublished else None


class FakeInbox:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def get(self, consumer: str, message_id: str) -> InboxEntry | None:
        return self.tx.inbox.get((consumer, message_id))

    async def add(self, entry: InboxEntry) -> bool:
        key = (entry.consumer, entry.message_id)
        if key in self.tx.inbox:
            return False
        self.tx.inbox.put(key, entry)
        return True


class FakeWebhooks:
    def __init__(self, tx: _Transaction) -> None:
        self.tx = tx

    async def insert(self, event: StoredWebhook) -> bool:
        if any(
            (w.provider, w.provider_event_id) == (event.provider, event.provider_event_id)
            for w in self.tx.webhooks.rows()
        ):
            return False
        self.tx.webhooks.insert(event.id, event)
        return True

    async def next_due(self, now: datetime) -> StoredWebhook | None:
        due = [
            w
            for w in self.tx.webhooks.rows()
            if w.status in CLAIMABLE and w.next_attempt_at is not None and w.next_attempt_at <= now
        ]
        return min(due, key=lambda w: (w.next_attempt_at or now, w.id), default=None)

    async def get(self, webhook_event_id: str, *, for_update: bool = False) -> StoredWebhook | None:
        return self.tx.webhooks.get(webhook_event_id)

    async def save(self, event: StoredWebhook) -> None:
        assert event.id in self.tx.webhooks, f"webhook event {event.id} was never inserted"
        self.tx.webhooks.put(event.id, event)

    async def page(
        self, provider: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[StoredWebhook], str | None]:
        rows = sorted(
            (
                w
                for w in self.tx.webhooks.rows()
                if (provider is None or w.provider == provider)
                and (status is None or w.status.value == status)
                and (cursor is None or w.id < cursor)
            ),
            key=lambda w: w.id,
            reverse=True,
        )
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None

    async def backlog(self) -> int:
        return sum(1 for w in self.tx.webhooks.rows() if w.status in CLAIMABLE)


# -- the unit of work ----------------------------------------------------------------------------


class FakeUnitOfWork:
    orders: OrderRepository
    payments: PaymentRepository
    operations: OperationRepository
    refunds: RefundRepository
    disputes: DisputeRepository
    snapshots: SnapshotRepository
    reconciliations: ReconciliationRepository
    outbox: OutboxRepository
    inbox: InboxRepository
    webhooks: WebhookRepository

    def __init__(self, store: FakeStore, *, dialect: EventDialect = EventDialect.DEFAULT) -> None:
        self.store = store
        self.dialect = dialect
        self._tx: _Transaction | None = None

    async def __aenter__(self) -> Self:
        tx = self._tx = _Transaction(self.store)
        outbox = FakeOutbox(tx)
        self.orders = FakeOrders(tx)
        self.payments = FakePayments(tx, outbox, self.dialect)
        self.operations = FakeOperations(tx)
        self.refunds = FakeRefunds(tx)
        self.disputes = FakeDisputes(tx)
        self.snapshots = FakeSnapshots(tx)
        self.reconciliations = FakeReconciliations(tx)
        self.outbox = outbox
        self.inbox = FakeInbox(tx)
        self.webhooks = FakeWebhooks(tx)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._tx = None  # whatever was not committed is gone

    async def commit(self) -> None:
        assert self._tx is not None, "unit of work used outside `async with`"
        self._tx.commit()


class FakeUnitOfWorkFactory:
    def __init__(self, store: FakeStore, *, dialect: EventDialect = EventDialect.DEFAULT) -> None:
        self.store = store
        self.dialect = dialect

    def __call__(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store, dialect=self.dialect)


# -- the provider --------------------------------------------------------------------------------

Call = Literal["authorize", "capture", "void", "refund"]


@dataclass(frozen=True, slots=True)
class Lost:
    """The provider acted (it records `outcome`, or the call's usual success when None), but
    its answer never arrived: the caller sees a timeout."""

    outcome: Outcome | None = None


Answer = Outcome | Lost | Exception


@dataclass(frozen=True, slots=True)
class ProviderCall:
    operation: Call
    idempotency_key: str
    amount: Money
    provider_payment_id: str | None


class FakeProvider:
    """A provider that answers what the test scripted, per operation, in order; unscripted
    calls succeed. Like a real provider it honours idempotency keys: a key it has acted on is
    answered with what it did, whatever is scripted. What it did is in `ledger`, which
    `get_transaction` reads (a test may write there what the provider "did" out of sight).
    Its whole view of each payment is what a test put in `views` (`payment`, `payments`)."""

    def __init__(self, name: str = "fake", capabilities: Capabilities | None = None) -> None:
        self.name = name
        self.capabilities = capabilities or Capabilities(
            manual_capture=True,
            partial_capture=True,
            multiple_partial_refunds=True,
            async_outcomes=True,
            three_d_secure=True,
            cancel_after_authorization=True,
        )
        self.open_circuit = False  # `available()` says no while True
        self.secrets: dict[str, str] = {}  # provider payment id → its client secret
        self.calls: list[ProviderCall] = []
        self.lookups: list[str] = []
        self.ledger: dict[str, Outcome] = {}
        self.views: dict[str, ProviderPayment] = {}  # provider payment id → its whole view
        self.on_call: Callable[[ProviderCall], None] | None = None
        self._script: dict[Call, deque[Answer]] = {}
        self._lookup_script: deque[Outcome | Exception | None] = deque()
        self._refs = itertools.count(1)
        self._held: dict[str, Money] = {}  # provider payment id → the amount authorized

    def will(self, operation: Call, *answers: Answer) -> None:
        """Answer the next `operation` calls with these, in order."""
        self._script.setdefault(operation, deque()).extend(answers)

    def will_look_up(self, *answers: Outcome | Exception | None) -> None:
        """Answer the next `get_transaction` calls with these instead of the ledger."""
        self._lookup_script.extend(answers)

    def keys(self, operation: Call) -> list[str]:
        return [c.idempotency_key for c in self.calls if c.operation == operation]

    def outcome(
        self,
        status: ProviderStatus,
        amount: Money,
        provider_payment_id: str | None,
        *,
        reference: str | None = None,
        failure_code: str | None = None,
        next_action: Mapping[str, Any] | None = None,
    ) -> Outcome:
        return Outcome(
            status=status,
            provider_payment_id=provider_payment_id,
            amount_minor=amount.minor,
            currency=amount.currency,
            reference=reference or f"ref_{next(self._refs)}",
            failure_code=failure_code,
            failure_message=f"{failure_code} at the provider" if failure_code else None,
            next_action=next_action,
        )

    async def _answer(self, call: ProviderCall, usual: ProviderStatus) -> Outcome:
        self.calls.append(call)
        if self.on_call is not None:
            self.on_call(call)
        if (known := self.ledger.get(call.idempotency_key)) is not None:
            return known
        script = self._script.get(call.operation)
        answer = (
            script.popleft()
            if script
            else self.outcome(usual, call.amount, call.provider_payment_id)
        )
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, Lost):
            acted = answer.outcome or self.outcome(usual, call.amount, call.provider_payment_id)
            self.ledger[call.idempotency_key] = acted
            raise ProviderTimeout(f"{self.name} {call.operation} timed out")
        self.ledger[call.idempotency_key] = answer
        return answer

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        call = ProviderCall("authorize", idempotency_key, req.amount, f"fp_{req.payment_id}")
        self._held[f"fp_{req.payment_id}"] = req.amount
        usual = ProviderStatus.CAPTURED if req.capture else ProviderStatus.AUTHORIZED
        return await self._answer(call, usual)

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        call = ProviderCall("capture", idempotency_key, amount, provider_payment_id)
        return await self._answer(call, ProviderStatus.CAPTURED)

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        # A void releases the whole hold: the amount the provider authorized.
        amount = self._held.get(provider_payment_id, Money(0, "EUR"))
        call = ProviderCall("void", idempotency_key, amount, provider_payment_id)
        return await self._answer(call, ProviderStatus.CANCELED)

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        call = ProviderCall("refund", idempotency_key, amount, provider_payment_id)
        return await self._answer(call, ProviderStatus.REFUNDED)

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        idempotency_key = lookup.idempotency_key
        self.lookups.append(idempotency_key)
        if self._lookup_script:
            answer = self._lookup_script.popleft()
            if isinstance(answer, Exception):
                raise answer
            return answer
        return self.ledger.get(idempotency_key)

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        return self.views.get(provider_payment_id)

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        for view in sorted(self.views.values(), key=lambda v: v.created_at):
            if created_from <= view.created_at < created_to:
                yield view

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        return self.secrets.get(provider_payment_id)

    def available(self) -> bool:
        return not self.open_circuit

    async def aclose(self) -> None:
        return None


class FakeCallLog:
    """The provider call audit, in memory: the rows, in the order they were recorded."""

    def __init__(self) -> None:
        self.rows: list[AuditedCall] = []

    async def record(self, call: AuditedCall) -> None:
        self.rows.append(call)

    async def for_payment(self, payment_id: str) -> list[AuditedCall]:
        return [row for row in self.rows if row.payment_id == payment_id]


# -- time and measurements -----------------------------------------------------------------------


class FakeClock:
    """A fixed time that moves only when told (`advance`), or by `step` at every reading."""

    def __init__(self, start: datetime = START, *, step: timedelta = timedelta(0)) -> None:
        self._now = start
        self.step = step

    def now(self) -> datetime:
        now = self._now
        self._now += self.step
        return now

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now


class FakeTelemetry:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, frozenset[tuple[str, str]]]] = Counter()
        self.observations: list[tuple[str, float, dict[str, str]]] = []
        self.gauges: dict[str, float] = {}

    def count(self, name: str, **labels: str) -> None:
        self.counts[(name, frozenset((k, str(v)) for k, v in labels.items()))] += 1

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        self.observations.append((name, seconds, labels))

    def gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value

    def counted(self, name: str, **labels: str) -> int:
        """How often `name` was counted with (at least) these labels."""
        wanted = {(k, str(v)) for k, v in labels.items()}
        return sum(n for (key, have), n in self.counts.items() if key == name and wanted <= have)


# -- wiring ------------------------------------------------------------------------------------


@dataclass(slots=True)
class World:
    """The fakes one test runs the use cases against, and the `Deps` that carries them."""

    store: FakeStore
    provider: FakeProvider
    clock: FakeClock
    telemetry: FakeTelemetry
    deps: Deps


def world(config: ServiceConfig | None = None, *, provider: str = "fake") -> World:
    store = FakeStore()
    fake_provider, fake_clock, fake_telemetry = FakeProvider(provider), FakeClock(), FakeTelemetry()
    # Typed as the ports: mypy checks here that each fake is what the use cases expect.
    uow: UnitOfWorkFactory = FakeUnitOfWorkFactory(store)
    gateway: PaymentProvider = fake_provider
    clock: Clock = fake_clock
    telemetry: Telemetry = fake_telemetry
    calls: ProviderCallLog = FakeCallLog()
    deps = Deps(
        uow=uow,
        providers={provider: gateway},
        clock=clock,
        telemetry=telemetry,
        calls=calls,
        config=config or ServiceConfig(default_provider=provider),
    )
    return World(store, fake_provider, fake_clock, fake_telemetry, deps)
