from __future__ import annotations

import httpx

from tests.conftest import SERVICE_KEY, headers, new_key


async def test_order_and_payment_round_trip(client: httpx.AsyncClient) -> None:
    order_id = f"ord-{new_key()}"
    h = headers(SERVICE_KEY, new_key())
    created = await client.post(
        "/api/v1/orders",
        json={"order_id": order_id, "buyer_id": "b", "amount": "10.00", "currency": "EUR"},
        headers=h,
    )
    assert created.status_code == 201, created.text
    pay = await client.post(
        "/api/v1/payments",
        json={
            "order_id": order_id,
            "amount": "10.00",
            "currency": "EUR",
            "payment_method": {"token": "pm_card_visa"},
        },
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert pay.status_code == 201, pay.text
    confirmed = await client.post(
        f"/api/v1/payments/{pay.json()['payment_id']}/confirm",
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["status"] == "CAPTURED"
    order = await client.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
    assert order.json()["status"] == "PAID"
