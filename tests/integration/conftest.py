"""The database adapters against SQLite and PostgreSQL directly, with no HTTP in between:
repositories, the idempotency store, the outbox and its relay, the migrated schema.

Every test is isolated in one of two ways:

* `conn`: a connection to the session's database (`database_url`) inside a transaction that
  is rolled back when the test ends, for adapters that work on the caller's connection (the
  repositories). Nothing a test writes is seen by any other.
* `own_url` / `engine`: a database of the test's own, for adapters that commit on their own
  (the idempotency store) or read a whole table (the outbox relay): SQLite a new migrated
  file, PostgreSQL a `CREATE DATABASE … TEMPLATE` copy of a migrated template database this
  run created. Both PostgreSQL databases are dropped by the run that created them
  (`drop_database` refuses any other).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.conftest import CI, PG_SERVER_URL, create_database, drop_database, need_service
from tillpoint.adapters.db import migrate
from tillpoint.adapters.db.engine import make_engine


def database_name(url: str) -> str:
    return make_url(url).database or ""


@pytest.fixture(scope="session")
def pg_template() -> str:
    """The name of a migrated database no one connects to, copied for each test."""
    server = make_url(PG_SERVER_URL)
    need_service("PostgreSQL", server.host or "127.0.0.1", server.port or 5432)
    try:
        url = create_database()
    except Exception as exc:
        reason = f"could not create a test database on {PG_SERVER_URL}: {exc!r}"
        if CI:
            pytest.fail(f"{reason}; under CI=true PostgreSQL is mandatory")
        pytest.skip(reason)
    # Its engine uses no pool: no connection is left behind to stop the copies.
    migrate.upgrade(url)
    return database_name(url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def own_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own (see the module docstring)."""
    if request.param == "sqlite":
        # Under the run's base directory, where the end-of-run card-data scan looks.
        url = f"sqlite+aiosqlite:///{tmp_path / 'tillpoint.db'}"
        migrate.upgrade(url)
        yield url
        return
    with copy_of(request.getfixturevalue("pg_template")) as url:
        yield url


@pytest.fixture
def own_pg_url(pg_template: str) -> Iterator[str]:
    """`own_url` on PostgreSQL only, for what SQLite cannot show (two writers at once)."""
    with copy_of(pg_template) as url:
        yield url


@contextmanager
def copy_of(template: str) -> Iterator[str]:
    """A new database copied from `template`, dropped when the block ends."""
    url = create_database(template)
    try:
        yield url
    finally:
        drop_database(database_name(url))


@pytest.fixture
async def engine(own_url: str) -> AsyncIterator[AsyncEngine]:
    current = make_engine(own_url, pool_size=4)
    try:
        yield current
    finally:
        await current.dispose()


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[AsyncConnection]:
    """A connection to the session's database in a transaction rolled back after the test."""
    shared = make_engine(database_url, pool_size=1)
    try:
        async with shared.connect() as connection:
            transaction = await connection.begin()
            try:
                yield connection
            finally:
                await transaction.rollback()
    finally:
        await shared.dispose()
