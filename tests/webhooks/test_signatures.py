"""Only a valid, fresh signature over the exact bytes gets an event stored."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import stripe
from standardwebhooks import Webhook

from tests.conftest import ADMIN_KEY, MOCK_WEBHOOK_SECRET, headers, settings_for
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.webhooks.support import mock_event, sign_mock, stored
from tillpoint.adapters.telemetry import REGISTRY
from tillpoint.adapters.webhooks.setup import (
    WebhookSecretRefused,
    mock_webhook_secret,
    webhook_verifiers,
)
from tillpoint.adapters.webhooks.stripe import StripeVerifier
from tillpoint.bootstrap import Container, build
from tillpoint.domain.payment import ProviderStatus

STRIPE_SECRET = "whsec_test_stripe_0123456789abcdef"


def _invalid_count(provider: str) -> float:
    value = REGISTRY.get_sample_value(
        "payment_webhook_total", {"provider": provider, "status": "invalid_signature"}
    )
    return value or 0.0


class TestMockSignatures:
    async def test_a_standard_webhooks_signature_is_accepted_and_stored_redacted(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        event = mock_event("payment.captured", "mock_pi_unknown")
        body, hdrs = sign_mock(event)
        got = await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)
        assert got.status_code == 200, got.text
        assert got.json() == {"received": True, "duplicate": False}
        (row,) = await stored(container, event["id"])
        assert bytes(row.body) == body  # the raw bytes, not a re-serialization
        assert row.signature_valid is True
        assert row.status == "PENDING"
        assert row.headers["webhook-signature"] == "[redacted]"
        assert row.headers["webhook-id"] == event["id"]

    @pytest.mark.parametrize(
        "tamper",
        [
            "flipped_byte",
            "reserialized",
            "wrong_secret",
            "six_minutes_old",
            "six_minutes_ahead",
            "no_signature",
            "no_timestamp",
            "no_id",
            "garbage_signature",
        ],
    )
    async def test_anything_else_is_401_and_nothing_is_stored(
        self, client: httpx.AsyncClient, container: Container, tamper: str
    ) -> None:
        event = mock_event("payment.captured", "mock_pi_x")
        skew = {"six_minutes_old": -6, "six_minutes_ahead": 6}.get(tamper, 0)
        secret = (
            "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"
            if tamper == "wrong_secret"
            else MOCK_WEBHOOK_SECRET
        )
        body, hdrs = sign_mock(event, secret=secret, skew=timedelta(minutes=skew))
        if tamper == "flipped_byte":
            body = body.replace(b"10.00", b"10.01")
        if tamper == "reserialized":
            body = json.dumps(json.loads(body), indent=2).encode()
        missing = {"no_signature": "webhook-signature", "no_timestamp": "webhook-timestamp"}
        hdrs.pop(missing.get(tamper, "-"), None)
        if tamper == "no_id":
            hdrs.pop("webhook-id")
        if tamper == "garbage_signature":
            hdrs["webhook-signature"] = "v1"
        before = _invalid_count("mock")
        got = await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)
        assert got.status_code == 401, got.text
        assert got.headers["content-type"].startswith("application/problem+json")
        assert got.json()["code"] == "invalid_signature"
        assert await stored(container, event["id"]) == []
        assert _invalid_count("mock") == before + 1

    async def test_an_unknown_or_unconfigured_provider_is_404(
        self, client: httpx.AsyncClient
    ) -> None:
        for provider in ("nope", "stripe"):  # stripe has no webhook secret here
            got = await client.post(f"/api/v1/webhooks/{provider}", content=b"{}")
            assert got.status_code == 404, got.text
            assert got.json()["code"] == "not_found"


def _stripe_event(event_type: str = "payment_intent.succeeded") -> dict[str, Any]:
    return {
        "id": "evt_" + Path(__file__).stem + event_type.replace(".", "_") + secrets.token_hex(8),
        "object": "event",
        "type": event_type,
        "created": 1_764_000_000,
        "data": {
            "object": {
                "id": "pi_123",
                "object": "payment_intent",
                "amount": 1000,
                "amount_received": 1000,
                "amount_capturable": 0,
                "currency": "eur",
                "status": "succeeded",
            }
        },
    }


@pytest.fixture
async def stripe_client(
    database_url: str, clock: MovableClock
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    container = build(settings_for(database_url, stripe_webhook_secret=STRIPE_SECRET), clock=clock)
    try:
        async with asgi_client(container) as http:
            yield http, container
    finally:
        await container.aclose()


class TestStripeSignatures:
    async def test_a_header_made_like_the_sdk_makes_it_is_accepted(
        self, stripe_client: tuple[httpx.AsyncClient, Container]
    ) -> None:
        client, container = stripe_client
        event = _stripe_event()
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, STRIPE_SECRET)
        got = await client.post(
            "/api/v1/webhooks/stripe", content=payload, headers={"Stripe-Signature": header}
        )
        assert got.status_code == 200, got.text
        (row,) = await stored(container, event["id"])
        assert row.provider_payment_id == "pi_123"
        assert row.headers["stripe-signature"] == "[redacted]"

    @pytest.mark.parametrize(
        "tamper",
        ["flipped_byte", "reserialized", "wrong_secret", "old", "ahead", "missing", "no_v1"],
    )
    async def test_anything_else_is_401_and_nothing_is_stored(
        self, stripe_client: tuple[httpx.AsyncClient, Container], tamper: str
    ) -> None:
        client, container = stripe_client
        event = _stripe_event()
        payload = json.dumps(event)
        now = int(time.time())
        ts = {"old": now - 360, "ahead": now + 360}.get(tamper, now)
        secret = "whsec_other" if tamper == "wrong_secret" else STRIPE_SECRET
        header = stripe.WebhookSignature.generate_signature_header(payload, secret, ts)
        if tamper == "flipped_byte":
            payload = payload.replace('"eur"', '"usd"')
        if tamper == "reserialized":
            payload = json.dumps(json.loads(payload), separators=(",", ":"))
        if tamper == "no_v1":
            header = header.replace("v1=", "v0=")
        hdrs = {} if tamper == "missing" else {"Stripe-Signature": header}
        got = await client.post("/api/v1/webhooks/stripe", content=payload, headers=hdrs)
        assert got.status_code == 401, got.text
        assert got.json()["code"] == "invalid_signature"
        assert await stored(container, event["id"]) == []


class TestStripeEvents:
    @pytest.mark.parametrize(
        ("event_type", "kind"),
        [
            ("payment_intent.succeeded", ProviderStatus.CAPTURED),
            ("payment_intent.payment_failed", ProviderStatus.FAILED),
            ("payment_intent.amount_capturable_updated", ProviderStatus.AUTHORIZED),
            ("payment_intent.canceled", ProviderStatus.CANCELED),
            ("payment_intent.processing", ProviderStatus.PROCESSING),
            ("payment_intent.requires_action", ProviderStatus.REQUIRES_ACTION),
        ],
    )
    def test_payment_intent_events_become_signals(
        self, event_type: str, kind: ProviderStatus
    ) -> None:
        event = _stripe_event(event_type)
        event["data"]["object"]["last_payment_error"] = {
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "message": "no money",
        }
        signal = StripeVerifier(STRIPE_SECRET).parse(json.dumps(event).encode()).signal
        assert signal is not None
        assert (signal.kind, signal.provider_payment_id) == (kind, "pi_123")
        if kind is ProviderStatus.CAPTURED:
            assert signal.amount is not None
            assert (signal.amount.minor, signal.amount.currency) == (1000, "EUR")
        if kind is ProviderStatus.FAILED:
            assert signal.failure_code == "insufficient_funds"

    def test_refunds_and_disputes_become_signals(self) -> None:
        verifier = StripeVerifier(STRIPE_SECRET)
        refunded = {
            "id": "evt_r",
            "type": "charge.refunded",
            "data": {
                "object": {
                    "id": "ch_1",
                    "payment_intent": "pi_9",
                    "currency": "eur",
                    "amount_refunded": 400,
                    "refunds": {"data": [{"id": "re_1", "amount": 400, "status": "succeeded"}]},
                }
            },
        }
        signal = verifier.parse(json.dumps(refunded).encode()).signal
        assert signal is not None
        assert (signal.kind, signal.provider_refund_id) == (ProviderStatus.REFUNDED, "re_1")
        assert signal.amount is not None
        assert signal.amount.minor == 400
        dispute = {
            "id": "evt_d",
            "type": "charge.dispute.created",
            "data": {
                "object": {
                    "id": "dp_1",
                    "payment_intent": "pi_9",
                    "amount": 1000,
                    "currency": "eur",
                    "reason": "fraudulent",
                    "status": "needs_response",
                }
            },
        }
        signal = verifier.parse(json.dumps(dispute).encode()).signal
        assert signal is not None
        assert signal.kind is ProviderStatus.DISPUTED
        assert signal.dispute is not None
        assert (signal.dispute.reference, signal.dispute.status) == ("dp_1", "needs_response")
        other = {"id": "evt_o", "type": "customer.created", "data": {"object": {"id": "cus"}}}
        assert verifier.parse(json.dumps(other).encode()).signal is None


class TestSecrets:
    def test_the_embedded_default_generates_and_keeps_a_secret(self, tmp_path: Path) -> None:
        settings = settings_for(
            f"sqlite+aiosqlite:///{tmp_path}/x.db", state_dir=str(tmp_path / "state")
        ).model_copy(update={"mock_webhook_secret": None})
        first = mock_webhook_secret(settings)
        assert first.startswith("whsec_")
        assert len(Webhook(first)._whsecret) == 24
        assert mock_webhook_secret(settings) == first  # kept across starts
        assert (tmp_path / "state" / "mock-webhook-secret").stat().st_mode & 0o077 == 0

    def test_postgres_without_a_secret_refuses_to_start(self) -> None:
        settings = settings_for("postgresql+asyncpg://u@127.0.0.1/x").model_copy(
            update={"mock_webhook_secret": None}
        )
        with pytest.raises(WebhookSecretRefused):
            mock_webhook_secret(settings)

    def test_an_empty_secret_is_refused(self) -> None:
        url = "postgresql+asyncpg://u@127.0.0.1/x"
        with pytest.raises(WebhookSecretRefused):
            mock_webhook_secret(settings_for(url, mock_webhook_secret=" "))
        with pytest.raises(WebhookSecretRefused):
            webhook_verifiers(settings_for(url, stripe_webhook_secret=""), MOCK_WEBHOOK_SECRET)
        verifiers = webhook_verifiers(settings_for(url), MOCK_WEBHOOK_SECRET)
        assert set(verifiers) == {"mock"}  # stripe only with its secret


async def test_admin_list_needs_admin(client: httpx.AsyncClient) -> None:
    got = await client.get("/api/v1/admin/webhooks/events")
    assert got.status_code == 401
    got = await client.get("/api/v1/admin/webhooks/events", headers=headers(ADMIN_KEY))
    assert got.status_code == 200
