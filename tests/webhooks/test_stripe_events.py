"""Stripe's events, from the recorded fixtures in tests/fixtures/stripe/, signed as Stripe signs
them and delivered over HTTP to `POST /api/v1/webhooks/stripe`; the inbox processes them and the
payment or refund ends where Stripe says it is.

The payments are `provider: "stripe"` payments (the inbox finds a payment by its provider and
the provider's id), made through the API with `FakeStripe` standing in for the API adapter: what
is under test is what Stripe's *events* do to our records. The adapter's calls are tested
against localstripe by the conformance suite.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import stripe

from tests.conftest import ADMIN_KEY, MOCK_WEBHOOK_SECRET, SERVICE_KEY, headers, new_key
from tests.conftest import settings_for as base_settings
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.webhooks.support import process, stored
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.providers import ProviderRegistry
from tillpoint.adapters.webhooks.setup import webhook_verifiers
from tillpoint.adapters.webhooks.stripe import HANDLED_TYPES, StripeVerifier
from tillpoint.bootstrap import Container, build
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, ProviderStatus
from tillpoint.service.ports import (
    AuthorizeRequest,
    Capabilities,
    Lookup,
    MalformedEvent,
    ProviderError,
    ProviderPayment,
    ProviderTimeout,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "stripe"
ROTATED_OUT = "whsec_stripehooks_old_0123456789abcdef"
CURRENT = "whsec_stripehooks_new_fedcba9876543210"
P = ProviderStatus


# -- a stand-in for the Stripe API adapter ---------------------------------------------------


@dataclass
class FakeStripe:
    """Answers our calls as Stripe's API would answer them (a `pi_…` id, the status it is
    told to give), so the events can take the payment from there."""

    name: str = "stripe"
    capabilities: Capabilities = field(
        default_factory=lambda: Capabilities(True, True, True, True, True, True)
    )
    answer: ProviderStatus = P.PROCESSING
    refund_answer: ProviderStatus | Exception = P.PROCESSING
    refund_keys: list[str] = field(default_factory=list)  # what our adapter puts in metadata

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        action = {"type": "use_stripe_sdk"} if self.answer is P.REQUIRES_ACTION else None
        return Outcome(
            status=self.answer,
            provider_payment_id="pi_" + secrets.token_hex(12),
            amount_minor=req.amount.minor,
            currency=req.amount.currency,
            next_action=action,
        )

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        raise ProviderError("not used by these tests")

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        raise ProviderError("not used by these tests")

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        self.refund_keys.append(idempotency_key)
        if isinstance(self.refund_answer, Exception):
            raise self.refund_answer
        return Outcome(
            status=self.refund_answer,
            provider_payment_id=provider_payment_id,
            amount_minor=amount.minor,
            currency=amount.currency,
        )

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        return None

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        return None

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        nothing: tuple[ProviderPayment, ...] = ()
        for view in nothing:
            yield view

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        return None

    def available(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


@dataclass
class World:
    client: httpx.AsyncClient
    container: Container
    stripe: FakeStripe


@pytest.fixture
async def world(database_url: str, clock: MovableClock) -> AsyncIterator[World]:
    settings = base_settings(database_url, stripe_webhook_secrets=f"{ROTATED_OUT}, {CURRENT}")
    container = build(settings, clock=clock)
    fake = FakeStripe()
    container.deps = dataclasses.replace(
        container.deps, providers=ProviderRegistry({"mock": container.mock, "stripe": fake})
    )
    try:
        async with asgi_client(container) as http:
            yield World(http, container, fake)
    finally:
        await container.aclose()


# -- fixtures, signed and delivered ------------------------------------------------------------


def fixture(event_type: str, **ids: str) -> bytes:
    """The recorded event with fresh ids: a new `evt_…` always, and the PaymentIntent, refund,
    dispute and metadata key given (`pi=`, `re=`, `du=`, `key=`); the body stays the fixture's
    bytes."""
    text = (FIXTURES / f"{event_type}.json").read_text()
    subs = {
        '"evt_FIXTURE"': f'"evt_{secrets.token_hex(12)}"',
        '"pi_FIXTURE_secret_FIXTURE"': f'"{ids.get("pi", "pi_x")}_secret_{secrets.token_hex(8)}"',
        '"pi_FIXTURE"': f'"{ids.get("pi", "pi_FIXTURE")}"',
        '"re_FIXTURE"': f'"{ids.get("re", "re_" + secrets.token_hex(12))}"',
        '"du_FIXTURE"': f'"{ids.get("du", "du_" + secrets.token_hex(12))}"',
        '"FIXTURE_IDEMPOTENCY_KEY"': json.dumps(ids.get("key", "FIXTURE_IDEMPOTENCY_KEY")),
    }
    for old, new in subs.items():
        text = text.replace(old, new)
    return text.encode()


def edited(body: bytes, change: Any) -> bytes:
    """The fixture after `change(event)` edited its parsed form."""
    event = json.loads(body)
    change(event)
    return json.dumps(event).encode()


def event_id(body: bytes) -> str:
    value: str = json.loads(body)["id"]
    return value


def signed(body: bytes, secret: str = CURRENT) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, int(time.time())
    )
    return {"Stripe-Signature": header, "content-type": "application/json"}


async def deliver(w: World, body: bytes, secret: str = CURRENT) -> httpx.Response:
    got = await w.client.post("/api/v1/webhooks/stripe", content=body, headers=signed(body, secret))
    assert got.status_code == 200, got.text
    return got


async def delivered(w: World, body: bytes) -> str:
    """Delivered and processed; returns the inbox row's final status."""
    await deliver(w, body)
    await process(w.container)  # other tests' events may be due too: the count says nothing
    (row,) = await stored(w.container, event_id(body))
    assert row.attempt_count == 1, row.last_error
    status: str = row.status
    return status


