"""Helpers every repository module shares."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

Row = sa.Row[Any]


def locked(stmt: sa.Select[Any], conn: AsyncConnection, for_update: bool) -> sa.Select[Any]:
    """`stmt` taking a row lock when asked. SQLite serializes writers with BEGIN IMMEDIATE, so
    only PostgreSQL gets `FOR UPDATE`."""
    if for_update and conn.dialect.name != "sqlite":
        return stmt.with_for_update()
    return stmt
