"""The one way the suites talk HTTP to the app in process: an httpx client over ASGI.

Every client made here runs the app's lifespan (startup and shutdown, as the server does) and
hands each response to the end-of-run leak scan (`tests/security/scan.py`: card data, API keys,
JWTs, webhook secrets, Stripe keys and client secrets), so no suite can see an answer the scan
does not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tillpoint.bootstrap import Container
from tillpoint.entrypoints.api.app import create_app

BASE_URL = "http://tillpoint.test"


def app_for(container: Container) -> FastAPI:
    """The API over `container`, without its background workers: a test runs those itself
    when it wants them, so nothing moves behind its back."""
    return create_app(container=container, run_workers=False)


@asynccontextmanager
async def asgi_client(
    container: Container | None = None, *, app: FastAPI | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` (by default `app_for(container)`), its lifespan running.

    Pass `app` to serve an app a test changed first (a route of its own, say)."""
    if app is None:
        if container is None:
            raise TypeError("asgi_client needs a container or an app")
        app = app_for(container)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url=BASE_URL,
            event_hooks={"response": [scan_response]},
        ) as http,
    ):
        yield http


async def scan_response(response: httpx.Response) -> None:
    """Every answer the API gives a test is scanned for leaks; reported at the end of the run."""
    from tests.security.scan import note_response

    if response.request.url.path == "/metrics":  # measurements (long float digits), no user data
        return
    body = (await response.aread()).decode("utf-8", "replace")
    request = response.request
    source = f"{request.method} {request.url.path}"
    note_response(source, str(response.headers), body, sent=unquote(str(request.url)))
