"""Run Alembic migrations programmatically (`tillpoint migrate`, and `serve` when embedded), and
tell whether a database's schema is the one this code was written for."""

from __future__ import annotations

import asyncio
import functools
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


class SchemaState(StrEnum):
    CURRENT = "CURRENT"
    BEHIND = "BEHIND"  # an older revision, or none at all: `tillpoint migrate` is needed
    AHEAD = "AHEAD"  # a revision this code does not know (newer code migrated it)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Blocking; call it before the event loop starts, or in a thread."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


@functools.cache
def _script() -> tuple[frozenset[str], frozenset[str]]:
    """The head revisions and every known revision of the migrations shipped with this code."""
    script = ScriptDirectory.from_config(alembic_config(""))
    known = frozenset(rev.revision for rev in script.walk_revisions())
    return frozenset(script.get_heads()), known


def head() -> str:
    return ",".join(sorted(_script()[0]))


_VERSIONS = sa.table("alembic_version", sa.column("version_num", sa.String))


def current_revisions(connection: sa.Connection) -> frozenset[str]:
    """The database's Alembic revisions (none when it was never migrated). Plain SQL rather
    than Alembic's MigrationContext, which logs two lines each time it is made."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return frozenset()
    return frozenset(connection.scalars(sa.select(_VERSIONS.c.version_num)))


def state_of(current: frozenset[str]) -> SchemaState:
    heads, known = _script()
    if current == heads:
        return SchemaState.CURRENT
    if current - known:
        return SchemaState.AHEAD
    return SchemaState.BEHIND


def schema_state(connection: sa.Connection) -> SchemaState:
    """Compare the database's `alembic_version` with this code's heads (two small queries).

    Synchronous: from async code call it through `AsyncConnection.run_sync`.
    """
    return state_of(current_revisions(connection))


def inspect_schema(url: str) -> tuple[SchemaState, frozenset[str]]:
    """Blocking: the schema state and the database's revisions. Raises if it is unreachable."""

    async def run() -> tuple[SchemaState, frozenset[str]]:
        engine = create_async_engine(url, poolclass=sa.pool.NullPool)
        try:
            async with engine.connect() as conn:
                current = await conn.run_sync(current_revisions)
                return state_of(current), current
        finally:
            await engine.dispose()

    return asyncio.run(run())
