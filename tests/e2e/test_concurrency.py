"""Parallel requests against two API processes on PostgreSQL: the guarantees hold across
processes because they rest on the database (a unique key, row locks), not on memory."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.e2e.conftest import scalar
from tests.support.flows import confirm, create_order, create_payment, payment_body

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


async def test_fifty_parallel_creates_with_one_key_make_one_payment(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    order_id = await create_order(http)
    h = headers(SERVICE_KEY, new_key())
    body = payment_body(order_id)

    answers = await asyncio.gather(
        *(http.post("/api/v1/payments", json=body, headers=h) for _ in range(50))
    )

    created = [a for a in answers if a.status_code == 201]
    in_use = [a for a in answers if a.status_code == 409]
    assert len(created) + len(in_use) == 50, Counter(a.status_code for a in answers)
    assert created, "the request that claimed the key must answer 201"
    assert len({a.content for a in created}) == 1  # byte for byte the stored answer
    assert {a.json()["code"] for a in in_use} <= {"idempotency_key_in_use"}
    assert await scalar(db, "SELECT count(*) FROM payments WHERE order_id = :o", o=order_id) == 1
    again = await http.post("/api/v1/payments", json=body, headers=h)
    assert again.status_code == 201
    assert again.content == created[0].content
    assert again.headers["idempotent-replayed"] == "true"


async def test_two_parallel_refunds_cannot_exceed_the_capture(http: httpx.AsyncClient) -> None:
    payment = await create_payment(http, await create_order(http))
    await confirm(http, payment["payment_id"], "CAPTURED")
    url = f"/api/v1/payments/{payment['payment_id']}/refund"

    answers = await asyncio.gather(
        *(
            http.post(url, json={"amount": "60.00"}, headers=headers(ADMIN_KEY, new_key()))
            for _ in range(2)
        )
    )

    assert sorted(a.status_code for a in answers) == [201, 409], [a.text for a in answers]
    refused = next(a for a in answers if a.status_code == 409)
    assert refused.json()["code"] == "amount_exceeds_refundable"
    current = await http.get(
        f"/api/v1/payments/{payment['payment_id']}", headers=headers(ADMIN_KEY)
    )
    assert current.json()["refunded_amount"] == "60.00"
    assert current.json()["status"] == "PARTIALLY_REFUNDED"


async def test_two_parallel_captures_reach_the_provider_once(
    http: httpx.AsyncClient, db: AsyncEngine
) -> None:
    payment = await create_payment(http, await create_order(http), capture_method="manual")
    payment_id = payment["payment_id"]
    await confirm(http, payment_id, "AUTHORIZED")
    url = f"/api/v1/payments/{payment_id}/capture"

    answers = await asyncio.gather(
        *(http.post(url, headers=headers(SERVICE_KEY, new_key())) for _ in range(2))
    )

    assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
    assert next(a for a in answers if a.status_code == 409).json()["code"] == (
        "invalid_state_transition"
    )
    provider_captures = await scalar(
        db,
        "SELECT count(*) FROM mock_gateway_ledger WHERE payment_id = :p AND operation = 'capture'",
        p=payment_id,
    )
    our_captures = await scalar(
        db,
        "SELECT count(*) FROM payment_transactions WHERE payment_id = :p AND kind = 'CAPTURE'",
        p=payment_id,
    )
    assert (provider_captures, our_captures) == (1, 1)
    current = await http.get(f"/api/v1/payments/{payment_id}", headers=headers(SERVICE_KEY))
    assert current.json()["status"] == "CAPTURED"
    assert current.json()["captured_amount"] == "100.00"
