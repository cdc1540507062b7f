"""The unit of work: one connection, one transaction, every repository on it, rolled back
unless committed."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tillpoint.adapters.db.errors import translate
from tillpoint.adapters.db.inbox import SqlInbox
from tillpoint.adapters.db.outbox import SqlOutbox
from tillpoint.adapters.db.repositories.disputes import SqlDisputes
from tillpoint.adapters.db.repositories.operations import SqlOperations
from tillpoint.adapters.db.repositories.orders import SqlOrders
from tillpoint.adapters.db.repositories.payments import SqlPayments
from tillpoint.adapters.db.repositories.reconciliations import SqlReconciliations
from tillpoint.adapters.db.repositories.refunds import SqlRefunds
from tillpoint.adapters.db.repositories.snapshots import SqlSnapshots
from tillpoint.adapters.db.webhooks import SqlWebhookEvents
from tillpoint.service.messages import EventDialect
from tillpoint.service.ports import (
    DisputeRepository,
    InboxRepository,
    OperationRepository,
    OrderRepository,
    OutboxRepository,
    PaymentRepository,
    ReconciliationRepository,
    RefundRepository,
    SnapshotRepository,
    StorageUnavailable,
    WebhookRepository,
)


class SqlUnitOfWork:
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

    def __init__(
        self, engine: AsyncEngine, *, dialect: EventDialect = EventDialect.DEFAULT
    ) -> None:
        self._engine = engine
        self._dialect = dialect
        self._conn: AsyncConnection | None = None

    @property
    def connection(self) -> AsyncConnection:
        assert self._conn is not None, "unit of work used outside `async with`"
        return self._conn

    async def __aenter__(self) -> Self:
        try:
            self._conn = await self._engine.connect()
            await self._conn.begin()
        except Exception as error:
            raise translate(error) from error
        self.orders = SqlOrders(self._conn)
        self.payments = SqlPayments(self._conn, dialect=self._dialect)
        self.operations = SqlOperations(self._conn)
        self.refunds = SqlRefunds(self._conn)
        self.disputes = SqlDisputes(self._conn)
        self.snapshots = SqlSnapshots(self._conn)
        self.reconciliations = SqlReconciliations(self._conn)
        self.outbox = SqlOutbox(self._conn)
        self.inbox = SqlInbox(self._conn)
        self.webhooks = SqlWebhookEvents(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            try:
                if conn.in_transaction():
                    await conn.rollback()
            finally:
                await conn.close()
        except Exception as error:
            # A connection lost mid-transaction cannot roll back: the server already did.
            if exc is None:
                raise translate(error) from error
        # A lost connection is "the database is unavailable" (retryable), not a bug.
        if exc is not None and not isinstance(exc, StorageUnavailable):
            translated = translate(exc)
            if translated is not exc:
                raise translated from exc

    async def commit(self) -> None:
        try:
            await self.connection.commit()
        except Exception as error:
            raise translate(error) from error


class SqlUnitOfWorkFactory:
    def __init__(
        self, engine: AsyncEngine, *, dialect: EventDialect = EventDialect.DEFAULT
    ) -> None:
        self.engine = engine
        self.dialect = dialect

    def __call__(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, dialect=self.dialect)
