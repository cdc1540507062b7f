"""The FastAPI application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tillpoint import __version__
from tillpoint.bootstrap import Container, build
from tillpoint.config import Settings
from tillpoint.entrypoints.api import errors, openapi
from tillpoint.entrypoints.api.middleware import EdgeGuardMiddleware, RequestContextMiddleware
from tillpoint.entrypoints.api.routes import (
    admin,
    aliases,
    exports,
    health,
    orders,
    payments,
    reconciliation,
    reference,
    webhooks,
)
from tillpoint.entrypoints.worker import Worker

DESCRIPTION = """
Payments that stay correct when the world misbehaves. Every POST needs an `Idempotency-Key`;
errors are RFC 9457 problem documents with a stable `code` whose `type` links to its row in the
API reference, served at [/docs/reference](/docs/reference) (docs/api.md in the repository).
"""


def create_app(
    settings: Settings | None = None,
    *,
    container: Container | None = None,
    run_workers: bool | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = container is None
        current = container or build(settings)
        app.state.container = current
        workers = run_workers if run_workers is not None else current.settings.workers_in_api
        worker = Worker(current) if workers else None
        task = asyncio.create_task(worker.run()) if worker else None
        try:
            yield
        finally:
            if worker is not None and task is not None:
                worker.stop()
                await task
            if owned:
                await current.aclose()

    app = FastAPI(
        title="tillpoint",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served from the package's own files by `reference`, not from a CDN
        redoc_url=None,
    )
    errors.install(app)
    app.add_middleware(EdgeGuardMiddleware)  # inside: its refusals carry the request id
    app.add_middleware(RequestContextMiddleware)
    for module in (health, orders, payments, admin, reconciliation, exports, webhooks):
        app.include_router(module.router)
    app.include_router(payments.mock_router)
    aliases.install(app)
    reference.install(app)
    openapi.install(app)
    return app
