"""Database connections killed under load: every operation stays resumable by its retry.

A `tillpoint serve` process runs order → payment → confirm → refund flows for 8 clients while
`pg_terminate_backend` kills all of its database connections every 0.5 s. Each client retries
each request with its own Idempotency-Key until it gets a definite answer. Afterwards every
payment was charged once and refunded once, the mock gateway paid out exactly what the
payments record, and no answer was a 500 (a lost connection is a retryable 503).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import (
    ADMIN_KEY,
    SERVICE_KEY,
    create_database,
    drop_database,
    headers,
    new_key,
    postgres_url,
)
from tests.support.server import migrate, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CLIENTS = 8
KILL_EVERY = 0.5
KILL_ROUNDS = 24  # ~12 s of load
MAX_FLOWS_PER_CLIENT = 60
# Answers after which the client retries the same request with the same key.
RETRYABLE = {503}


def _dsn(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


@pytest.fixture
async def own_database(tmp_path: Path) -> AsyncIterator[str]:
    """A database of this test's own, so the killer touches nobody else's connections."""
    postgres_url()  # skips (or fails under CI=true) without PostgreSQL
    url = await asyncio.to_thread(create_database)
    try:
        await asyncio.to_thread(migrate, url, tmp_path)
        yield url
    finally:
        await asyncio.to_thread(drop_database, make_url(url).database or "")


@dataclass
class Tally:
    answers: collections.Counter[int] = field(default_factory=collections.Counter)
    unexpected: list[str] = field(default_factory=list)
    payments: list[str] = field(default_factory=list)
    kills: int = 0
    rounds: int = 0


async def definite(
    http: httpx.AsyncClient, path: str, body: Any, key: str, tally: Tally, token: str
) -> httpx.Response:
    """Send until the answer is definite: not a transport error, a 503 or a key in use."""
    while True:
        try:
            response = await http.post(path, json=body, headers=headers(token, key))
        except httpx.TransportError:
            await asyncio.sleep(0.05)
            continue
        tally.answers[response.status_code] += 1
        in_use = response.status_code == 409 and (
            response.json().get("code") == "idempotency_key_in_use"
        )
        if response.status_code in RETRYABLE or in_use:
            await asyncio.sleep(0.05)
            continue
        return response


async def flow(http: httpx.AsyncClient, tally: Tally) -> None:
    order_id = f"ord-{secrets.token_hex(6)}"
    steps: list[tuple[str, Any, str, int]] = [
        (
            "/api/v1/orders",
            {"order_id": order_id, "buyer_id": "buyer-1", "amount": "20.00", "currency": "EUR"},
            SERVICE_KEY,
            201,
        ),
        (
            "/api/v1/payments",
            {
                "order_id": order_id,
                "amount": "20.00",
                "currency": "EUR",
                "payment_method": {"type": "card", "token": "pm_card_visa"},
            },
            SERVICE_KEY,
            201,
        ),
    ]
    payment_id = ""
    for path, body, token, expected in steps:
        response = await definite(http, path, body, new_key(), tally, token)
        if response.status_code != expected:
            tally.unexpected.append(f"{path}: {response.status_code} {response.text}")
            return
        payment_id = response.json().get("payment_id", payment_id)
    tally.payments.append(payment_id)
    for path, body, token, expected in (
        (f"/api/v1/payments/{payment_id}/confirm", None, SERVICE_KEY, 200),
        (f"/api/v1/payments/{payment_id}/refund", {"amount": "5.00"}, ADMIN_KEY, 201),
    ):
        response = await definite(http, path, body, new_key(), tally, token)
        if response.status_code != expected:
            tally.unexpected.append(f"{path}: {response.status_code} {response.text}")
            return


async def killer(url: str, tally: Tally, done: asyncio.Event) -> None:
    database = make_url(url).database
    conn = await asyncpg.connect(_dsn(url, "postgres"))
    try:
        while tally.rounds < KILL_ROUNDS and not done.is_set():
            await asyncio.sleep(KILL_EVERY)
            killed = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                database,
            )
            tally.kills += sum(1 for row in killed if row[0])
            tally.rounds += 1
    finally:
        await conn.close()


async def client(base_url: str, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        for _ in range(MAX_FLOWS_PER_CLIENT):
            if tally.rounds >= KILL_ROUNDS:
                return
            await flow(http, tally)


async def test_killed_connections_leave_every_operation_resumable(
    own_database: str, tmp_path: Path
) -> None:
    server = start_server(
        own_database,
        tmp_path,
        idempotency_lock_timeout="1s",
        mock_delay_ms="20",
    )
    tally = Tally()
    try:
        done = asyncio.Event()
        kill_task = asyncio.create_task(killer(own_database, tally, done))
        await asyncio.gather(*(client(server.base_url, tally) for _ in range(CLIENTS)))
        done.set()
        await kill_task
    finally:
        server.kill()

    assert tally.kills > 0
    assert tally.answers[503] > 0, tally.answers  # the connections really were lost mid-request
    assert tally.answers[500] == 0, tally.answers
    assert tally.unexpected == []
    assert len(tally.payments) >= CLIENTS

    engine = create_async_engine(own_database, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.text(
                        "SELECT p.payment_id, p.captured_minor, p.refunded_minor, "
                        "(SELECT count(*) FROM refunds r WHERE r.payment_id = p.payment_id) "
                        "  AS refunds, "
                        "(SELECT count(*) FROM mock_gateway_ledger m "
                        "  WHERE m.payment_id = p.payment_id AND m.operation = 'refund') "
                        "  AS provider_refunds, "
                        "(SELECT count(*) FROM mock_gateway_ledger m "
                        "  WHERE m.payment_id = p.payment_id AND m.operation = 'authorize') "
                        "  AS provider_charges "
                        "FROM payments p"
                    )
                )
            ).all()
            paid_out = await conn.scalar(
                sa.text(
                    "SELECT coalesce(sum(amount_minor), 0) FROM mock_gateway_ledger "
                    "WHERE operation = 'refund'"
                )
            )
            recorded = await conn.scalar(
                sa.text("SELECT coalesce(sum(refunded_minor), 0) FROM payments")
            )
            per_order = await conn.scalar(
                sa.text(
                    "SELECT count(*) FROM (SELECT order_id FROM payments GROUP BY order_id "
                    "HAVING count(*) > 1) AS twice"
                )
            )
    finally:
        await engine.dispose()

    assert {r.payment_id for r in rows} == set(tally.payments)
    wrong = [r for r in rows if (r[1], r[2], r[3], r[4], r[5]) != (2000, 500, 1, 1, 1)]
    assert wrong == [], wrong
    assert int(paid_out) == int(recorded) == 500 * len(rows)
    assert per_order == 0
