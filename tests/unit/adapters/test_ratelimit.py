"""The rate limiter on its own: exact moving windows, the tightest of several limits, a count
shared through Redis, and a Redis that cannot be reached admits requests instead of failing."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.conftest import closed_port, need_service
from tillpoint.adapters.ratelimit import STORAGE_ERRORS, RateLimiter

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


async def test_a_window_admits_exactly_its_amount() -> None:
    limiter = RateLimiter({"default": "5/hour"})
    try:
        verdicts = [await limiter.hit("service", "key:checkout") for _ in range(7)]
    finally:
        await limiter.aclose()

    assert [v.allowed for v in verdicts if v] == [True] * 5 + [False] * 2
    assert [v.remaining for v in verdicts if v] == [4, 3, 2, 1, 0, 0, 0]
    refused = verdicts[-1]
    assert refused is not None
    assert refused.headers()["Retry-After"] == str(refused.reset_after)
    assert 3500 < refused.reset_after <= 3600


async def test_the_tightest_of_several_limits_decides() -> None:
    limiter = RateLimiter({"default": "100/hour;2/minute"})
    try:
        verdicts = [await limiter.hit("service", "key:checkout") for _ in range(3)]
    finally:
        await limiter.aclose()

    assert [(v.allowed, v.limit) for v in verdicts if v] == [(True, 2), (True, 2), (False, 2)]


async def test_no_rule_means_no_limit() -> None:
    limiter = RateLimiter({"customer": "1/hour", "admin": ""})
    try:
        assert await limiter.hit("service", "key:checkout") is None  # no default
        assert await limiter.hit("admin", "key:ops") is None
        assert limiter.limits_for("customer")
    finally:
        await limiter.aclose()


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A prefix of this test's own; its keys are deleted afterwards."""
    need_service("Redis", REDIS_HOST, REDIS_PORT)
    prefix = f"tillpoint-test-{secrets.token_hex(4)}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_two_limiters_on_one_redis_share_the_count(redis_prefix: str) -> None:
    first = RateLimiter({"default": "3/hour"}, redis_url=REDIS_URL, prefix=redis_prefix)
    second = RateLimiter({"default": "3/hour"}, redis_url=REDIS_URL, prefix=redis_prefix)
    try:
        verdicts = [await (first, second)[n % 2].hit("service", "key:x") for n in range(5)]
    finally:
        await first.aclose()
        await second.aclose()

    assert first.shared
    assert [v.allowed for v in verdicts if v] == [True, True, True, False, False]


async def test_an_unreachable_redis_admits_and_counts_the_failure() -> None:
    before = STORAGE_ERRORS._value.get()
    with closed_port() as port:
        limiter = RateLimiter({"default": "1/hour"}, redis_url=f"redis://127.0.0.1:{port}/0")
        try:
            verdicts = [await limiter.hit("service", "key:x") for _ in range(3)]
        finally:
            await limiter.aclose()

    assert verdicts == [None, None, None]
    assert STORAGE_ERRORS._value.get() == before + 3
