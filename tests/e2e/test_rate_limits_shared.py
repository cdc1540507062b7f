"""Two `tillpoint serve` processes sharing Redis enforce one limit together.

A burst over the limit spread across both servers admits exactly the limit in total (the
moving window is exact) and refuses the rest with 429 `rate_limited` and `Retry-After`. A POST
refused with 429 is not stored under its `Idempotency-Key`: once the window admits requests
again (here: its keys deleted from Redis, which is what the window's passing does) the retry
with the same key runs, and only then is it replayed.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests.api.conftest import assert_problem
from tests.conftest import SERVICE_KEY, headers, need_service, new_key
from tests.support.flows import new_order_id
from tests.support.server import Server, start_server

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
LIMIT = 12
BURST = 20


@pytest.fixture(scope="module")
def prefix() -> str:
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    return f"tillpoint-test-{secrets.token_hex(4)}"


async def forget_counts(prefix: str) -> int:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        return int(await client.delete(*keys)) if keys else 0
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def servers(e2e_database_url: str, e2e_workdir: Path, prefix: str) -> Iterator[list[Server]]:
    limits = json.dumps({"default": f"{LIMIT}/hour"})
    started: list[Server] = []
    try:
        for _ in range(2):
            started.append(
                start_server(
                    e2e_database_url,
                    e2e_workdir,
                    redis_url=REDIS_URL,
                    rate_limit_prefix=prefix,
                    rate_limits=limits,
                )
            )
        yield started
    finally:
        for server in started:
            server.kill()


@pytest.fixture(autouse=True)
async def fresh_counts(prefix: str) -> AsyncIterator[None]:
    """Each test starts with empty windows and leaves nothing in Redis."""
    await forget_counts(prefix)
    yield
    await forget_counts(prefix)


@pytest.fixture
async def clients(servers: list[Server]) -> AsyncIterator[list[httpx.AsyncClient]]:
    made = [httpx.AsyncClient(base_url=s.base_url, timeout=30) for s in servers]
    try:
        yield made
    finally:
        for client in made:
            await client.aclose()


async def test_a_burst_across_two_servers_meets_one_limit(
    clients: list[httpx.AsyncClient], prefix: str
) -> None:
    answers = [
        await clients[n % 2].get("/api/v1/orders/ord-missing", headers=headers(SERVICE_KEY))
        for n in range(BURST)
    ]

    statuses = [r.status_code for r in answers]
    assert statuses == [404] * LIMIT + [429] * (BURST - LIMIT)
    for refused in answers[LIMIT:]:
        assert_problem(refused, 429, "rate_limited")
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
        assert refused.headers["ratelimit-limit"] == str(LIMIT)
    # Both servers refused some: the count is shared, not each process's own.
    assert {n % 2 for n in range(LIMIT, BURST)} == {0, 1}


async def test_a_post_refused_with_429_runs_when_retried_with_its_key(
    clients: list[httpx.AsyncClient], prefix: str
) -> None:
    order_id = new_order_id()
    body = {"order_id": order_id, "buyer_id": "buyer-1", "amount": "10.00", "currency": "USD"}
    key = new_key()
    for n in range(LIMIT):
        await clients[n % 2].get("/api/v1/orders/ord-missing", headers=headers(SERVICE_KEY))
    refused = await clients[0].post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
    assert_problem(refused, 429, "rate_limited")

    assert await forget_counts(prefix) > 0  # the window has passed

    retried = await clients[1].post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
    replayed = await clients[0].post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))

    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["order_id"] == order_id
    assert replayed.status_code == 201
    assert replayed.headers["idempotent-replayed"] == "true"