async def stripe_payment(
    w: World, answer: ProviderStatus, capture_method: str = "automatic"
) -> dict[str, Any]:
    """A confirmed 10.00 EUR Stripe payment, Stripe having answered `answer`."""
    w.stripe.answer = answer
    return await flows.new_payment(
        w.client,
        "10.00",
        buyer_id="b",
        provider="stripe",
        capture_method=capture_method,
        token="pm_card_visa",
    )


async def events_of(w: World, payment_id: str) -> list[dict[str, Any]]:
    got = await w.client.get(f"/api/v1/payments/{payment_id}/events", headers=headers(SERVICE_KEY))
    assert got.status_code == 200, got.text
    data: list[dict[str, Any]] = got.json()["data"]
    return data


async def refund_rows(w: World, payment_id: str) -> list[Any]:
    async with w.container.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.refunds).where(t.refunds.c.payment_id == payment_id))
        return list(rows)


async def refund(w: World, payment_id: str, amount: str, expected: int = 201) -> None:
    got = await w.client.post(
        f"/api/v1/payments/{payment_id}/refund",
        json={"amount": amount},
        headers=headers(ADMIN_KEY, new_key()),
    )
    assert got.status_code == expected, got.text


# -- PaymentIntent events ----------------------------------------------------------------------


class TestPaymentIntentEvents:
    @pytest.mark.parametrize(
        ("event_type", "answer", "capture_method", "expected"),
        [
            ("payment_intent.succeeded", P.PROCESSING, "automatic", "CAPTURED"),
            ("payment_intent.payment_failed", P.PROCESSING, "automatic", "FAILED"),
            ("payment_intent.processing", P.REQUIRES_ACTION, "automatic", "PROCESSING"),
            ("payment_intent.requires_action", P.PROCESSING, "automatic", "REQUIRES_ACTION"),
            ("payment_intent.amount_capturable_updated", P.PROCESSING, "manual", "AUTHORIZED"),
            ("payment_intent.canceled", P.AUTHORIZED, "manual", "CANCELED"),
        ],
    )
    async def test_each_moves_the_payment_once(
        self,
        world: World,
        event_type: str,
        answer: ProviderStatus,
        capture_method: str,
        expected: str,
    ) -> None:
        pay = await stripe_payment(world, answer, capture_method)
        body = fixture(event_type, pi=pay["provider_payment_id"])
        assert await delivered(world, body) == "PROCESSED"

        again = await deliver(world, body)  # Stripe delivers it again: stored once, applied once
        assert again.json()["duplicate"] is True
        await process(world.container)
        (row,) = await stored(world.container, event_id(body))
        assert (row.status, row.attempt_count) == ("PROCESSED", 1)
        got = await flows.payment(world.client, pay["payment_id"])
        assert got["status"] == expected
        events = await events_of(world, pay["payment_id"])
        received = [e for e in events if e["event_type"] == "WEBHOOK_RECEIVED"]
        assert [e["payload"]["provider_event_type"] for e in received] == [event_type]
        if expected == "CAPTURED":
            assert got["captured_amount"] == "10.00"
            assert (await flows.order(world.client, pay["order_id"]))["status"] == "PAID"
        if expected == "AUTHORIZED":
            assert got["authorized_amount"] == "10.00"
        if expected == "FAILED":  # card_declined + decline_code insufficient_funds
            assert got["failure_code"] == "insufficient_funds"
            assert got["failure_message"] == "Your card has insufficient funds."
        if expected == "REQUIRES_ACTION":  # never Stripe's blob, which embeds a client secret
            assert got["next_action"] == {"type": "use_stripe_sdk"}

    async def test_the_client_secret_stripe_sends_is_never_stored(self, world: World) -> None:
        pay = await stripe_payment(world, P.PROCESSING)
        body = fixture("payment_intent.requires_action", pi=pay["provider_payment_id"])
        secret = json.loads(body)["data"]["object"]["client_secret"]
        assert "_secret_" in secret
        assert await delivered(world, body) == "PROCESSED"
        (row,) = await stored(world.container, event_id(body))
        kept = bytes(row.body)
        assert secret.encode() not in kept
        assert b"src_client_secret_" not in kept  # the one inside next_action's blob too
        assert json.loads(kept)["data"]["object"]["client_secret"] == "[REDACTED]"
        events = json.dumps(await events_of(world, pay["payment_id"]))
        assert "_secret_" not in events

    async def test_an_event_about_the_mocks_payment_is_not_applied_to_it(
        self, world: World
    ) -> None:
        """The inbox looks a payment up by provider *and* id: Stripe cannot move a mock one."""
        pay = await flows.new_payment(world.client, "10.00", buyer_id="b", token="pm_card_visa")
        assert pay["status"] == "CAPTURED"
        body = fixture("payment_intent.canceled", pi=pay["provider_payment_id"])
        await deliver(world, body)
        await process(world.container)
        (row,) = await stored(world.container, event_id(body))
        assert row.status == "FAILED"
        assert "PaymentNotKnownYet" in row.last_error
        assert (await flows.payment(world.client, pay["payment_id"]))["status"] == "CAPTURED"


