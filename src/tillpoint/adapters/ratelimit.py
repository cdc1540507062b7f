"""Rate limits on the `limits` library: a moving window per (class, caller), counted in this
process's memory or in Redis, so several processes share one count.

A class names whose limits apply (a role, `webhooks`, `anonymous`); a class without limits of
its own takes `default`'s. The moving window is exact: no more than N requests are admitted in
any window of the limit's length, across every process sharing the storage.

When Redis cannot be reached the request is admitted (and logged, and counted): a rate limit
protects the service; it must not become the outage that takes payments down.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from prometheus_client import Counter

from tillpoint.adapters.telemetry import REGISTRY

log = structlog.get_logger("tillpoint.ratelimit")

REFUSED = Counter(
    "rate_limited_requests",
    "Requests refused with 429 rate_limited, by class",
    ["rate_class"],
    registry=REGISTRY,
)
STORAGE_ERRORS = Counter(
    "rate_limit_storage_errors",
    "Requests admitted without a rate-limit check because the limit storage failed",
    registry=REGISTRY,
)

DEFAULT_CLASS = "default"
# Redis calls answer fast or not at all: a dead Redis costs each request at most this much.
REDIS_TIMEOUT_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of one request's hit on its limits: the tightest limit's numbers."""

    allowed: bool
    limit: int
    remaining: int
    reset_after: int  # whole seconds until the window admits a request again (>= 1 if refused)

    def headers(self) -> dict[str, str]:
        values = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_after),
        }
        if not self.allowed:
            values["Retry-After"] = str(max(1, self.reset_after))
        return values


class RateLimiter:
    """Counts requests per (class, caller) against the configured limits."""

    def __init__(
        self,
        rules: Mapping[str, str],
        *,
        redis_url: str = "",
        prefix: str = "tillpoint",
    ) -> None:
        self._rules: dict[str, list[RateLimitItem]] = {
            name: parse_many(text) for name, text in rules.items() if text.strip()
        }
        self._unlimited = {name for name, text in rules.items() if not text.strip()}
        self._storage: MemoryStorage | RedisStorage
        if redis_url:
            self._storage = RedisStorage(
                "async+" + redis_url.removeprefix("async+"),
                implementation="redispy",
                key_prefix=f"{prefix}:ratelimit",
                wrap_exceptions=True,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
            )
        else:
            self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)

    @property
    def shared(self) -> bool:
        """True when the count lives in Redis (shared by every process using it)."""
        return isinstance(self._storage, RedisStorage)

    def limits_for(self, rate_class: str) -> list[RateLimitItem]:
        if rate_class in self._unlimited:
            return []
        return self._rules.get(rate_class) or self._rules.get(DEFAULT_CLASS, [])

    async def hit(self, rate_class: str, caller: str) -> Verdict | None:
        """Count one request of `caller` in `rate_class`; None when no limit applies (or the
        storage failed, which admits the request)."""
        items = self.limits_for(rate_class)
        if not items:
            return None
        try:
            return await self._hit(items, rate_class, caller)
        except StorageError as exc:
            STORAGE_ERRORS.inc()
            log.warning("ratelimit.storage_unavailable", error=str(exc.storage_error))
            return None

    async def _hit(self, items: list[RateLimitItem], rate_class: str, caller: str) -> Verdict:
        tightest: Verdict | None = None
        for item in items:
            allowed = await self._limiter.hit(item, rate_class, caller)
            stats = await self._limiter.get_window_stats(item, rate_class, caller)
            verdict = Verdict(
                allowed=allowed,
                limit=item.amount,
                remaining=stats.remaining,
                reset_after=max(0, math.ceil(stats.reset_time - time.time())),
            )
            if not allowed:
                REFUSED.labels(rate_class).inc()
                return verdict
            if tightest is None or verdict.remaining < tightest.remaining:
                tightest = verdict
        assert tightest is not None
        return tightest

    async def aclose(self) -> None:
        if isinstance(self._storage, RedisStorage):
            client = getattr(self._storage.bridge, "storage", None)
            if client is not None:
                await client.aclose()
        else:
            timer = self._storage.timer
            if timer is not None and not timer.done():
                timer.cancel()
                await asyncio.gather(timer, return_exceptions=True)
