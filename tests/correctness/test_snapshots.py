"""Checkout snapshots: a payment bound to a snapshot must match what the customer was shown,
and only for as long as the quote is valid."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from tests.conftest import SERVICE_KEY, headers, new_key
from tests.correctness.helpers import moved
from tests.support.clock import MovableClock
from tests.support.flows import create_order, payment_body

SNAPSHOT_TTL = timedelta(minutes=15)


async def quote(client: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    """2 x 40.00 - 10.00 + 25.00 + 5.00 = 100.00, the order's amount."""
    response = await client.post(
        "/api/v1/checkout/quote",
        json={
            "order_id": order_id,
            "items": [{"variant_id": "sku-1", "quantity": 2, "unit_amount": "40.00"}],
            "shipping_amount": "25.00",
            "tax_amount": "5.00",
            "discount_amount": "10.00",
        },
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert response.status_code == 201, response.text
    snapshot: dict[str, Any] = response.json()
    return snapshot


async def pay(client: httpx.AsyncClient, order_id: str, snapshot_id: str) -> httpx.Response:
    return await client.post(
        "/api/v1/payments",
        json=payment_body(order_id, snapshot_id=snapshot_id),
        headers=headers(SERVICE_KEY, new_key()),
    )


async def test_a_quote_prices_the_order(client: httpx.AsyncClient) -> None:
    order_id = await create_order(client)

    snapshot = await quote(client, order_id)

    assert snapshot["snapshot_id"].startswith("snap_")
    assert (snapshot["order_id"], snapshot["currency"]) == (order_id, "EUR")
    assert snapshot["totals"] == {
        "subtotal": "80.00",
        "discount": "10.00",
        "shipping": "25.00",
        "tax": "5.00",
        "total": "100.00",
    }
    assert snapshot["expires_at"]


async def test_a_matching_fresh_snapshot_is_bound_to_the_payment(
    client: httpx.AsyncClient,
) -> None:
    order_id = await create_order(client)
    snapshot = await quote(client, order_id)

    created = await pay(client, order_id, snapshot["snapshot_id"])

    assert created.status_code == 201, created.text
    assert created.json()["snapshot_id"] == snapshot["snapshot_id"]


async def test_an_expired_snapshot_is_refused(
    client: httpx.AsyncClient, clock: MovableClock
) -> None:
    order_id = await create_order(client)
    snapshot = await quote(client, order_id)

    with moved(clock, SNAPSHOT_TTL + timedelta(seconds=1)):
        refused = await pay(client, order_id, snapshot["snapshot_id"])

    assert (refused.status_code, refused.json()["code"]) == (422, "snapshot_expired")


async def test_a_changed_order_total_is_refused(client: httpx.AsyncClient) -> None:
    order_id = await create_order(client)
    snapshot = await quote(client, order_id)
    patched = await client.patch(
        f"/api/v1/orders/{order_id}", json={"amount": "90.00"}, headers=headers(SERVICE_KEY)
    )
    assert patched.status_code == 200, patched.text

    refused = await client.post(
        "/api/v1/payments",
        json=payment_body(order_id, amount="90.00", snapshot_id=snapshot["snapshot_id"]),
        headers=headers(SERVICE_KEY, new_key()),
    )

    assert (refused.status_code, refused.json()["code"]) == (409, "snapshot_mismatch")


async def test_a_snapshot_of_another_order_is_refused(client: httpx.AsyncClient) -> None:
    order_id, other_id = await create_order(client), await create_order(client)
    snapshot = await quote(client, other_id)

    refused = await pay(client, order_id, snapshot["snapshot_id"])

    assert (refused.status_code, refused.json()["code"]) == (409, "snapshot_mismatch")
