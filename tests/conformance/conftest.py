"""The conformance suite's fixtures: every test runs once per adapter (the mock, and Stripe
against localstripe) and once per database (SQLite, PostgreSQL), through the HTTP API."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conformance.harness import Harness, MockHarness, StripeHarness
from tests.conformance.shop import Shop
from tests.conftest import settings_for
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tillpoint.bootstrap import Container, build


@pytest.fixture(params=["mock", "stripe"])
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "mock":
        return MockHarness()
    localstripe = request.getfixturevalue("clean_localstripe")
    return StripeHarness(localstripe)


@pytest.fixture
async def container(
    database_url: str, clock: MovableClock, harness: Harness
) -> AsyncIterator[Container]:
    current = build(settings_for(database_url, **harness.settings()), clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


@pytest.fixture
async def client(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    async with asgi_client(container) as http:
        yield http


@pytest.fixture
def shop(client: httpx.AsyncClient, harness: Harness, container: Container) -> Shop:
    return Shop(client, harness, container)
