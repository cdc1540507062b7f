"""A process SIGKILLed between the provider's answer and our commit: the retry with the same
Idempotency-Key after a restart finishes the work without charging the card a second time."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SERVICE_KEY, headers, new_key
from tests.e2e.conftest import scalar
from tests.support.flows import create_order, create_payment
from tests.support.server import start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def retry_until_not_in_use(
    http: httpx.AsyncClient, url: str, h: dict[str, str], timeout: float = 20.0
) -> httpx.Response:
    """The dead request's key is `in_use` until the lock timeout passes; then it is taken over."""
    deadline = time.monotonic() + timeout
    while True:
        response = await http.post(url, headers=h)
        if response.status_code != 409 or time.monotonic() > deadline:
            return response
        assert response.json()["code"] == "idempotency_key_in_use", response.text
        await asyncio.sleep(0.3)


async def test_confirm_killed_after_the_provider_call_charges_once(
    e2e_database_url: str, e2e_workdir: Path, db: AsyncEngine
) -> None:
    key = new_key()
    doomed = start_server(e2e_database_url, e2e_workdir, faults="kill_after_provider_call")
    try:
        async with httpx.AsyncClient(base_url=doomed.base_url, timeout=30) as http:
            order_id = await create_order(http)
            payment_id = (await create_payment(http, order_id))["payment_id"]
            with pytest.raises(httpx.TransportError):
                await http.post(
                    f"/api/v1/payments/{payment_id}/confirm", headers=headers(SERVICE_KEY, key)
                )
        assert doomed.wait_exit(timeout=30) == -signal.SIGKILL
    finally:
        doomed.kill()
    # The charge happened at the provider; nothing after it was committed.
    status = await scalar(db, "SELECT status FROM payments WHERE payment_id = :p", p=payment_id)
    assert status == "INITIATED"
    sale = await scalar(
        db, "SELECT status FROM payment_transactions WHERE payment_id = :p", p=payment_id
    )
    assert sale == "PENDING"

    restarted = start_server(e2e_database_url, e2e_workdir, idempotency_lock_timeout="1s")
    try:
        async with httpx.AsyncClient(base_url=restarted.base_url, timeout=30) as http:
            url = f"/api/v1/payments/{payment_id}/confirm"
            retried = await retry_until_not_in_use(http, url, headers(SERVICE_KEY, key))
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "CAPTURED"
            replayed = await http.post(url, headers=headers(SERVICE_KEY, key))
            assert replayed.content == retried.content
            assert replayed.headers["idempotent-replayed"] == "true"
            order = await http.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
            assert order.json()["status"] == "PAID"
    finally:
        restarted.kill()

    counts = {
        "provider charges": await scalar(
            db,
            "SELECT count(*) FROM mock_gateway_ledger WHERE payment_id = :p "
            "AND operation = 'authorize'",
            p=payment_id,
        ),
        "succeeded sales": await scalar(
            db,
            "SELECT count(*) FROM payment_transactions WHERE payment_id = :p "
            "AND kind = 'SALE' AND status = 'SUCCEEDED'",
            p=payment_id,
        ),
        "ledger rows": await scalar(
            db, "SELECT count(*) FROM payment_transactions WHERE payment_id = :p", p=payment_id
        ),
        "capture events": await scalar(
            db,
            "SELECT count(*) FROM payment_events WHERE payment_id = :p "
            "AND event_type = 'CAPTURE_SUCCEEDED'",
            p=payment_id,
        ),
        "published successes": await scalar(
            db,
            "SELECT count(*) FROM outbox WHERE aggregate_id = :p "
            "AND routing_key = 'payment.succeeded'",
            p=payment_id,
        ),
    }
    assert counts == dict.fromkeys(counts, 1)
    captured = await scalar(
        db, "SELECT captured_minor FROM payments WHERE payment_id = :p", p=payment_id
    )
    assert captured == 10000
