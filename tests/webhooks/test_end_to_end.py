"""A real `tillpoint serve` process: the mock's signed webhook travels over HTTP to itself."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    ADMIN_KEY,
    API_KEYS,
    MOCK_WEBHOOK_SECRET,
    SERVICE_KEY,
    free_port,
    headers,
    new_key,
    postgres_url,
)

TILLPOINT = Path(sys.executable).with_name("tillpoint")

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
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        # no stray TILLPOINT_* setting (a broker URL, say) reaches the server
        **{k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")},
        "TILLPOINT_DATABASE_URL": url,
        "TILLPOINT_API_KEYS": json.dumps(API_KEYS),
        "TILLPOINT_MOCK_WEBHOOK_SECRET": MOCK_WEBHOOK_SECRET,
        "TILLPOINT_MOCK_WEBHOOK_URL": f"{base}/api/v1/webhooks/mock",
        "TILLPOINT_MOCK_DELAY_MS": "200",
        "TILLPOINT_RUN_WORKERS_IN_API": "true",
        "TILLPOINT_WEBHOOK_RETRY_BASE": "1s",  # should the webhook overtake our own commit
        "TILLPOINT_LOG_LEVEL": "WARNING",
        "TILLPOINT_STATE_DIR": str(tmp_path / "state"),
    }
    subprocess.run([str(TILLPOINT), "migrate"], env=env, check=True, capture_output=True)
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [str(TILLPOINT), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10.0) as http:

            async def up() -> bool:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                return (await http.get("/healthz")).status_code == 200

            await _until(up, "the server never came up", timeout=120.0)  # a loaded machine
            yield http
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


async def test_an_async_card_is_captured_through_the_signed_webhook(
    server: httpx.AsyncClient,
) -> None:
    order_id = f"ord-{new_key()}"
    created = await server.post(
        "/api/v1/orders",
        json={"order_id": order_id, "buyer_id": "b", "amount": "25.00", "currency": "EUR"},
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert created.status_code == 201, created.text
    pay = await server.post(
        "/api/v1/payments",
        json={
            "order_id": order_id,
            "amount": "25.00",
            "currency": "EUR",
            "payment_method": {"token": "pm_card_async"},
        },
        headers=headers(SERVICE_KEY, new_key()),
    )
    payment_id = pay.json()["payment_id"]
    confirmed = await server.post(
        f"/api/v1/payments/{payment_id}/confirm", headers=headers(SERVICE_KEY, new_key())
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "PROCESSING"

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
