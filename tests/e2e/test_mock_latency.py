"""`TILLPOINT_MOCK_DELAY_MS` is the latency of the mock's *answer* (issue 9 item 4).

The mock records its effect first and then waits, as a slow real provider does: a process
killed during that wait died *after* the provider acted, and the retry of the same request
finds the charge the provider already made instead of making another.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import SERVICE_KEY, headers, new_key
from tests.e2e.conftest import scalar
from tests.e2e.test_crash_recovery import retry_until_not_in_use
from tests.support.flows import create_order, create_payment
from tests.support.server import start_server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

CHARGES = (
    "SELECT count(*) FROM mock_gateway_ledger WHERE payment_id = :p AND operation = 'authorize'"
)


async def test_a_process_killed_while_the_mock_answers_died_after_the_charge(
    e2e_database_url: str, e2e_workdir: Path, db: AsyncEngine
) -> None:
    slow = start_server(
        e2e_database_url, e2e_workdir, mock_delay_ms="20000", provider_timeout="60s"
    )
    key = new_key()
    try:
        async with httpx.AsyncClient(base_url=slow.base_url, timeout=60) as http:
            order_id = await create_order(http)
            payment_id = (await create_payment(http, order_id))["payment_id"]
            url = f"/api/v1/payments/{payment_id}/confirm"
            answer = asyncio.create_task(http.post(url, headers=headers(SERVICE_KEY, key)))
            for _ in range(200):  # the charge is recorded before the answer is sent
                if await scalar(db, CHARGES, p=payment_id) == 1:
                    break
                await asyncio.sleep(0.05)
            assert await scalar(db, CHARGES, p=payment_id) == 1
            assert not answer.done()  # still waiting for the mock's answer
            slow.kill_now()
            with pytest.raises(httpx.TransportError):
                await answer
    finally:
        slow.kill()
    assert slow.proc.returncode == -signal.SIGKILL
    status = await scalar(db, "SELECT status FROM payments WHERE payment_id = :p", p=payment_id)
    assert status == "INITIATED"  # the answer was never committed

    healthy = start_server(e2e_database_url, e2e_workdir, idempotency_lock_timeout="1s")
    try:
        async with httpx.AsyncClient(base_url=healthy.base_url, timeout=30) as http:
            url = f"/api/v1/payments/{payment_id}/confirm"
            retried = await retry_until_not_in_use(http, url, headers(SERVICE_KEY, key))
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "CAPTURED"
    finally:
        healthy.kill()
    assert await scalar(db, CHARGES, p=payment_id) == 1
