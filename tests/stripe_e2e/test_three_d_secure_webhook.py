"""3-D Secure with Stripe, end to end: confirm → `REQUIRES_ACTION` with the client secret, the
customer authenticates at localstripe, and localstripe's real signed `payment_intent.succeeded`
travels over HTTP to a tillpoint server, through the inbox, to `CAPTURED` — on SQLite and on
PostgreSQL.

The server runs in process (uvicorn on a free port): localstripe reaches it over TCP while the
test runs the webhook processor itself, so nothing moves behind its back.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_KEY, API_KEYS, CUSTOMER_KEY, SERVICE_KEY, headers, settings_for
from tests.security.scan import register_secret
from tests.stripe_e2e.support import (
    THREE_D_SECURE,
    confirm,
    served,
    stripe_payment,
    until,
    webhook_to,
)
from tests.support import flows
from tests.support.clock import MovableClock
from tests.support.localstripe import LocalStripe
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container, build
from tillpoint.config import ApiKey
from tillpoint.service.webhooks import process_due_webhooks

WEBHOOK_SECRET = f"whsec_tillpoint_3ds_{secrets.token_hex(8)}"
OTHER_BUYER = "buyer-2"
OTHER_CUSTOMER_KEY = "test-customer-key-other-0123456789"
register_secret(OTHER_CUSTOMER_KEY, "the other customer's API key")


@pytest.fixture
async def container(
    database_url: str, clock: MovableClock, clean_localstripe: LocalStripe
) -> AsyncIterator[Container]:
    keys = [
        *API_KEYS,
        {"key": OTHER_CUSTOMER_KEY, "role": "customer", "subject": OTHER_BUYER},
    ]
    current = build(
        settings_for(
            database_url,
            api_keys=[ApiKey.model_validate(k) for k in keys],
            stripe_api_key=clean_localstripe.api_key,
            stripe_api_base=clean_localstripe.url,
            stripe_webhook_secrets=(WEBHOOK_SECRET,),
        ),
        clock=clock,
    )
    try:
        yield current
    finally:
        await current.aclose()


async def webhook_rows(container: Container, pi_id: str) -> list[dict[str, Any]]:
    w = t.webhook_events
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(w).where(w.c.provider == "stripe", w.c.provider_payment_id == pi_id)
        )
        return [dict(r) for r in rows.mappings()]


async def test_a_three_d_secure_payment_is_captured_through_the_signed_webhook(
    container: Container, clean_localstripe: LocalStripe
) -> None:
    localstripe = clean_localstripe
    assert container.webhooks is not None
    inbox = container.webhooks
    async with (
        served(container) as server,
        webhook_to(localstripe, server.webhook_url, WEBHOOK_SECRET),
    ):
        http = server.http
        payment_id = await stripe_payment(http, localstripe, THREE_D_SECURE, "42.00")

        confirmed = await confirm(http, payment_id)

        assert confirmed.status_code == 200, confirmed.text
        body = confirmed.json()
        pi_id = body["provider_payment_id"]
        assert body["status"] == "REQUIRES_ACTION"
        assert body["next_action"]["type"] == "use_stripe_sdk"
        client_secret = body["client_secret"]
        assert client_secret is not None
        assert client_secret.startswith(f"{pi_id}_secret_")
        assert client_secret == (await localstripe.payment_intent(pi_id))["client_secret"]

        # The service and the owning customer may read it.
        as_service = await http.get(f"/api/v1/payments/{payment_id}", headers=headers(SERVICE_KEY))
        as_owner = await http.get(f"/api/v1/payments/{payment_id}", headers=headers(CUSTOMER_KEY))
        as_other = await http.get(
            f"/api/v1/payments/{payment_id}", headers=headers(OTHER_CUSTOMER_KEY)
        )
        assert as_service.json()["client_secret"] == client_secret
        assert as_owner.status_code == 200, as_owner.text
        assert as_owner.json()["client_secret"] == client_secret
        as_admin = await http.get(f"/api/v1/payments/{payment_id}", headers=headers(ADMIN_KEY))
        assert as_admin.status_code == 200, as_admin.text
        assert as_admin.json()["client_secret"] is None  # admin may read it, not its secret
        assert "_secret_" not in as_admin.text
        # Another buyer's payment does not exist for this customer, its secret even less.
        assert as_other.status_code == 404, as_other.text
        assert "_secret_" not in as_other.text

        await localstripe.authenticate(pi_id, client_secret, success=True)

        async def settled() -> dict[str, Any] | None:
            await process_due_webhooks(deps=container.deps, inbox=inbox)
            rows = await webhook_rows(container, pi_id)
            done = [r for r in rows if r["status"] != "RECEIVED" and r["processed_at"]]
            return done[0] if done else None

        row = await until(settled, "localstripe's payment_intent.succeeded was never processed")

        state = await flows.payment(http, payment_id)
        events = await flows.event_types(http, payment_id)

    assert state["status"] == "CAPTURED", state
    assert state["captured_amount"] == "42.00"
    assert state["client_secret"] is None  # no customer step left
    assert "WEBHOOK_RECEIVED" in events
    assert events.count("CAPTURE_SUCCEEDED") == 1, events
    assert (row["event_type"], row["signature_valid"], row["status"]) == (
        "payment_intent.succeeded",
        True,
        "PROCESSED",
    )
    stored = bytes(row["body"]).decode()
    assert json.loads(stored)["data"]["object"]["id"] == pi_id
    assert "_secret_" not in stored
    assert client_secret not in stored
    assert WEBHOOK_SECRET not in json.dumps(row["headers"])
    pi = await localstripe.payment_intent(pi_id)
    assert pi["status"] == "succeeded"
