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

from datetime import datetime, timedelta

import pytest

from tests.conformance.harness import Harness
from tests.conformance.shop import Shop
from tests.support import flows
from tillpoint.domain.money import Money
from tillpoint.domain.payment import ProviderStatus
from tillpoint.service.janitor import resolve_open_operations
from tillpoint.service.ports import ProviderPayment


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


# -- the provider's whole view (`payment`, `payments`), for reconciliation ----------------------


async def view_of(shop: Shop, provider_payment_id: str) -> ProviderPayment:
    """The provider's view, asked through the resilient layer as reconciliation asks it."""
    found = await shop.container.deps.providers[shop.harness.name].payment(provider_payment_id)
    assert found is not None, f"{shop.harness.name} has no payment {provider_payment_id}"
    return found


async def listed(shop: Shop, start: datetime, end: datetime) -> dict[str, ProviderPayment]:
    provider = shop.container.deps.providers[shop.harness.name]
    return {v.provider_payment_id: v async for v in provider.payments(start, end)}


async def test_the_view_of_a_sale_is_captured_with_its_amounts_and_our_id(shop: Shop) -> None:
    payment = await shop.confirmed("100.00")

    view = await view_of(shop, payment["provider_payment_id"])

    assert view.status is ProviderStatus.CAPTURED
    assert (view.currency, view.amount_minor) == (shop.harness.currency, 10_000)
    assert (view.authorized_minor, view.captured_minor, view.refunded_minor) == (0, 10_000, 0)
    assert view.payment_id == payment["payment_id"]
    assert (view.refunds, view.disputes) == ((), ())
    [audited] = await shop.calls(payment["payment_id"], "payment")
    assert audited["outcome"] == "CAPTURED"


async def test_the_view_of_a_payment_the_provider_never_made_is_none(shop: Shop) -> None:
    provider = shop.container.deps.providers[shop.harness.name]
    assert await provider.payment(f"{shop.harness.prefix}doesnotexist0000") is None


async def test_the_view_of_a_held_payment_is_authorized(shop: Shop) -> None:
    shop.needs("manual_capture")
    held = await shop.confirmed("100.00", manual=True)

    view = await view_of(shop, held["provider_payment_id"])

    assert view.status is ProviderStatus.AUTHORIZED
    assert (view.authorized_minor, view.captured_minor) == (10_000, 0)


async def test_our_partial_refund_carries_our_provider_key(shop: Shop) -> None:
    payment = await shop.confirmed("100.00")
    assert (await shop.refund(payment["payment_id"], "30.00")).status_code == 201
    [call] = await shop.calls(payment["payment_id"], "refund")

    view = await view_of(shop, payment["provider_payment_id"])

    assert view.status is ProviderStatus.CAPTURED  # partly refunded
    assert (view.captured_minor, view.refunded_minor) == (10_000, 3_000)
    [refund] = view.refunds
    assert (refund.amount_minor, refund.status) == (3_000, ProviderStatus.REFUNDED)
    assert refund.idempotency_key == call["idempotency_key"]
    assert str(call["idempotency_key"]).startswith(f"{payment['payment_id']}:refund:")


async def test_a_refund_made_at_the_provider_shows_without_a_key(
    shop: Shop, harness: Harness
) -> None:
    payment = await shop.confirmed("100.00")
    assert (await shop.refund(payment["payment_id"], "30.00")).status_code == 201

    await harness.out_of_band(shop.container, payment["provider_payment_id"], "refund", 2_500)

    view = await view_of(shop, payment["provider_payment_id"])
    assert (view.status, view.refunded_minor) == (ProviderStatus.CAPTURED, 5_500)
    keys = sorted((r.amount_minor, r.idempotency_key is None) for r in view.refunds)
    assert keys == [(2_500, True), (3_000, False)]
    ours = await flows.payment(shop.http, payment["payment_id"])
    assert ours["refunded_amount"] == "30.00"  # tillpoint heard nothing

    await harness.out_of_band(shop.container, payment["provider_payment_id"], "refund", 4_500)

    view = await view_of(shop, payment["provider_payment_id"])
    assert (view.status, view.refunded_minor) == (ProviderStatus.REFUNDED, 10_000)


async def test_a_held_payment_captured_at_the_provider(shop: Shop, harness: Harness) -> None:
    shop.needs("manual_capture")
    shop.needs("partial_capture")
    held = await shop.confirmed("100.00", manual=True)

    await harness.out_of_band(shop.container, held["provider_payment_id"], "capture", 6_000)

    view = await view_of(shop, held["provider_payment_id"])
    assert view.status is ProviderStatus.CAPTURED
    assert (view.authorized_minor, view.captured_minor, view.refunded_minor) == (0, 6_000, 0)
    assert view.refunds == ()  # the released rest of the hold is no refund
    assert (await flows.payment(shop.http, held["payment_id"]))["status"] == "AUTHORIZED"


async def test_a_held_payment_canceled_at_the_provider(shop: Shop, harness: Harness) -> None:
    shop.needs("cancel_after_authorization")
    held = await shop.confirmed("100.00", manual=True)

    await harness.out_of_band(shop.container, held["provider_payment_id"], "cancel")

    view = await view_of(shop, held["provider_payment_id"])
    assert view.status is ProviderStatus.CANCELED
    assert (view.authorized_minor, view.captured_minor) == (0, 0)
    assert (await flows.payment(shop.http, held["payment_id"]))["status"] == "AUTHORIZED"


async def test_a_dispute_shows_in_the_view(shop: Shop, harness: Harness) -> None:
    payment = await shop.confirmed("100.00")

    await harness.out_of_band(shop.container, payment["provider_payment_id"], "dispute", 4_000)

    view = await view_of(shop, payment["provider_payment_id"])
    [dispute] = view.disputes
    assert (dispute.amount_minor, dispute.status) == (4_000, "needs_response")
    assert dispute.reason
    assert dispute.evidence_due_by is not None
    assert dispute.evidence_due_by > view.created_at
    assert view.status is ProviderStatus.CAPTURED


async def test_the_listing_of_a_window_holds_payments_made_without_us(
    shop: Shop, harness: Harness
) -> None:
    shop.needs("lists_payments")
    payment = await shop.confirmed("100.00")
    foreign_id = await harness.created_out_of_band(shop.container, 4_200)
    ours, foreign = (
        await view_of(shop, payment["provider_payment_id"]),
        await view_of(shop, foreign_id),
    )
    first = min(ours.created_at, foreign.created_at)
    last = max(ours.created_at, foreign.created_at)

    found = await listed(shop, first, last + timedelta(seconds=1))

    assert found[ours.provider_payment_id].payment_id == payment["payment_id"]
    assert found[foreign_id].payment_id is None
    assert (found[foreign_id].status, found[foreign_id].captured_minor) == (
        ProviderStatus.CAPTURED,
        4_200,
    )


async def test_the_listing_respects_its_window(shop: Shop) -> None:
    shop.needs("lists_payments")
    payment = await shop.confirmed("100.00")
    view = await view_of(shop, payment["provider_payment_id"])
    at = view.created_at

    inside = await listed(shop, at, at + timedelta(seconds=1))
    before = await listed(shop, at - timedelta(hours=1), at)  # the end is not in the window
    after = await listed(shop, at + timedelta(seconds=1), at + timedelta(hours=1))

    assert view.provider_payment_id in inside
    assert view.provider_payment_id not in before
    assert view.provider_payment_id not in after
