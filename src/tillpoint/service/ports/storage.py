"""Storage: the repositories and the one unit of work they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from tillpoint.domain.order import HistoryEntry, Order
from tillpoint.domain.payment import Dispute, Operation, Payment, Refund
from tillpoint.domain.reconciliation import Discrepancy, Run
from tillpoint.domain.snapshot import CheckoutSnapshot
from tillpoint.service.ports.messaging import OutboxMessage
from tillpoint.service.ports.webhooks import WebhookRepository


class StorageUnavailable(Exception):
    """The database could not be reached, or the connection was lost mid-transaction.

    Retryable: whatever the attempt committed before is found again by the retry of the same
    request (operations and orders carry their request key), so nothing is done twice.
    """


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    status: str | None = None
    order_id: str | None = None
    provider: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    buyer_id: str | None = None


@dataclass(frozen=True, slots=True)
class DisputeFilter:
    status: str | None = None
    payment_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    event_id: str
    event_type: str
    payload: Mapping[str, Any]
    created_at: datetime


@dataclass(slots=True)
class Ledger:
    payment: Payment
    transactions: list[Operation] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)


class OrderRepository(Protocol):
    async def add(self, order: Order) -> None: ...
    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None: ...
    async def save(self, order: Order) -> None: ...
    async def history(self, order_id: str) -> list[HistoryEntry]: ...


class PaymentRepository(Protocol):
    async def add(self, payment: Payment) -> None: ...
    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None: ...
    async def save(self, payment: Payment) -> None: ...
    async def by_request_key(self, request_key: str) -> Payment | None: ...
    async def by_provider_id(
        self, provider: str, provider_payment_id: str, *, for_update: bool = False
    ) -> Payment | None: ...
    async def active_for_order(self, order_id: str) -> Payment | None: ...
    async def for_order(self, order_id: str) -> list[Payment]: ...
    async def page(
        self, filters: PaymentFilter, limit: int, cursor: str | None
    ) -> tuple[list[Payment], str | None]: ...
    async def events(self, payment_id: str) -> list[StoredEvent]: ...
    async def stale_initiated(self, older_than: datetime, limit: int) -> list[str]: ...


class OperationRepository(Protocol):
    async def add(self, op: Operation) -> None: ...
    async def save(self, op: Operation) -> None: ...
    async def get(self, op_id: str) -> Operation | None: ...
    async def open_for(self, payment_id: str) -> list[Operation]: ...
    async def by_request_key(self, payment_id: str, request_key: str) -> Operation | None: ...
    async def for_payment(self, payment_id: str) -> list[Operation]: ...
    async def due_for_check(self, now: datetime, limit: int) -> list[Operation]: ...


class RefundRepository(Protocol):
    async def add(self, refund: Refund) -> None: ...
    async def save(self, refund: Refund) -> None: ...
    async def get(self, refund_id: str) -> Refund | None: ...
    async def for_payment(self, payment_id: str) -> list[Refund]: ...


class DisputeRepository(Protocol):
    async def add(self, dispute: Dispute) -> None: ...
    async def save(self, dispute: Dispute) -> None: ...
    async def by_provider_id(self, provider: str, provider_dispute_id: str) -> Dispute | None: ...
    async def for_payment(self, payment_id: str) -> list[Dispute]: ...
    async def page(
        self, filters: DisputeFilter, limit: int, cursor: str | None
    ) -> tuple[list[Dispute], str | None]:
        """Newest first; `cursor` is the last `dispute_id` of the previous page."""
        ...


class SnapshotRepository(Protocol):
    async def add(self, snapshot: CheckoutSnapshot) -> None: ...
    async def get(self, snapshot_id: str) -> CheckoutSnapshot | None: ...


@dataclass(frozen=True, slots=True)
class DiscrepancyFilter:
    kind: str | None = None
    action: str | None = None


class ReconciliationRepository(Protocol):
    """Reconciliation runs and the discrepancies they found."""

    async def add(self, run: Run) -> bool:
        """Insert a run; False when its schedule slot already has one (another worker's)."""
        ...

    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None: ...
    async def save(self, run: Run) -> None: ...
    async def page(self, limit: int, cursor: str | None) -> tuple[list[Run], str | None]: ...
    async def running(self) -> list[Run]: ...
    async def last_finished_at(self) -> datetime | None: ...

    async def add_discrepancy(self, found: Discrepancy) -> bool:
        """Insert a discrepancy; False when one with its fingerprint exists (found before)."""
        ...

    async def discrepancy(
        self, discrepancy_id: str, *, for_update: bool = False
    ) -> Discrepancy | None: ...
    async def save_discrepancy(self, found: Discrepancy) -> None: ...
    async def discrepancies(
        self, run_id: str, filters: DiscrepancyFilter, limit: int, cursor: str | None
    ) -> tuple[list[Discrepancy], str | None]: ...


class OutboxRepository(Protocol):
    """Messages to publish. Rows are written only as a payment is saved, from its `Published`
    events (`service/messages.py` decides each message); the relay and the consumers read."""

    async def claim(self, limit: int) -> list[OutboxMessage]:
        """Lock up to `limit` unpublished rows, oldest first, skipping rows others hold."""
        ...

    async def unpublished_sequences(self, aggregate_ids: Sequence[str]) -> dict[str, list[int]]:
        """Every unpublished `sequence` of these aggregates, ascending (no locks taken)."""
        ...

    async def mark_published(self, ids: Sequence[int], now: datetime) -> None: ...

    async def mark_failed(self, ids: Sequence[int], error: str) -> None: ...

    async def latest(self, aggregate_id: str, routing_keys: Sequence[str]) -> OutboxMessage | None:
        """The newest row of an aggregate with one of these routing keys, published or not."""
        ...

    async def backlog(self, cap: int = ...) -> int:
        """Unpublished rows, counted up to `cap` (a huge backlog costs no more than `cap`)."""
        ...

    async def oldest_unpublished_at(self) -> datetime | None:
        """`created_at` of the oldest unpublished row (by insertion order), or None."""
        ...


@dataclass(frozen=True, slots=True)
class InboxEntry:
    """A consumed message, remembered so a redelivery changes nothing."""

    consumer: str
    message_id: str
    order_id: str | None
    payment_id: str | None
    received_at: datetime


class InboxRepository(Protocol):
    async def get(self, consumer: str, message_id: str) -> InboxEntry | None: ...

    async def add(self, entry: InboxEntry) -> bool: ...


class UnitOfWork(Protocol):
    """One database transaction with every repository on it. Rolls back on exit unless
    `commit()` was called, so what a use case changes commits together or not at all."""

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

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...
