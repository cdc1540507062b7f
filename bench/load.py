"""The bounded load generator: `concurrency` tasks share one keep-alive client whose
connection limit equals the concurrency; each step stops at its deadline or when its work runs
out."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from bench.procs import MemorySampler, Server
from bench.stats import Result


class OpError(Exception):
    """An operation ended in an unexpected status: counted as an error, never retried."""


Op = Callable[[Any, int], Awaitable[None]]


def expect(response: httpx.Response | FastResponse, status: int) -> Any:
    if response.status_code != status:
        raise OpError(
            f"{response.request.method} {response.request.url.path} → "
            f"{response.status_code}: {response.text[:200]}"
        )
    return response.json()


@dataclass(frozen=True, slots=True)
class _Request:
    method: str
    url: httpx.URL


@dataclass(frozen=True, slots=True)
class FastResponse:
    """The slice of `httpx.Response` the scenarios read."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    request: _Request

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class FastClient:
    """A keep-alive HTTP client on aiohttp with httpx's `post`/`get` shape.

    The load generator shares two cores with the servers it measures; httpx's pool costs so
    much CPU per request that a bare endpoint measured *slower* as concurrency grew (1.7k/s at
    c=1, 0.2k/s at c=64), so the client, not the server, set the numbers.
    """

    def __init__(self, base_url: str, concurrency: int) -> None:
        self._base = base_url.rstrip("/")
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FastClient:
        connector = aiohttp.TCPConnector(limit=self._concurrency, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> FastResponse:
        assert self._session is not None
        url = self._base + path
        send = dict(headers or {})
        data = content
        if json is not None:
            data = _dumps(json)
            send.setdefault("content-type", "application/json")
        try:
            async with self._session.request(method, url, data=data, headers=send) as response:
                body = await response.read()
                return FastResponse(
                    response.status,
                    response.headers,
                    body,
                    _Request(method, httpx.URL(url)),
                )
        except aiohttp.ClientError as exc:
            raise httpx.TransportError(str(exc)) from exc

    async def post(self, path: str, **kwargs: Any) -> FastResponse:
        return await self.request("POST", path, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> FastResponse:
        return await self.request("GET", path, **kwargs)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def client(base_url: str, concurrency: int) -> FastClient:
    return FastClient(base_url, concurrency)


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
