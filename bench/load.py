"""The bounded load generator: `concurrency` tasks share one httpx client whose connection
limit equals the concurrency; each step stops at its deadline or when its work runs out."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from bench.procs import MemorySampler, Server
from bench.stats import Result


class OpError(Exception):
    """An operation ended in an unexpected status: counted as an error, never retried."""


Op = Callable[[httpx.AsyncClient, int], Awaitable[None]]


def expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise OpError(
            f"{response.request.method} {response.request.url.path} → "
            f"{response.status_code}: {response.text[:200]}"
        )
    return response.json()


def client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30.0)


async def drive(
    op: Callable[[int], Awaitable[None]],
    *,
    concurrency: int,
    seconds: float,
    max_ops: int | None = None,
    result: Result,
) -> Result:
    """Closed loop: each task starts its next operation when the previous one ends."""
    counter = itertools.count()
    deadline = time.perf_counter() + seconds
    errors: list[str] = []

    async def worker() -> None:
        while time.perf_counter() < deadline:
            index = next(counter)
            if max_ops is not None and index >= max_ops:
                return
            started = time.perf_counter()
            try:
                await op(index)
            except (OpError, httpx.HTTPError, TimeoutError) as exc:
                result.errors += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                continue
            result.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    result.ops = len(result.latencies)
    if max_ops is not None and result.ops + result.errors >= max_ops and result.seconds < seconds:
        result.note = f"work ran out after {result.seconds:.1f}s"
    if errors:
        result.note = (result.note + "; " if result.note else "") + " | ".join(errors)
    return result


async def http_step(
    name: str,
    base_url: str,
    op: Op,
    *,
    concurrency: int,
    seconds: float,
    max_ops: int | None = None,
    servers: list[Server] | None = None,
    warmup: int = 0,
    unit: str = "ops/s",
) -> Result:
    """One scenario at one concurrency: an optional untimed warm-up, then the timed run while the
    servers' memory is sampled."""
    result = Result(name, concurrency, unit=unit)
    async with client(base_url, concurrency) as http:
        offset = 0
        if warmup:
            warm = Result(name, concurrency)
            await drive(
                lambda i: op(http, i),
                concurrency=concurrency,
                seconds=30,
                max_ops=warmup,
                result=warm,
            )
            offset = warmup
        limit = max_ops - offset if max_ops is not None else None
        with MemorySampler(servers or []) as memory:
            await drive(
                lambda i: op(http, i + offset),
                concurrency=concurrency,
                seconds=seconds,
                max_ops=limit,
                result=result,
            )
        result.rss_mb = memory.peak_per_process
    return result
