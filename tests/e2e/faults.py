"""The API with crash faults, for the crash-recovery tests (never part of `src/`).

`app()` builds the application exactly as `tillpoint.entrypoints.api.asgi` does (settings from
the environment, `bootstrap.build`, `create_app`), then swaps two adapters of its container for
wrappers that kill (SIGKILL, as a crash or an OOM kill would) or raise at one point of a request:

- `before_provider_call`: phase 1 is committed, the provider not yet asked,
- `after_provider_call`: the provider acted, nothing of its answer is committed,
- `after_commit`: everything is committed, the answer not yet stored under the Idempotency-Key.

The faults are `TILLPOINT_E2E_FAULTS`, read here only: comma-separated `<action>_<point>`, or
`<action>_<point>@<route name>` to hit one operation (`create_order`, `create_payment`,
`confirm`, `mock_complete`, `capture`, `void`, `refund`); `kill_…` SIGKILLs the process,
`crash_…` raises `FaultInjected`. `tests/e2e/fault_server.py` serves this app.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from tillpoint.bootstrap import Container, build
from tillpoint.config import Settings
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome
from tillpoint.entrypoints.api.app import create_app
from tillpoint.service.ports import (
    AuthorizeRequest,
    Claim,
    IdempotencyStore,
    Lookup,
    MockControl,
    PaymentProvider,
    ProviderPayment,
    StoredResponse,
)

ENV = "TILLPOINT_E2E_FAULTS"
ACTIONS = ("kill", "crash")
POINTS = ("before_provider_call", "after_provider_call", "after_commit")
ROUTES = ("create_order", "create_payment", "confirm", "mock_complete", "capture", "void", "refund")

log = structlog.get_logger("tests.e2e.faults")

# The ASGI scope of the request being served (None outside a request), set by `RequestScope`.
request_scope: ContextVar[Scope | None] = ContextVar("request_scope", default=None)


def route_name() -> str:
    """The name of the route serving the current request ("" outside a request).

    Read when a fault may fire, not when the request arrives: the router records the route it
    matched (`scope["route"]`) in the request's own scope, as `entrypoints/api/idempotent.py`
    reads it too, only once the request has passed the middleware.
    """
    scope = request_scope.get()
    return getattr(scope.get("route"), "name", "") if scope is not None else ""


class FaultInjected(Exception):
    """A `crash_…` fault: the request fails with an unexpected exception."""


@dataclass(frozen=True)
class Faults:
    names: frozenset[str]

    @classmethod
    def parse(cls, spec: str) -> Faults:
        """Refuses a name that would never fire, so a typo cannot pass for a survived crash."""
        names = frozenset(part.strip() for part in spec.split(",") if part.strip())
        valid = {f"{a}_{p}" for a in ACTIONS for p in POINTS}
        valid |= {f"{fault}@{route}" for fault in set(valid) for route in ROUTES}
        if unknown := names - valid:
            raise ValueError(f"unknown {ENV}: {sorted(unknown)}")
        return cls(names)

    def fire(self, point: str, operation: str) -> None:
        for action in ACTIONS:
            fault = f"{action}_{point}"
            if fault in self.names or f"{fault}@{operation}" in self.names:
                log.warning("fault.injected", fault=fault, operation=operation)
                if action == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise FaultInjected(f"{point}@{operation}")


class FaultyProvider:
    """A provider whose operations fire the provider-call faults around the real call.

    Faults are scoped by operation, as the use cases name them: `authorize` is `confirm` (also
    when a consumer or an alias route confirms), `complete` is `mock_complete`. The janitor's
    `get_transaction` never fires: it only reads.
    """

    def __init__(self, inner: PaymentProvider, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults
        self.name = inner.name
        self.capabilities = inner.capabilities

    async def _around(self, operation: str, call: Callable[[], Awaitable[Outcome]]) -> Outcome:
        self.faults.fire("before_provider_call", operation)
        try:
            return await call()
        finally:  # also when the call failed or timed out: its outcome is not committed yet
            self.faults.fire("after_provider_call", operation)

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        return await self._around(
            "confirm", lambda: self.inner.authorize(req, idempotency_key=idempotency_key)
        )

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._around(
            "capture",
            lambda: self.inner.capture(
                provider_payment_id, amount, idempotency_key=idempotency_key
            ),
        )

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        return await self._around(
            "void", lambda: self.inner.void(provider_payment_id, idempotency_key=idempotency_key)
        )

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._around(
            "refund",
            lambda: self.inner.refund(provider_payment_id, amount, idempotency_key=idempotency_key),
        )

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        return await self.inner.get_transaction(lookup)

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        return await self.inner.payment(provider_payment_id)  # only reads, as get_transaction

    def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        return self.inner.payments(created_from, created_to)

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        return await self.inner.client_secret(provider_payment_id, payment_id=payment_id)

    def available(self) -> bool:
        return self.inner.available()

    async def aclose(self) -> None:
        await self.inner.aclose()


class FaultyMockProvider(FaultyProvider):
    """The mock gateway's wrapper: it keeps `MockControl` (`/mock/complete` checks for it)."""

    async def complete(
        self,
        *,
        idempotency_key: str,
        payment_id: str,
        amount: Money,
        capture: bool,
        success: bool,
        failure_code: str | None,
    ) -> Outcome:
        inner = self.inner
        assert isinstance(inner, MockControl)
        return await self._around(
            "mock_complete",
            lambda: inner.complete(
                idempotency_key=idempotency_key,
                payment_id=payment_id,
                amount=amount,
                capture=capture,
                success=success,
                failure_code=failure_code,
            ),
        )


