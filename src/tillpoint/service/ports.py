"""Ports: what the use cases need from the outside world, as Protocols adapters satisfy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from tillpoint.domain.money import Money
from tillpoint.domain.order import HistoryEntry, Order
from tillpoint.domain.payment import Operation, Payment, PaymentMethod, Refund
from tillpoint.domain.snapshot import CheckoutSnapshot

# -- storage ----------------------------------------------------------------------------------


class StorageUnavailable(Exception):
    """The database could not be reached, or the connection was lost mid-transaction.

    Retryable: whatever the attempt committed before is found again by the retry of the same
    request (operations and orders carry their request key), so nothing is done twice.
    """


# -- provider ---------------------------------------------------------------------------------


class ProviderStatus(StrEnum):
    """Where the provider says a payment (or a refund) stands."""

    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    REFUNDED = "REFUNDED"
    DISPUTED = "DISPUTED"  # a chargeback was opened; announced by webhook only


@dataclass(frozen=True, slots=True)
class ProviderResult:
    status: ProviderStatus
    provider_payment_id: str | None
    amount_minor: int
    currency: str
    reference: str | None = None  # the provider's id of this operation (charge, refund)
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, Any] | None = None
    risk_score: int | None = None


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    payment_id: str
    order_id: str
    amount: Money
    capture: bool
    payment_method: PaymentMethod


class ProviderTimeout(Exception):
    """The call took too long: the outcome is unknown until the provider is asked."""


class ProviderUnavailable(Exception):
    """The provider could not be reached; nothing happened there."""


class ProviderError(Exception):
    """The provider answered with an error that is not a decline."""


class PaymentProvider(Protocol):
    name: str

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> ProviderResult:
        """Authorize (and capture when `req.capture`). A decline is a FAILED result."""
        ...

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> ProviderResult: ...

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> ProviderResult: ...

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> ProviderResult: ...

    async def get_transaction(self, idempotency_key: str) -> ProviderResult | None:
        """The truth about the operation sent with `idempotency_key`; None if never seen."""
        ...


class Providers(Protocol):
    def __getitem__(self, name: str) -> PaymentProvider: ...

    def __contains__(self, name: object) -> bool: ...


# -- persistence ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    status: str | None = None
    order_id: str | None = None
    provider: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    buyer_id: str | None = None


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


class SnapshotRepository(Protocol):
    async def add(self, snapshot: CheckoutSnapshot) -> None: ...
    async def get(self, snapshot_id: str) -> CheckoutSnapshot | None: ...


class ReconciliationRepository(Protocol):
    async def start(self, run_id: str, now: datetime) -> None: ...

    async def finish(
        self, run_id: str, now: datetime, *, status: str, checked: int, resolved: int
    ) -> None: ...


class Transaction(Protocol):
    """One database transaction. Rolls back on exit unless `commit()` was called."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...


class UnitOfWork(Transaction, Protocol):
    """A transaction with the repositories of the payment side."""

    orders: OrderRepository
    payments: PaymentRepository
    operations: OperationRepository
    refunds: RefundRepository
    snapshots: SnapshotRepository
    reconciliations: ReconciliationRepository


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class Telemetry(Protocol):
    """Counters and timings; the adapter is Prometheus."""

    def count(self, name: str, **labels: str) -> None: ...

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...


@runtime_checkable
class MockControl(Protocol):
    """What only the mock gateway can do: decide a pending payment's outcome on request."""

    async def complete(
        self,
        *,
        idempotency_key: str,
        payment_id: str,
        amount: Money,
        capture: bool,
        success: bool,
        failure_code: str | None,
    ) -> ProviderResult: ...
