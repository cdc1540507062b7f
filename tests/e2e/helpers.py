"""Small HTTP steps shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import SERVICE_KEY, headers, new_key


async def create_order(http: httpx.AsyncClient, amount: str = "100.00") -> str:
    order_id = f"ord-{new_key()}"
    response = await http.post(
        "/api/v1/orders",
        json={"order_id": order_id, "buyer_id": "buyer-1", "amount": amount, "currency": "EUR"},
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert response.status_code == 201, response.text
    return order_id


def payment_body(
    order_id: str, amount: str = "100.00", token: str = "pm_card_visa", **extra: Any
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "amount": amount,
        "currency": "EUR",
        "payment_method": {"type": "card", "token": token},
        **extra,
    }


async def create_payment(
    http: httpx.AsyncClient, order_id: str, amount: str = "100.00", **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        "/api/v1/payments",
        json=payment_body(order_id, amount, **extra),
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def confirm(
    http: httpx.AsyncClient, payment_id: str, expected: str, key: str | None = None
) -> dict[str, Any]:
    response = await http.post(
        f"/api/v1/payments/{payment_id}/confirm", headers=headers(SERVICE_KEY, key or new_key())
    )
    assert response.status_code == 200, response.text
    payment: dict[str, Any] = response.json()
    assert payment["status"] == expected, payment
    return payment
