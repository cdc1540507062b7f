"""Real server processes against PostgreSQL.

The tests here talk HTTP to `tillpoint serve` subprocesses, so requests really run in parallel
in several processes and a process can really die. Every process is started by
`tests/support/server.py::start_server` in its own session, and its whole process group is
killed in teardown, whatever happened in the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import postgres_url
from tests.support.server import Server, migrate, start_server


@pytest.fixture(scope="session")
def e2e_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PostgreSQL migrated to head by the real CLI (never reset: other tests may share it)."""
    url = postgres_url()
    migrate(url, tmp_path_factory.mktemp("migrate"))
    return url


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def server(e2e_database_url: str, e2e_workdir: Path) -> Iterator[Server]:
    """A two-process API (uvicorn --workers 2) started once for a module's tests."""
    current = start_server(e2e_database_url, e2e_workdir, workers=2, mock_delay_ms="50")
    try:
        yield current
    finally:
        current.kill()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
        yield client


@pytest.fixture(scope="session")
async def db(e2e_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(e2e_database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()
