"""One behavioural suite for every provider adapter, through our HTTP API.

Each test runs against the mock gateway and against Stripe's adapter talking to localstripe (a
stateful fake Stripe server started by the suite), on SQLite and on PostgreSQL. It checks what
a shop relies on whatever the provider: the money that reaches the provider is the money we
record, refusals happen before any provider call, a retried call never acts twice, an unknown
outcome is resolved by asking the provider, and declines speak our codes. A test that needs a
capability the adapter does not declare is skipped, naming it (the capability matrix is in
docs/providers.md).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conformance.harness import Card, Harness
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.support import flows
from tillpoint.bootstrap import Container
from tillpoint.domain.money import Money
from tillpoint.domain.payment import ProviderStatus
from tillpoint.service.janitor import resolve_open_operations


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


@pytest.fixture
def shop(client: httpx.AsyncClient, harness: Harness, container: Container) -> Shop:
    return Shop(client, harness, container)


async def test_a_sale_is_captured_at_the_provider(shop: Shop, harness: Harness) -> None:
    payment = await shop.confirmed("100.00")

    assert payment["provider"] == harness.name
    assert payment["provider_payment_id"].startswith(harness.prefix)
    assert payment["captured_amount"] == "100.00"
    side = await harness.side(shop.container, payment["provider_payment_id"])
    assert side.captured_minor == 10_000


async def test_a_partial_capture_takes_that_amount_at_the_provider(
    shop: Shop, harness: Harness
) -> None:
    shop.needs("manual_capture")
    shop.needs("partial_capture")
    held = await shop.confirmed("100.00", manual=True)
    assert (await harness.side(shop.container, held["provider_payment_id"])).captured_minor == 0

    response = await shop.capture(held["payment_id"], "60.00")

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["captured_amount"]) == ("CAPTURED", "60.00")
    side = await harness.side(shop.container, held["provider_payment_id"])
    assert side.captured_minor == 6_000


async def test_a_second_capture_is_refused_and_never_sent(shop: Shop) -> None:
    shop.needs("manual_capture")
    held = await shop.confirmed("100.00", manual=True)
    assert (await shop.capture(held["payment_id"], "40.00")).status_code == 200

    again = await shop.capture(held["payment_id"], "10.00")

    assert again.status_code == 409, again.text
    assert again.json()["code"] == "invalid_state_transition"
    assert len(await shop.calls(held["payment_id"], "capture")) == 1


async def test_a_void_releases_the_hold(shop: Shop, harness: Harness) -> None:
    shop.needs("cancel_after_authorization")
    held = await shop.confirmed("100.00", manual=True)

    response = await shop.post(f"/api/v1/payments/{held['payment_id']}/void", {})

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "CANCELED"
    side = await harness.side(shop.container, held["provider_payment_id"])
    assert (side.canceled, side.captured_minor) == (True, 0)


async def test_two_partial_refunds_reach_the_provider(shop: Shop, harness: Harness) -> None:
    shop.needs("multiple_partial_refunds")
    payment = await shop.confirmed("100.00")

    first = await shop.refund(payment["payment_id"], "30.00")
    second = await shop.refund(payment["payment_id"], "20.00")

    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert [first.json()["status"], second.json()["status"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert first.json()["provider_refund_id"] != second.json()["provider_refund_id"]
    state = await flows.payment(shop.http, payment["payment_id"])
    assert (state["status"], state["refunded_amount"]) == ("PARTIALLY_REFUNDED", "50.00")
    side = await harness.side(shop.container, payment["provider_payment_id"])
    assert side.refunds == [2_000, 3_000]


async def test_an_over_refund_is_refused_before_any_provider_call(
    shop: Shop, harness: Harness
) -> None:
    payment = await shop.confirmed("100.00")
    assert (await shop.refund(payment["payment_id"], "70.00")).status_code == 201

    over = await shop.refund(payment["payment_id"], "30.01")

    assert over.status_code == 409, over.text
    assert over.json()["code"] == "amount_exceeds_refundable"
    assert len(await shop.calls(payment["payment_id"], "refund")) == 1
    side = await harness.side(shop.container, payment["provider_payment_id"])
    assert side.refunds == [7_000]


async def test_a_retried_call_with_the_same_key_returns_the_same_provider_object(
    shop: Shop, harness: Harness
) -> None:
    payment = await shop.confirmed("100.00")
    provider = shop.container.deps.providers[harness.name]
    amount = Money(1_000, harness.currency)
    key = f"{payment['payment_id']}:refund:retried"

    first = await provider.refund(payment["provider_payment_id"], amount, idempotency_key=key)
    again = await provider.refund(payment["provider_payment_id"], amount, idempotency_key=key)

    assert first.status is ProviderStatus.REFUNDED
    assert first.reference is not None
    assert again.reference == first.reference
    side = await harness.side(shop.container, payment["provider_payment_id"])
    assert side.refunds == [1_000]


async def test_an_unknown_outcome_is_resolved_by_asking_the_provider(
    shop: Shop, harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capture reaches the provider and acts, but its answer is lost: we answer 504
    `provider_timeout` and keep the operation open; the janitor asks the provider
    (`get_transaction`) and records what it did. Nothing is captured twice."""
    shop.needs("manual_capture")
    held = await shop.confirmed("100.00", manual=True)

    with harness.losing_the_answer(shop.container, monkeypatch, "capture"):
        lost = await shop.capture(held["payment_id"], "60.00")

    assert lost.status_code == 504, lost.text
    assert lost.json()["code"] == "provider_timeout"
    assert (await flows.payment(shop.http, held["payment_id"]))["status"] == "AUTHORIZED"

    checked = await resolve_open_operations(deps=shop.container.deps, everything=True)

    assert checked >= 1  # ours, and any open operation other tests left in the shared database
    state = await flows.payment(shop.http, held["payment_id"])
    assert (state["status"], state["captured_amount"]) == ("CAPTURED", "60.00")
    side = await harness.side(shop.container, held["provider_payment_id"])
    assert side.captured_minor == 6_000
    assert len(await shop.calls(held["payment_id"], "capture")) == 1


async def test_a_decline_answers_the_documented_code(shop: Shop) -> None:
    payment_id = await shop.payment("100.00", card="decline")

    response = await shop.confirm(payment_id)

    assert response.status_code == 402, response.text
    assert response.json()["code"] == "card_declined"
    state = await flows.payment(shop.http, payment_id)
    assert (state["status"], state["failure_code"]) == ("FAILED", "card_declined")


async def test_a_customer_step_waits_in_requires_action(shop: Shop, harness: Harness) -> None:
    shop.needs("three_d_secure")
    payment_id = await shop.payment("100.00", card="three_d_secure")

    response = await shop.confirm(payment_id)

    assert response.status_code == 200, response.text
    payment = response.json()
    assert payment["status"] == "REQUIRES_ACTION"
    assert payment["next_action"]["type"]
    if harness.name == "stripe":  # the storefront finishes it with Stripe.js
        secret = payment["client_secret"]
        assert secret.startswith(payment["provider_payment_id"] + "_secret_")
        [asked] = await shop.calls(payment_id, "client_secret")  # audited, the secret redacted
        assert secret not in str(asked)
    else:
        assert payment["client_secret"] is None
