"""The calls a shop's backend makes in the conformance suite, at the adapter's currency."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.harness import Card, Harness
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.support import flows
from tillpoint.bootstrap import Container


class Shop:
    """The calls a shop's backend makes, at the adapter's currency."""

    def __init__(self, http: httpx.AsyncClient, harness: Harness, container: Container) -> None:
        self.http = http
        self.harness = harness
        self.container = container

    def needs(self, capability: str) -> None:
        if not getattr(self.container.deps.providers[self.harness.name].capabilities, capability):
            pytest.skip(f"{self.harness.name} does not declare {capability}")

    async def payment(
        self, amount: str = "100.00", *, manual: bool = False, card: Card = "success"
    ) -> str:
        order_id = await flows.create_order(self.http, amount, self.harness.currency)
        created = await flows.create_payment(
            self.http,
            order_id,
            amount,
            currency=self.harness.currency,
            provider=self.harness.name,
            capture_method="manual" if manual else "automatic",
            payment_method=await self.harness.card(card),
        )
        payment_id: str = created["payment_id"]
        return payment_id

    async def post(self, path: str, body: Any = None, *, key: str = SERVICE_KEY) -> httpx.Response:
        return await self.http.post(path, json=body, headers=headers(key, new_key()))

    async def confirm(self, payment_id: str) -> httpx.Response:
        return await self.post(f"/api/v1/payments/{payment_id}/confirm")

    async def confirmed(self, amount: str = "100.00", *, manual: bool = False) -> dict[str, Any]:
        payment_id = await self.payment(amount, manual=manual)
        return await flows.confirm(self.http, payment_id, "AUTHORIZED" if manual else "CAPTURED")

    async def capture(self, payment_id: str, amount: str | None = None) -> httpx.Response:
        body = {"amount": amount} if amount is not None else None
        return await self.post(f"/api/v1/payments/{payment_id}/capture", body)

    async def refund(self, payment_id: str, amount: str) -> httpx.Response:
        return await self.post(
            f"/api/v1/payments/{payment_id}/refund", {"amount": amount}, key=ADMIN_KEY
        )

    async def calls(self, payment_id: str, operation: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"/api/v1/admin/payments/{payment_id}/provider-calls", headers=headers(ADMIN_KEY)
        )
        assert response.status_code == 200, response.text
        return [c for c in response.json()["data"] if c["operation"] == operation]
