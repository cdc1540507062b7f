"""Every answer says `nosniff`; every API answer (payments, orders, problems) is `no-store`, so
no browser or proxy keeps a copy of payment data."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api
from tests.conftest import SERVICE_KEY, headers


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/payments/pay_unknown", 404),
        ("GET", "/api/v1/orders/ord-unknown", 404),
        ("POST", "/api/v1/orders", 422),  # no body: a problem answer
    ],
)
async def test_api_answers_are_never_cached(api: Api, method: str, path: str, status: int) -> None:
    response = await api.client.request(method, path, headers=headers(SERVICE_KEY))

    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_successful_payment_answer_is_not_cached(api: Api) -> None:
    payment = await api.confirmed()
    response = await api.get(f"/api/v1/payments/{payment['payment_id']}")

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"


async def test_health_is_nosniff_and_not_marked_private(api: Api) -> None:
    response = await api.client.get("/healthz")

    assert response.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in response.headers.get("cache-control", "")
