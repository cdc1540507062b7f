"""Helpers for the webhook tests: signed deliveries and payments in a known state."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from standardwebhooks import Webhook

from tests.conftest import MOCK_WEBHOOK_SECRET
from tests.support import flows
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container
from tillpoint.domain.ids import new_id
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
    """`flows.new_payment` at the webhook tests' defaults (10.00 EUR, the amount `mock_event`
    reports): confirmed, a 3-D Secure card waits in REQUIRES_ACTION with its provider id and
    an open provider operation."""
    return await flows.new_payment(
        client,
        "10.00",
        buyer_id="b",
        confirmed=confirm,
        capture_method=capture_method,
        payment_method={"token": token},
    )


async def stored(container: Container, provider_event_id: str) -> list[Any]:
    w = t.webhook_events
    async with container.engine.connect() as conn:
        rows = await conn.execute(sa.select(w).where(w.c.provider_event_id == provider_event_id))
        return list(rows)


async def outbox_rows(container: Container, payment_id: str) -> list[Any]:
    async with container.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.outbox).where(t.outbox.c.aggregate_id == payment_id))
        return list(rows)
