"""Helpers for the webhook tests: signed deliveries and payments in a known state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from standardwebhooks import Webhook

from tests.conftest import MOCK_WEBHOOK_SECRET, SERVICE_KEY, headers, new_key
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container
from tillpoint.domain.ids import new_id
from tillpoint.entrypoints.api.app import create_app
from tillpoint.service.webhooks import process_due_webhooks


def mock_event(
    event_type: str, provider_payment_id: str, amount: str = "10.00", **data: Any
) -> dict[str, Any]:
    return {
        "id": new_id("evt"),
        "type": event_type,
        "created": int(datetime.now(UTC).timestamp()),
        "data": {
            "provider_payment_id": provider_payment_id,
            "amount": amount,
            "currency": "EUR",
            **data,
        },
    }


def sign_mock(
    event: dict[str, Any],
    *,
    secret: str = MOCK_WEBHOOK_SECRET,
    skew: timedelta = timedelta(),
) -> tuple[bytes, dict[str, str]]:
    """Signed by the `standardwebhooks` package itself, as a provider would."""
    body = json.dumps(event, separators=(",", ":"))
    moment = datetime.now(UTC) + skew
    return body.encode(), {
        "content-type": "application/json",
        "webhook-id": event["id"],
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(event["id"], moment, body),
    }


async def deliver(client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    body, hdrs = sign_mock(event)
    return await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)


async def process(container: Container) -> int:
    assert container.webhooks is not None
    return await process_due_webhooks(deps=container.deps, inbox=container.webhooks)


async def new_payment(
    client: httpx.AsyncClient,
    *,
    token: str = "pm_card_threeDSecure",
    capture_method: str = "automatic",
    confirm: bool = True,
) -> dict[str, Any]:
    """An order of 10.00 EUR and its payment; confirmed, a 3-D Secure card waits in
    REQUIRES_ACTION with its provider id and an open provider operation."""
    order_id = f"ord-{new_key()}"
    created = await client.post(
        "/api/v1/orders",
        json={"order_id": order_id, "buyer_id": "b", "amount": "10.00", "currency": "EUR"},
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert created.status_code == 201, created.text
    pay = await client.post(
        "/api/v1/payments",
        json={
            "order_id": order_id,
            "amount": "10.00",
            "currency": "EUR",
            "capture_method": capture_method,
            "payment_method": {"token": token},
        },
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert pay.status_code == 201, pay.text
    if not confirm:
        return dict(pay.json())
    confirmed = await client.post(
        f"/api/v1/payments/{pay.json()['payment_id']}/confirm",
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert confirmed.status_code == 200, confirmed.text
    return dict(confirmed.json())


async def payment(client: httpx.AsyncClient, payment_id: str) -> dict[str, Any]:
    got = await client.get(f"/api/v1/payments/{payment_id}", headers=headers(SERVICE_KEY))
    assert got.status_code == 200, got.text
    return dict(got.json())


async def event_types(client: httpx.AsyncClient, payment_id: str) -> list[str]:
    got = await client.get(f"/api/v1/payments/{payment_id}/events", headers=headers(SERVICE_KEY))
    assert got.status_code == 200, got.text
    return [e["event_type"] for e in got.json()["data"]]


async def order_status(client: httpx.AsyncClient, order_id: str) -> str:
    got = await client.get(f"/api/v1/orders/{order_id}", headers=headers(SERVICE_KEY))
    return str(got.json()["status"])


async def stored(container: Container, provider_event_id: str) -> list[Any]:
    w = t.webhook_events
    async with container.engine.connect() as conn:
        rows = await conn.execute(sa.select(w).where(w.c.provider_event_id == provider_event_id))
        return list(rows)


async def outbox_rows(container: Container, payment_id: str) -> list[Any]:
    async with container.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.outbox).where(t.outbox.c.aggregate_id == payment_id))
        return list(rows)


@asynccontextmanager
async def client_for(container: Container) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(container=container, run_workers=False)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tillpoint.test") as http:
            yield http