# -- refund events -------------------------------------------------------------------------


async def refunded_payment(
    w: World, answer: ProviderStatus | Exception, expected: int = 201
) -> tuple[dict[str, Any], str]:
    """A captured 10.00 Stripe payment with a 4.00 refund Stripe answered `answer` to;
    returns the payment and the idempotency key the refund was sent with."""
    pay = await stripe_payment(w, P.CAPTURED)
    assert pay["status"] == "CAPTURED"
    w.stripe.refund_answer = answer
    await refund(w, pay["payment_id"], "4.00", expected)
    key = w.stripe.refund_keys[-1]
    (row,) = await refund_rows(w, pay["payment_id"])
    assert (row.status, row.provider_refund_id) == ("PENDING", None)
    return pay, key


class TestRefundEvents:
    async def test_a_refund_whose_call_timed_out_is_found_by_the_key_in_its_metadata(
        self, world: World
    ) -> None:
        pay, key = await refunded_payment(world, ProviderTimeout("slow"), expected=504)
        pi, re = pay["provider_payment_id"], "re_" + secrets.token_hex(12)

        created = fixture("refund.created", pi=pi, re=re, key=key)  # pending: nothing settles
        assert await delivered(world, created) == "IGNORED"
        (row,) = await refund_rows(world, pay["payment_id"])
        assert row.status == "PENDING"

        updated = fixture("refund.updated", pi=pi, re=re, key=key)  # succeeded
        assert await delivered(world, updated) == "PROCESSED"
        (row,) = await refund_rows(world, pay["payment_id"])
        assert (row.status, row.provider_refund_id) == ("SUCCEEDED", re)
        got = await flows.payment(world.client, pay["payment_id"])
        assert (got["status"], got["refunded_amount"]) == ("PARTIALLY_REFUNDED", "4.00")

        # The same refund again, now found by its Stripe id: settled already, changes nothing.
        repeat = fixture("charge.refund.updated", pi=pi, re=re, key=key)
        assert await delivered(world, repeat) == "IGNORED"
        got = await flows.payment(world.client, pay["payment_id"])
        assert got["refunded_amount"] == "4.00"
        types = [e["event_type"] for e in await events_of(world, pay["payment_id"])]
        assert types.count("REFUND_SUCCEEDED") == 1
        assert "STALE_SIGNAL_IGNORED" in types

    async def test_charge_refunded_settles_the_newest_refund_it_lists(self, world: World) -> None:
        pay, key = await refunded_payment(world, P.PROCESSING)  # Stripe: `pending`
        pi, re = pay["provider_payment_id"], "re_" + secrets.token_hex(12)
        assert await delivered(world, fixture("charge.refunded", pi=pi, re=re, key=key)) == (
            "PROCESSED"
        )
        (row,) = await refund_rows(world, pay["payment_id"])
        assert (row.status, row.provider_refund_id) == ("SUCCEEDED", re)
        got = await flows.payment(world.client, pay["payment_id"])
        assert (got["status"], got["refunded_amount"]) == ("PARTIALLY_REFUNDED", "4.00")

    async def test_a_failed_refund_is_failed_and_its_amount_refundable_again(
        self, world: World
    ) -> None:
        pay, key = await refunded_payment(world, P.PROCESSING)
        body = fixture("refund.failed", pi=pay["provider_payment_id"], key=key)
        assert await delivered(world, body) == "PROCESSED"
        (row,) = await refund_rows(world, pay["payment_id"])
        assert row.status == "FAILED"
        got = await flows.payment(world.client, pay["payment_id"])
        assert (got["status"], got["refunded_amount"]) == ("CAPTURED", "0.00")
        (failed,) = [
            e
            for e in await events_of(world, pay["payment_id"])
            if e["event_type"] == "REFUND_FAILED"
        ]
        assert failed["payload"]["failure_code"] == "expired_or_canceled_card"
        await refund(world, pay["payment_id"], "10.00")  # the 4.00 is refundable again

    async def test_a_refund_made_in_stripes_dashboard_is_recorded_and_ignored(
        self, world: World
    ) -> None:
        pay = await stripe_payment(world, P.CAPTURED)
        body = edited(
            fixture("refund.updated", pi=pay["provider_payment_id"]),
            lambda e: e["data"]["object"].update(metadata={}),
        )
        assert await delivered(world, body) == "IGNORED"
        got = await flows.payment(world.client, pay["payment_id"])
        assert (got["status"], got["refunded_amount"]) == ("CAPTURED", "0.00")
        assert await refund_rows(world, pay["payment_id"]) == []
        types = [e["event_type"] for e in await events_of(world, pay["payment_id"])]
        assert "STALE_SIGNAL_IGNORED" in types

    async def test_a_key_that_names_none_of_our_refunds_settles_nothing(self, world: World) -> None:
        pay, _ = await refunded_payment(world, P.PROCESSING)
        body = fixture("refund.updated", pi=pay["provider_payment_id"], key="pay_x:refund:9")
        assert await delivered(world, body) == "IGNORED"
        (row,) = await refund_rows(world, pay["payment_id"])
        assert row.status == "PENDING"  # same amount, but another refund: not settled by guess


