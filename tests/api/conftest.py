"""A small client vocabulary for the behaviour tests: orders, payments and their records.

`Api` binds a client and its container; its orders and payments are the shared steps of
`tests/support/flows.py` at this suite's defaults (USD). Every helper goes through HTTP; the
assertions about rows use the container's engine, so each test proves what a client sees *and*
what the database keeps.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import CUSTOMER_SUBJECT, SERVICE_KEY, headers, new_key
from tests.support import flows
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container

PROBLEM_FIELDS = {"type", "title", "status", "detail", "code", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An RFC 9457 document with the stable `code` and the request id of the response."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body.keys() >= PROBLEM_FIELDS
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class Api:
    def __init__(self, client: httpx.AsyncClient, container: Container) -> None:
        self.client = client
        self.container = container

    async def post(
        self, path: str, body: Any = None, *, key: str = SERVICE_KEY, idem: str | None = None
    ) -> httpx.Response:
        return await self.client.post(path, json=body, headers=headers(key, idem or new_key()))

    async def get(self, path: str, *, key: str = SERVICE_KEY, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=headers(key), params=params)

    async def order(
        self, amount: str = "100.00", currency: str = "USD", buyer_id: str = CUSTOMER_SUBJECT
    ) -> str:
        return await flows.create_order(self.client, amount, currency, buyer_id=buyer_id)

    async def payment(
        self,
        order_id: str,
        amount: str = "100.00",
        currency: str = "USD",
        *,
        method: dict[str, Any] | None = None,
        capture_method: str = "automatic",
    ) -> dict[str, Any]:
        created = await flows.create_payment(
            self.client,
            order_id,
            amount,
            currency=currency,
            capture_method=capture_method,
            payment_method=method or {"token": "pm_card_visa"},
        )
        assert created["status"] == "INITIATED"
        return created

    async def confirm(self, payment_id: str, body: Any = None) -> httpx.Response:
        return await self.post(f"/api/v1/payments/{payment_id}/confirm", body)

    async def confirmed(
        self,
        amount: str = "100.00",
        currency: str = "USD",
        *,
        method: dict[str, Any] | None = None,
        capture_method: str = "automatic",
    ) -> dict[str, Any]:
        """A new order and its payment, confirmed; asserts the confirm answered 200."""
        order_id = await self.order(amount, currency)
        created = await self.payment(
            order_id, amount, currency, method=method, capture_method=capture_method
        )
        return await flows.confirm(self.client, created["payment_id"])

    async def payment_state(self, payment_id: str) -> dict[str, Any]:
        return await flows.payment(self.client, payment_id)

    async def order_state(self, order_id: str) -> dict[str, Any]:
        return await flows.order(self.client, order_id)

    async def ledger(self, order_id: str) -> list[dict[str, Any]]:
        return await flows.ledger(self.client, order_id)

    async def event_types(self, payment_id: str) -> list[str]:
        return await flows.event_types(self.client, payment_id)

    async def outbox(self, payment_id: str) -> list[tuple[str, int, dict[str, Any]]]:
        """`(routing_key, sequence, body)` of the payment's outbox rows, in insertion order."""
        o = t.outbox
        async with self.container.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(o.c.routing_key, o.c.sequence, o.c.body)
                .where(o.c.aggregate_id == payment_id)
                .order_by(o.c.id)
            )
            return [(r.routing_key, r.sequence, json.loads(r.body)) for r in rows]

    async def row(self, table: sa.Table, **where: Any) -> dict[str, Any]:
        async with self.container.engine.connect() as conn:
            found = (
                (
                    await conn.execute(
                        sa.select(table).where(*(table.c[k] == v for k, v in where.items()))
                    )
                )
                .mappings()
                .one()
            )
        return dict(found)


@pytest.fixture
def api(client: httpx.AsyncClient, container: Container) -> Api:
    return Api(client, container)
