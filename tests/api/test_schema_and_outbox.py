"""Operations: a schema behind the code is refused (startup) and reported (readiness); the
outbox backlog and its oldest row's age come from the database, so the API shows a stalled
relay with no worker running; the `foodies` event dialect and the numeric `payment_number`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.api.conftest import Api
from tests.conftest import (
    API_KEYS,
    MOCK_WEBHOOK_SECRET,
    SERVICE_KEY,
    free_port,
    headers,
    new_key,
    postgres_url,
    settings_for,
)
from tests.security.scan import numeric_id
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.support.server import start_server
from tillpoint.adapters.db import migrate
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container, build
from tillpoint.service.messages import order_id_value

TILLPOINT = Path(sys.executable).parent / "tillpoint"
BEHIND = ScriptDirectory.from_config(migrate.alembic_config("")).get_revision("head").down_revision


@asynccontextmanager
async def serving(container: Container) -> AsyncIterator[Api]:
    async with asgi_client(container) as http:
        yield Api(http, container)


@asynccontextmanager
async def api_with(database_url: str, **overrides: Any) -> AsyncIterator[Api]:
    clock = overrides.pop("clock", None) or MovableClock()
    container = build(settings_for(database_url, **overrides), clock=clock)
    try:
        async with serving(container) as api:
            yield api
    finally:
        await container.aclose()


# -- a database whose schema is behind the code --------------------------------------------------


def _pg_database(name: str) -> str:
    return make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)


def _pg_admin(statement: str) -> None:
    async def run() -> None:
        engine = create_async_engine(postgres_url(), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(run())


def _behind(url: str) -> None:
    """Migrated to the newest revision, then downgraded one step (someone downgraded)."""
    migrate.upgrade(url)
    migrate.downgrade(url, "-1")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def behind_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
        _behind(url)
        yield url
        return
    name = f"tp_behind_{secrets.token_hex(4)}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        url = _pg_database(name)
        _behind(url)
        yield url
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _env(database_url: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
    env.update(
        TILLPOINT_DATABASE_URL=database_url,
        TILLPOINT_API_KEYS=json.dumps(API_KEYS),
        TILLPOINT_MOCK_WEBHOOK_SECRET=MOCK_WEBHOOK_SECRET,
        TILLPOINT_STATE_DIR=str(state_dir),
        TILLPOINT_LOG_FORMAT="json",
        **extra,
    )
    return env


class TestSchemaBehindTheCode:
    async def test_readiness_reports_not_migrated(self, behind_url: str) -> None:
        async with api_with(behind_url) as api:
            response = await api.client.get("/healthz/ready")
        assert response.status_code == 503, response.text
        assert response.json()["status"] == "DOWN"
        assert response.json()["checks"]["database"] == "NOT_MIGRATED"

    @pytest.mark.postgres
    @pytest.mark.slow
    @pytest.mark.parametrize("command", [["serve", "--port", "PORT"], ["worker"]])
    def test_serve_and_worker_refuse_to_start(
        self, command: list[str], tmp_path: Path, request: pytest.FixtureRequest
    ) -> None:
        name = f"tp_behind_{secrets.token_hex(4)}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        request.addfinalizer(lambda: _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        url = _pg_database(name)
        _behind(url)
        argv = [str(TILLPOINT), *(str(free_port()) if a == "PORT" else a for a in command)]
        process = subprocess.Popen(
            argv,
            env=_env(url, tmp_path / "state"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"{command[0]} started on a schema behind the code: {stderr[-2000:]}")
        assert process.returncode == 2, stderr
        assert "run `tillpoint migrate` first" in stderr
        assert f"revision {BEHIND} but this code needs {migrate.head()}" in stderr
        refusals = [
            line
            for line in (stdout + stderr).splitlines()
            if line.startswith("{") and json.loads(line).get("event") == "startup.refused"
        ]
        assert len(refusals) == 1, stdout + stderr

    @pytest.mark.slow
    def test_embedded_serve_still_migrates_a_fresh_database(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        # Without API keys: the embedded default, dev keys on first start.
        server = start_server(url, tmp_path, without=["api_keys"])
        try:
            ready = httpx.get(f"{server.base_url}/healthz/ready", timeout=10)
        finally:
            server.kill()
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["database"] == "UP"


# -- the outbox backlog, read from the database --------------------------------------------------


def _gauge(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match[1])


async def _unpublished(api: Api) -> tuple[int, Any]:
    o = t.outbox
    async with api.container.engine.connect() as conn:
        count = await conn.scalar(
            sa.select(sa.func.count()).select_from(o).where(o.c.published_at.is_(None))
        )
        oldest = await conn.scalar(
            sa.select(o.c.created_at).where(o.c.published_at.is_(None)).order_by(o.c.id).limit(1)
        )
    return int(count or 0), oldest


class TestOutboxBacklog:
    async def test_metrics_show_the_backlog_with_no_worker_running(self, api: Api) -> None:
        await api.confirmed()  # a payment.succeeded row that nobody relays
        response = await api.client.get("/metrics")
        assert response.status_code == 200
        waiting, _oldest = await _unpublished(api)
        assert waiting >= 1
        assert _gauge(response.text, "outbox_backlog") == waiting
        assert _gauge(response.text, "outbox_oldest_unpublished_age_seconds") >= 0

    async def test_readiness_reports_a_stalled_relay_without_going_down(
        self, database_url: str
    ) -> None:
        clock = MovableClock()
        stall_after = timedelta(minutes=5)
        async with api_with(database_url, clock=clock, outbox_stall_after=stall_after) as api:
            await api.confirmed()
            _waiting, oldest = await _unpublished(api)
            # Far enough ahead that even the oldest waiting row is older than the threshold.
            clock.advance(max(oldest - clock.now(), timedelta()) + 2 * stall_after)
            response = await api.client.get("/healthz/ready")
            metrics = await api.client.get("/metrics")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "UP"
        assert body["checks"]["database"] == "UP"
        assert body["checks"]["relay"] == "STALLED"
        assert body["relay"]["backlog"] >= 1
        assert body["relay"]["oldest_unpublished_age_seconds"] > stall_after.total_seconds()
        age = _gauge(metrics.text, "outbox_oldest_unpublished_age_seconds")
        assert age > stall_after.total_seconds()

    async def test_readiness_reports_the_relay_up_within_the_threshold(
        self, database_url: str
    ) -> None:
        async with api_with(database_url, outbox_stall_after=timedelta(days=3650)) as api:
            await api.confirmed()
            response = await api.client.get("/healthz/ready")
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["relay"] == "UP"


# -- payment_number and the foodies dialect ------------------------------------------------------


async def _order(api: Api, order_id: str, amount: str = "49.99") -> None:
    await flows.create_order(api.client, amount, "USD", order_id=order_id)


async def _pay(api: Api, order_id: str, token: str, amount: str = "49.99") -> httpx.Response:
    created = await flows.create_payment(api.client, order_id, amount, token=token, currency="USD")
    return await api.confirm(created["payment_id"])


def _numeric_order_id() -> str:
    return str(numeric_id(10**15, 2 * 10**15))


class TestPaymentNumber:
    async def test_every_payment_gets_a_unique_number_even_in_parallel(self, api: Api) -> None:
        orders = [await api.order() for _ in range(8)]

        async def create(order_id: str) -> dict[str, Any]:
            response = await api.client.post(
                "/api/v1/payments",
                json={"order_id": order_id, "amount": "100.00", "currency": "USD"},
                headers=headers(SERVICE_KEY, new_key()),
            )
            assert response.status_code == 201, response.text
            body: dict[str, Any] = response.json()
            return body

        created = await asyncio.gather(*(create(o) for o in orders))
        numbers = [p["payment_number"] for p in created]
        assert all(isinstance(n, int) and n > 0 for n in numbers)
        assert len(set(numbers)) == len(numbers)
        fetched = await api.payment_state(created[0]["payment_id"])
        assert fetched["payment_number"] == created[0]["payment_number"]
        row = await api.row(t.payments, payment_id=created[0]["payment_id"])
        assert row["payment_number"] == created[0]["payment_number"]


class TestFoodiesDialect:
    async def test_succeeded_follows_seed_004(self, database_url: str) -> None:
        async with api_with(database_url, event_dialect="foodies") as api:
            order_id = _numeric_order_id()
            await _order(api, order_id)
            confirmed = await _pay(api, order_id, "pm_card_visa")
            assert confirmed.status_code == 200, confirmed.text
            payment = confirmed.json()
            rows = await api.outbox(payment["payment_id"])
        (routing_key, _sequence, body) = next(r for r in rows if r[0] == "payment.succeeded")
        assert routing_key == "payment.succeeded"
        assert list(body) == [
            "eventId",
            "orderId",
            "paymentId",
            "transactionId",
            "amount",
            "currency",
            "processedAt",
        ]
        assert body["orderId"] == int(order_id)
        assert body["paymentId"] == payment["payment_number"]
        assert isinstance(body["paymentId"], int)
        assert body["amount"] == "49.99"
        assert body["currency"] == "USD"
        assert body["eventId"].startswith("evt_")
        assert body["transactionId"].startswith("txn_")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["processedAt"])

    async def test_failed_follows_seed_004(self, database_url: str) -> None:
        async with api_with(database_url, event_dialect="foodies") as api:
            order_id = _numeric_order_id()
            await _order(api, order_id)
            declined = await _pay(api, order_id, "pm_card_insufficientFunds")
            assert declined.status_code == 402, declined.text
            rows = await api.outbox(declined.json()["payment"]["payment_id"])
        (_key, _sequence, body) = next(r for r in rows if r[0] == "payment.failed")
        assert list(body) == ["eventId", "orderId", "failureReason", "failureCode", "occurredAt"]
        assert body["orderId"] == int(order_id)
        assert body["failureCode"] == "INSUFFICIENT_FUNDS"
        assert isinstance(body["failureReason"], str)
        assert body["failureReason"]

    async def test_a_non_numeric_order_id_stays_a_string(self, database_url: str) -> None:
        async with api_with(database_url, event_dialect="foodies") as api:
            order_id = f"ord-{secrets.token_hex(6)}"
            await _order(api, order_id)
            confirmed = await _pay(api, order_id, "pm_card_visa")
            rows = await api.outbox(confirmed.json()["payment_id"])
        body = next(r[2] for r in rows if r[0] == "payment.succeeded")
        assert body["orderId"] == order_id

    async def test_the_default_dialect_is_unchanged(self, api: Api) -> None:
        order_id = _numeric_order_id()
        await _order(api, order_id)
        confirmed = await _pay(api, order_id, "pm_card_visa")
        rows = await api.outbox(confirmed.json()["payment_id"])
        body = next(r[2] for r in rows if r[0] == "payment.succeeded")
        assert body["order_id"] == order_id
        assert body["payment_id"] == confirmed.json()["payment_id"]
        assert body.keys() == {
            "event_id",
            "order_id",
            "payment_id",
            "transaction_id",
            "amount",
            "currency",
            "sequence",
            "processed_at",
        }


class TestFoodiesOrderId:
    @pytest.mark.parametrize(
        ("order_id", "published"),
        [
            ("1042", 1042),
            ("0", 0),
            ("9223372036854775807", 9223372036854775807),
            ("9223372036854775808", "9223372036854775808"),  # beyond a Kotlin Long
            ("007", "007"),  # a number would lose the zeros
            ("-5", "-5"),
            ("ord-1", "ord-1"),
        ],
    )
    def test_numeric_only_when_it_is_a_long(self, order_id: str, published: int | str) -> None:
        assert order_id_value(order_id) == published
        assert type(order_id_value(order_id)) is type(published)
