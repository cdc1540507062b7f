"""The one vocabulary every suite uses to build orders and payments: HTTP steps over any
`httpx.AsyncClient`, the in-process ASGI client (`tests/support/asgi.py`) and the e2e suite's
client of a real `tillpoint serve` alike.

Each step asserts the status a well-formed request must get, so a test that only needs a
payment in some state reads as the state it needs, and a broken step fails where it broke.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY, CUSTOMER_SUBJECT, SERVICE_KEY, headers, new_key

AMOUNT = "100.00"
CURRENCY = "EUR"
TOKEN = "pm_card_visa"


def new_order_id() -> str:
    return f"ord-{secrets.token_hex(6)}"


async def create_order(
    http: httpx.AsyncClient,
    amount: str = AMOUNT,
    currency: str = CURRENCY,
    *,
    buyer_id: str = CUSTOMER_SUBJECT,
    order_id: str | None = None,
) -> str:
    """A new order (201); returns its id."""
    order_id = order_id or new_order_id()
    response = await http.post(
        "/api/v1/orders",
        json={"order_id": order_id, "buyer_id": buyer_id, "amount": amount, "currency": currency},
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert response.status_code == 201, response.text
    return order_id


def payment_body(
    order_id: str,
    amount: str = AMOUNT,
    token: str = TOKEN,
    *,
    currency: str = CURRENCY,
    **extra: Any,
) -> dict[str, Any]:
    """The body of `POST /api/v1/payments`; `extra` adds fields or replaces them
    (`payment_method=…`, `capture_method=…`, `snapshot_id=…`)."""
    return {
        "order_id": order_id,
        "amount": amount,
        "currency": currency,
        "payment_method": {"type": "card", "token": token},
        **extra,
    }


async def create_payment(
    http: httpx.AsyncClient, order_id: str, amount: str = AMOUNT, **body: Any
) -> dict[str, Any]:
    """A new payment of the order (201), not confirmed; `body` as for `payment_body`."""
    response = await http.post(
        "/api/v1/payments",
        json=payment_body(order_id, amount, **body),
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def confirm(
    http: httpx.AsyncClient,
    payment_id: str,
    expected: str | None = None,
    key: str | None = None,
    *,
    body: Any = None,
) -> dict[str, Any]:
    """Confirms the payment (200); asserts it reached `expected` when that is given."""
    response = await http.post(
        f"/api/v1/payments/{payment_id}/confirm",
        json=body,
        headers=headers(SERVICE_KEY, key or new_key()),
    )
    assert response.status_code == 200, response.text
    payment: dict[str, Any] = response.json()
    if expected is not None:
        assert payment["status"] == expected, payment
    return payment


async def new_payment(
    http: httpx.AsyncClient,
    amount: str = AMOUNT,
    currency: str = CURRENCY,
    *,
    buyer_id: str = CUSTOMER_SUBJECT,
    confirmed: bool = True,
    **body: Any,
) -> dict[str, Any]:
    """A new order and its payment, confirmed unless `confirmed=False`; `body` as for
    `payment_body` (`token=…`, `capture_method=…`)."""
    order_id = await create_order(http, amount, currency, buyer_id=buyer_id)
    created = await create_payment(http, order_id, amount, currency=currency, **body)
    if not confirmed:
        return created
    return await confirm(http, created["payment_id"])


async def payment(http: httpx.AsyncClient, payment_id: str) -> dict[str, Any]:
    """The payment as `GET /api/v1/payments/{id}` shows it (200)."""
    response = await http.get(f"/api/v1/payments/{payment_id}", headers=headers(SERVICE_KEY))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def order(http: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    """The order as `GET /api/v1/orders/{id}` shows it (200)."""
    response = await http.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def event_types(http: httpx.AsyncClient, payment_id: str) -> list[str]:
    """The payment's event history, oldest first, as its event types."""
    response = await http.get(f"/api/v1/payments/{payment_id}/events", headers=headers(SERVICE_KEY))
    assert response.status_code == 200, response.text
    return [e["event_type"] for e in response.json()["data"]]


async def ledger(http: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    """Every payment of the order, as the admin ledger lists them."""
    response = await http.get(
        f"/api/v1/admin/orders/{order_id}/payments", headers=headers(ADMIN_KEY)
    )
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data