# -- dispute events ----------------------------------------------------------------------------


async def outbox_bodies(w: World, payment_id: str, routing_key: str) -> list[dict[str, Any]]:
    o = t.outbox
    async with w.container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(o.c.body)
            .where(o.c.aggregate_id == payment_id, o.c.routing_key == routing_key)
            .order_by(o.c.id)
        )
        return [json.loads(body) for (body,) in rows]


async def disputes_of(w: World, payment_id: str) -> list[dict[str, Any]]:
    got = await w.client.get(
        "/api/v1/admin/disputes", params={"payment_id": payment_id}, headers=headers(ADMIN_KEY)
    )
    assert got.status_code == 200, got.text
    data: list[dict[str, Any]] = got.json()["data"]
    return data


def dispute_event(event_type: str, pi: str, du: str, **changes: Any) -> bytes:
    """A dispute fixture about `du` on `pi`, its dispute object's fields changed as given."""
    return edited(fixture(event_type, pi=pi, du=du), lambda e: e["data"]["object"].update(changes))


class TestDisputeEvents:
    async def disputed(self, w: World, **changes: Any) -> tuple[dict[str, Any], str]:
        """A captured 10.00 Stripe payment with the created fixture's dispute opened on it."""
        pay = await stripe_payment(w, P.CAPTURED)
        assert pay["status"] == "CAPTURED"
        du = "du_" + secrets.token_hex(12)
        body = dispute_event("charge.dispute.created", pay["provider_payment_id"], du, **changes)
        assert await delivered(w, body) == "PROCESSED"
        return pay, du

    async def test_a_created_dispute_is_recorded_shown_on_the_payment_and_published(
        self, world: World
    ) -> None:
        pay, du = await self.disputed(world)
        pid = pay["payment_id"]
        got = await flows.payment(world.client, pid)
        assert (got["status"], got["disputed_amount"]) == ("CAPTURED", "10.00")
        (dispute,) = await disputes_of(world, pid)
        assert dispute["dispute_id"].startswith("dsp_")
        assert {k: dispute[k] for k in ("provider", "provider_dispute_id", "amount")} == {
            "provider": "stripe",
            "provider_dispute_id": du,
            "amount": "10.00",
        }
        assert (dispute["currency"], dispute["reason"], dispute["status"]) == (
            "EUR",
            "fraudulent",
            "needs_response",
        )
        assert dispute["evidence_due_by"] == "2025-12-11T23:59:59Z"  # due_by 1765497599
        assert dispute["closed_at"] is None
        (message,) = await outbox_bodies(world, pid, "payment.disputed")
        assert {k: message[k] for k in ("payment_id", "order_id", "dispute_id", "status")} == {
            "payment_id": pid,
            "order_id": pay["order_id"],
            "dispute_id": dispute["dispute_id"],
            "status": "needs_response",
        }
        assert (message["amount"], message["currency"], message["disputed_amount"]) == (
            "10.00",
            "EUR",
            "10.00",
        )
        assert message["provider_dispute_id"] == du
        assert message["evidence_due_by"] == "2025-12-11T23:59:59Z"
        assert message["sequence"] == 2  # after payment.succeeded
        types = [e["event_type"] for e in await events_of(world, pid)]
        assert types.count("DISPUTE_OPENED") == 1

    async def test_a_redelivery_or_another_event_about_the_same_dispute_opens_no_second(
        self, world: World
    ) -> None:
        pay, du = await self.disputed(world)
        pid, pi = pay["payment_id"], pay["provider_payment_id"]
        body = dispute_event("charge.dispute.created", pi, du)
        assert await delivered(world, body) == "IGNORED"  # a new event id, the same facts
        again = await deliver(world, body)
        assert again.json()["duplicate"] is True
        assert len(await disputes_of(world, pid)) == 1
        assert (await flows.payment(world.client, pid))["disputed_amount"] == "10.00"
        assert len(await outbox_bodies(world, pid, "payment.disputed")) == 1

    async def test_updated_moves_it_on_and_a_late_created_is_stale(self, world: World) -> None:
        pay, du = await self.disputed(world)
        pid, pi = pay["payment_id"], pay["provider_payment_id"]
        assert await delivered(world, fixture("charge.dispute.updated", pi=pi, du=du)) == (
            "PROCESSED"
        )
        (dispute,) = await disputes_of(world, pid)
        assert dispute["status"] == "under_review"
        late = dispute_event("charge.dispute.created", pi, du)
        assert await delivered(world, late) == "IGNORED"
        (dispute,) = await disputes_of(world, pid)
        assert dispute["status"] == "under_review"
        events = await events_of(world, pid)
        types = [e["event_type"] for e in events]
        assert types.count("DISPUTE_UPDATED") == 1
        (stale,) = [e for e in events if e["event_type"] == "STALE_SIGNAL_IGNORED"]
        assert stale["payload"]["signal"] == f"dispute_needs_response:{dispute['dispute_id']}"
        assert await outbox_bodies(world, pid, "payment.dispute_closed") == []

    async def test_a_lost_dispute_is_no_longer_refundable(self, world: World) -> None:
        pay, du = await self.disputed(world, amount=400)
        pid, pi = pay["payment_id"], pay["provider_payment_id"]
        closed = dispute_event("charge.dispute.closed", pi, du, amount=400)
        assert await delivered(world, closed) == "PROCESSED"
        (dispute,) = await disputes_of(world, pid)
        assert (dispute["status"], dispute["amount"]) == ("lost", "4.00")
        assert dispute["closed_at"] is not None
        got = await flows.payment(world.client, pid)
        assert (got["status"], got["disputed_amount"], got["refunded_amount"]) == (
            "CAPTURED",
            "4.00",
            "0.00",
        )
        (message,) = await outbox_bodies(world, pid, "payment.dispute_closed")
        assert (message["status"], message["amount"]) == ("lost", "4.00")
        assert (message["disputed_amount"], message["refundable_amount"]) == ("4.00", "6.00")
        over = await world.client.post(
            f"/api/v1/payments/{pid}/refund",
            json={"amount": "6.01"},
            headers=headers(ADMIN_KEY, new_key()),
        )
        assert over.status_code == 409, over.text
        assert over.json()["code"] == "amount_exceeds_refundable"
        world.stripe.refund_answer = P.REFUNDED
        await refund(world, pid, "6.00")  # the rest is
        got = await flows.payment(world.client, pid)
        assert got["refunded_amount"] == "6.00"

    async def test_a_won_dispute_gives_the_amount_back(self, world: World) -> None:
        pay, du = await self.disputed(world)
        pid, pi = pay["payment_id"], pay["provider_payment_id"]
        won = dispute_event("charge.dispute.closed", pi, du, status="won")
        assert await delivered(world, won) == "PROCESSED"
        (dispute,) = await disputes_of(world, pid)
        assert dispute["status"] == "won"
        assert (await flows.payment(world.client, pid))["disputed_amount"] == "0.00"
        (message,) = await outbox_bodies(world, pid, "payment.dispute_closed")
        assert (message["status"], message["refundable_amount"]) == ("won", "10.00")
        lost = dispute_event("charge.dispute.closed", pi, du, status="lost")
        assert await delivered(world, lost) == "IGNORED"  # closed is closed
        assert (await disputes_of(world, pid))[0]["status"] == "won"
        await refund(world, pid, "10.00")

    async def test_closed_before_created_is_one_dispute_that_stays_closed(
        self, world: World
    ) -> None:
        pay = await stripe_payment(world, P.CAPTURED)
        pid, pi, du = pay["payment_id"], pay["provider_payment_id"], "du_" + secrets.token_hex(8)
        assert await delivered(world, fixture("charge.dispute.closed", pi=pi, du=du)) == (
            "PROCESSED"
        )
        assert await delivered(world, fixture("charge.dispute.created", pi=pi, du=du)) == (
            "IGNORED"
        )
        (dispute,) = await disputes_of(world, pid)
        assert dispute["status"] == "lost"
        assert [m["status"] for m in await outbox_bodies(world, pid, "payment.disputed")] == [
            "lost"
        ]
        assert len(await outbox_bodies(world, pid, "payment.dispute_closed")) == 1

    async def test_a_dispute_before_the_capture_is_known_waits_for_it(self, world: World) -> None:
        pay = await stripe_payment(world, P.PROCESSING)
        pi, du = pay["provider_payment_id"], "du_" + secrets.token_hex(8)
        body = fixture("charge.dispute.created", pi=pi, du=du)
        await deliver(world, body)
        await process(world.container)
        (row,) = await stored(world.container, event_id(body))
        assert row.status == "FAILED"  # retried with backoff, not dropped
        assert "no captured money" in row.last_error
        assert await disputes_of(world, pay["payment_id"]) == []


