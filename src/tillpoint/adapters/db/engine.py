"""Engines for both databases. SQLite gets WAL, a busy timeout, foreign keys and
`BEGIN IMMEDIATE`, so concurrent writers queue instead of failing half-way."""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# SQLite: a connection with this execution option begins deferred (`BEGIN`), not IMMEDIATE: it
# only reads, so it takes no write lock and writers go on while it reads (WAL).
SQLITE_READ_ONLY: Final = "tillpoint_read_only"


def read_only(engine: AsyncEngine) -> AsyncEngine:
    """The engine for long reads (an export): one snapshot, no lock that stops writers.
    PostgreSQL opens `READ ONLY` `REPEATABLE READ` transactions; SQLite deferred ones."""
    if engine.dialect.name == "sqlite":
        return engine.execution_options(**{SQLITE_READ_ONLY: True})
    return engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 5) -> AsyncEngine:
    if is_sqlite(url):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            read_only = conn.get_execution_options().get(SQLITE_READ_ONLY, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    # No pre-ping: it costs a round trip per checkout on the hot path. A connection that died
    # fails its statement, is invalidated by the pool, and the request's retry gets a fresh one.
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800
    )