@dataclass(frozen=True)
class FaultyIdempotencyStore:
    """Fires `after_commit` when a finished answer is about to be stored under its key."""

    inner: IdempotencyStore
    faults: Faults

    async def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        now: datetime,
        expires_at: datetime,
        lock_timeout: timedelta,
    ) -> Claim:
        return await self.inner.claim(
            scope, key, fingerprint, now=now, expires_at=expires_at, lock_timeout=lock_timeout
        )

    async def complete(self, scope: str, key: str, response: StoredResponse) -> None:
        self.faults.fire("after_commit", route_name())
        await self.inner.complete(scope, key, response)

    async def release(self, scope: str, key: str) -> None:
        await self.inner.release(scope, key)

    async def reap(self, now: datetime, limit: int) -> int:
        return await self.inner.reap(now, limit)


class RequestScope:
    """ASGI middleware: keeps the scope of the request being served in `request_scope`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = request_scope.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            request_scope.reset(token)


def with_faults(container: Container, faults: Faults) -> Container:
    """The container with its providers and idempotency store wrapped to fire `faults`."""
    registry = container.deps.providers
    assert isinstance(registry, Mapping)
    providers: dict[str, PaymentProvider] = {
        name: (FaultyMockProvider if isinstance(p, MockControl) else FaultyProvider)(p, faults)
        for name, p in registry.items()
    }
    store = FaultyIdempotencyStore(container.idempotency.store, faults)
    return dataclasses.replace(
        container,
        deps=dataclasses.replace(container.deps, providers=providers),
        idempotency=dataclasses.replace(container.idempotency, store=store),
    )


def create_app_with_faults(settings: Settings, faults: Faults) -> FastAPI:
    container = with_faults(build(settings), faults)
    app = create_app(settings, container=container)
    app.add_middleware(RequestScope)  # outermost: sees every request
    serve = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # `create_app` leaves a container it was given open: close it as its own lifespan would.
        try:
            async with serve(app):
                yield
        finally:
            await container.aclose()

    app.router.lifespan_context = lifespan
    return app


def app() -> FastAPI:
    """The uvicorn factory: settings from the environment, faults from `TILLPOINT_E2E_FAULTS`."""
    return create_app_with_faults(Settings(), Faults.parse(os.environ.get(ENV, "")))