# -- every other type, and the signatures ------------------------------------------------------


class TestInbox:
    async def test_an_unknown_type_is_stored_and_ignored(self, world: World) -> None:
        body = fixture("customer.created")
        await deliver(world, body)
        (row,) = await stored(world.container, event_id(body))
        assert (row.status, row.provider_payment_id) == ("PENDING", None)
        await process(world.container)
        (row,) = await stored(world.container, event_id(body))
        assert (row.status, row.attempt_count) == ("IGNORED", 1)

    async def test_a_fixture_exists_for_every_handled_type(self) -> None:
        recorded = {p.name.removesuffix(".json") for p in FIXTURES.glob("*.json")}
        assert recorded >= HANDLED_TYPES
        assert recorded - HANDLED_TYPES == {"customer.created"}
        for name in recorded:
            event = json.loads((FIXTURES / f"{name}.json").read_text())
            assert (event["object"], event["type"], event["livemode"]) == ("event", name, False)

    @pytest.mark.parametrize("secret", [ROTATED_OUT, CURRENT])
    async def test_either_secret_of_a_rotation_is_accepted(self, world: World, secret: str) -> None:
        body = fixture("customer.created")
        await deliver(world, body, secret)
        assert len(await stored(world.container, event_id(body))) == 1

    async def test_a_signature_by_another_secret_is_401_and_nothing_is_stored(
        self, world: World
    ) -> None:
        body = fixture("customer.created")
        hdrs = signed(body, "whsec_stripehooks_someone_else")
        got = await world.client.post("/api/v1/webhooks/stripe", content=body, headers=hdrs)
        assert got.status_code == 401, got.text
        assert got.json()["code"] == "invalid_signature"
        assert await stored(world.container, event_id(body)) == []

    def test_the_verifier_exists_with_any_secret_setting(self, tmp_path: Path) -> None:
        url = f"sqlite+aiosqlite:///{tmp_path}/x.db"
        for setting in (
            {"stripe_webhook_secrets": f"{ROTATED_OUT},{CURRENT}"},
            {"stripe_webhook_secret": CURRENT},
            {"stripe_webhook_secrets": ROTATED_OUT, "stripe_webhook_secret": CURRENT},
        ):
            verifiers = webhook_verifiers(base_settings(url, **setting), MOCK_WEBHOOK_SECRET)
            assert "stripe" in verifiers, setting
        none = webhook_verifiers(
            base_settings(url, stripe_webhook_secrets=" , "), MOCK_WEBHOOK_SECRET
        )
        assert "stripe" not in none


