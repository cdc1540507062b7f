"""Shared fixtures. Every API test runs on SQLite and on PostgreSQL.

PostgreSQL is `TILLPOINT_TEST_DATABASE_URL` (default: the `test` database on 127.0.0.1:5432).
When it is unreachable its tests skip with the reason — except under `CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import make_url

from tillpoint.adapters.clock import MovableClock
from tillpoint.adapters.db import migrate
from tillpoint.bootstrap import Container, build
from tillpoint.config import ApiKey, Settings
from tillpoint.entrypoints.api.app import create_app

CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get(
    "TILLPOINT_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
ADMIN_KEY = "test-admin-key-0123456789"
SERVICE_KEY = "test-service-key-0123456789"
CUSTOMER_KEY = "test-customer-key-0123456789"
CUSTOMER_SUBJECT = "buyer-1"
# Standard Webhooks secret of the mock gateway (required with PostgreSQL, as in production).
MOCK_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
API_KEYS = [
    {"key": ADMIN_KEY, "role": "admin"},
    {"key": SERVICE_KEY, "role": "service"},
    {"key": CUSTOMER_KEY, "role": "customer", "subject": CUSTOMER_SUBJECT},
]


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI=true, fail) when a service a test needs is not running."""
    if reachable(host, port):
        return
    reason = f"{name} is not reachable at {host}:{port}"
    if CI:
        pytest.fail(f"{reason}; under CI=true it must run")
    pytest.skip(reason)


def postgres_url() -> str:
    url = make_url(PG_URL)
    need_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    return PG_URL


def reset_database(url: str) -> None:
    """A clean schema at the newest migration (blocking: run it in a thread)."""
    if url.startswith("postgresql"):
        import sqlalchemy as sa

        async def drop() -> None:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(url)
            async with engine.begin() as conn:
                await conn.execute(sa.text("DROP SCHEMA public CASCADE"))
                await conn.execute(sa.text("CREATE SCHEMA public"))
            await engine.dispose()

        asyncio.run(drop())
    migrate.upgrade(url)


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "api_keys": [ApiKey.model_validate(k) for k in API_KEYS],
        "broker_url": "",
        "provider_timeout": timedelta(seconds=1),
        "log_level": "WARNING",
        "log_format": "console",
        "mock_webhook_secret": MOCK_WEBHOOK_SECRET,
        "state_dir": str(Path(url.split("///")[-1]).parent / ".tillpoint")
        if url.startswith("sqlite")
        else ".tillpoint-test",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'tillpoint.db'}"
    else:
        url = postgres_url()
    await asyncio.to_thread(reset_database, url)
    return url


@pytest.fixture(scope="session")
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def container(database_url: str, clock: MovableClock) -> AsyncIterator[Container]:
    current = build(settings_for(database_url), clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container=container, run_workers=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tillpoint.test") as http:
            yield http


def headers(key: str, idempotency_key: str | None = None) -> dict[str, str]:
    result = {"Authorization": f"Bearer {key}"}
    if idempotency_key is not None:
        result["Idempotency-Key"] = idempotency_key
    return result


def new_key() -> str:
    return f"idem-{secrets.token_hex(8)}"


@pytest.fixture
def service() -> dict[str, str]:
    return headers(SERVICE_KEY)


@pytest.fixture
def admin() -> dict[str, str]:
    return headers(ADMIN_KEY)
