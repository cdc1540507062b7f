"""A real `tillpoint serve` process: the mock's signed webhook travels over HTTP to itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_KEY,
    SERVICE_KEY,
    headers,
    postgres_url,
)
from tests.support import flows
from tests.support.server import migrate, start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def _until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll until `check` returns something truthy (bounded; never a blind sleep)."""
    async with asyncio.timeout(timeout):
        while True:
            try:
                value = await check()
            except httpx.TransportError:
                value = None
            if value:
                return value
            await asyncio.sleep(0.2)
    raise AssertionError(what)  # pragma: no cover


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = postgres_url()
    migrate(url, tmp_path)
    process = start_server(
        url,
        tmp_path,
        mock_webhook_url="http://127.0.0.1:{port}/api/v1/webhooks/mock",
        mock_delay_ms="200",
        run_workers_in_api="true",
        webhook_retry_base="1s",  # should the webhook overtake our own commit
    )
    try:
        async with httpx.AsyncClient(base_url=process.base_url, timeout=10.0) as http:
            yield http
    finally:
        process.kill()


async def test_an_async_card_is_captured_through_the_signed_webhook(
    server: httpx.AsyncClient,
) -> None:
    order_id = await flows.create_order(server, "25.00", buyer_id="b")
    payment_id = (await flows.create_payment(server, order_id, "25.00", token="pm_card_async"))[
        "payment_id"
    ]
    await flows.confirm(server, payment_id, "PROCESSING")

    async def captured() -> bool:
        got = await server.get(f"/api/v1/payments/{payment_id}", headers=headers(SERVICE_KEY))
        return bool(got.json()["status"] == "CAPTURED")

    await _until(captured, "the payment never reached CAPTURED")
    order = await server.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
    assert order.json()["status"] == "PAID"
    events = await server.get(f"/api/v1/payments/{payment_id}/events", headers=headers(SERVICE_KEY))
    types = [e["event_type"] for e in events.json()["data"]]
    assert types.count("CAPTURE_SUCCEEDED") == 1
    (received,) = [e for e in events.json()["data"] if e["event_type"] == "WEBHOOK_RECEIVED"]
    assert received["payload"]["provider_event_type"] == "payment.captured"
    listed = await server.get(
        "/api/v1/admin/webhooks/events",
        params={"provider": "mock", "status": "PROCESSED", "limit": 100},
        headers=headers(ADMIN_KEY),
    )
    assert listed.status_code == 200
    ids = {row["webhook_event_id"] for row in listed.json()["data"]}
    assert received["payload"]["webhook_event_id"] in ids