# -- what the adapter reads from Stripe's objects ----------------------------------------------


class TestParsing:
    def parse(self, body: bytes) -> Any:
        return StripeVerifier(CURRENT).parse(body).signal

    @pytest.mark.parametrize(
        ("url", "kept"),
        [
            ("https://bank.example/3ds?session=abc", True),
            ("https://hooks.stripe.com/3d_secure_2/hosted?payment_intent_client_secret=x", False),
        ],
    )
    def test_a_redirect_keeps_its_url_unless_it_carries_a_secret(
        self, url: str, kept: bool
    ) -> None:
        action = {"type": "redirect_to_url", "redirect_to_url": {"url": url, "return_url": "r"}}
        body = edited(
            fixture("payment_intent.requires_action"),
            lambda e: e["data"]["object"].update(next_action=action),
        )
        # A URL that carries a secret is never passed on: Stripe.js finishes the step.
        expected = (
            {"type": "redirect_to_url", "redirect_url": url} if kept else {"type": "use_stripe_sdk"}
        )
        assert self.parse(body).next_action == expected

    def test_a_charge_that_lists_no_refunds_says_nothing(self) -> None:
        body = edited(fixture("charge.refunded"), lambda e: e["data"]["object"].pop("refunds"))
        assert self.parse(body) is None

    def test_charge_refunded_reads_the_newest_refund(self) -> None:
        def two(event: dict[str, Any]) -> None:
            (only,) = event["data"]["object"]["refunds"]["data"]
            older = {**only, "id": "re_older", "created": only["created"] - 100}
            event["data"]["object"]["refunds"]["data"] = [older, {**only, "id": "re_newer"}]

        signal = self.parse(edited(fixture("charge.refunded", pi="pi_1"), two))
        assert (signal.kind, signal.provider_refund_id) == (P.REFUNDED, "re_newer")
        assert signal.amount == Money(400, "EUR")

    @pytest.mark.parametrize(
        ("status", "kind"),
        [
            ("pending", P.PROCESSING),
            ("requires_action", P.PROCESSING),
            ("succeeded", P.REFUNDED),
            ("failed", P.FAILED),
            ("canceled", P.FAILED),
        ],
    )
    def test_a_refunds_status(self, status: str, kind: ProviderStatus) -> None:
        body = edited(
            fixture("refund.updated", pi="pi_1", re="re_1", key="k"),
            lambda e: e["data"]["object"].update(status=status),
        )
        signal = self.parse(body)
        assert (signal.kind, signal.provider_payment_id) == (kind, "pi_1")
        assert (signal.provider_refund_id, signal.idempotency_key) == ("re_1", "k")
        assert signal.about_refund
        assert signal.failure_code == (status if kind is P.FAILED else None)

    @pytest.mark.parametrize(
        ("stripe_status", "ours"),
        [
            ("warning_needs_response", "needs_response"),
            ("needs_response", "needs_response"),
            ("warning_under_review", "under_review"),
            ("under_review", "under_review"),
            ("warning_closed", "won"),
            ("charge_refunded", "won"),
            ("prevented", "won"),
            ("won", "won"),
            ("lost", "lost"),
        ],
    )
    def test_a_disputes_status(self, stripe_status: str, ours: str) -> None:
        body = edited(
            fixture("charge.dispute.updated", pi="pi_1", du="du_1"),
            lambda e: e["data"]["object"].update(status=stripe_status),
        )
        signal = self.parse(body)
        assert (signal.kind, signal.provider_payment_id) == (P.DISPUTED, "pi_1")
        assert signal.amount == Money(1000, "EUR")
        assert (signal.dispute.reference, signal.dispute.status) == ("du_1", ours)
        assert signal.dispute.reason == "fraudulent"

    def test_a_dispute_found_through_its_expanded_charge(self) -> None:
        def expand(event: dict[str, Any]) -> None:
            dispute = event["data"]["object"]
            dispute["charge"] = {"id": "ch_1", "payment_intent": dispute.pop("payment_intent")}
            dispute["evidence_details"]["due_by"] = 0  # no evidence taken

        signal = self.parse(edited(fixture("charge.dispute.created", pi="pi_7"), expand))
        assert signal.provider_payment_id == "pi_7"
        assert signal.dispute.evidence_due_by is None

    @pytest.mark.parametrize(
        "change",
        [{"payment_intent": None}, {"status": "escalated"}, {"amount": 0}, {"id": None}],
    )
    def test_a_dispute_we_cannot_place_is_malformed(self, change: dict[str, Any]) -> None:
        body = edited(
            fixture("charge.dispute.created"), lambda e: e["data"]["object"].update(change)
        )
        with pytest.raises(MalformedEvent):
            self.parse(body)

    def test_a_refund_of_no_payment_intent_is_none_of_ours(self) -> None:
        body = edited(
            fixture("refund.updated"), lambda e: e["data"]["object"].update(payment_intent=None)
        )
        assert self.parse(body) is None
