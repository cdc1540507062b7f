"""Reconciliation against each adapter's real other side: the mock through its dashboard, Stripe
through localstripe acted on directly with the Stripe SDK (as its Dashboard would).

Each drift is made at the provider without tillpoint hearing of it, then one run over the
test's own window (`POST /api/v1/payments/reconcile`) must find it with the right kind, heal it
(events, order status, published message) or flag it (nothing changed), and a second run over
the same window finds nothing new.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conformance.harness import Harness
from tests.conformance.shop import Shop
from tests.conftest import ADMIN_KEY, headers, new_key
from tests.support import flows
from tests.support.clock import MovableClock
from tillpoint.adapters.db import tables as t
from tillpoint.bootstrap import Container
from tillpoint.service.reconciliation import DISCREPANCY_HEADER


@pytest.fixture
def clock() -> MovableClock:
    """A clock of this module's own, not moved by other tests: the window is compared with
    the provider's own creation times (localstripe's are the real ones)."""
    return MovableClock()


@pytest.fixture
def since(container: Container) -> datetime:
    """The start of this test's window: the run compares only this test's payments. Read
    from the service's clock (the suite's movable one), which stamps the payments."""
    return container.deps.clock.now()


async def reconcile(shop: Shop, since: datetime) -> dict[str, Any]:
    """One run over [since, now + 1 s) of this adapter; the finished run and its findings."""
    until = shop.container.deps.clock.now() + timedelta(seconds=1)
    window = {
        "provider": shop.harness.name,
        "created_from": since.isoformat(),
        "created_to": until.isoformat(),
    }
    started = await shop.http.post(
        "/api/v1/payments/reconcile", json=window, headers=headers(ADMIN_KEY, new_key())
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    base = f"/api/v1/admin/reconciliation/runs/{run_id}"
    run = await shop.http.get(base, headers=headers(ADMIN_KEY))  # the pass ran after the 202
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "FINISHED", run.json()
    found = await shop.http.get(f"{base}/discrepancies", headers=headers(ADMIN_KEY))
    assert found.status_code == 200, found.text
    return {**run.json(), "discrepancies": found.json()["data"]}


def mine(run: dict[str, Any], ids: set[str]) -> list[dict[str, Any]]:
    """The run's findings about this test's payments (payment or provider payment ids): the
    database is shared, and another test's payment may carry a time inside this window."""
    return [d for d in run["discrepancies"] if {d["payment_id"], d["provider_payment_id"]} & ids]


def kinds(run: dict[str, Any], *payments: dict[str, Any] | str) -> list[tuple[str, str]]:
    ids = {p if isinstance(p, str) else p["payment_id"] for p in payments}
    return sorted((d["kind"], d["action"]) for d in mine(run, ids))


async def routing_keys(container: Container, payment_id: str) -> list[str]:
    o = t.outbox
    async with container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(o.c.routing_key).where(o.c.aggregate_id == payment_id).order_by(o.c.id)
        )
        return [r.routing_key for r in rows]


async def nothing_new(shop: Shop, since: datetime, *payments: dict[str, Any] | str) -> None:
    again = await reconcile(shop, since)
    assert kinds(again, *payments) == []


async def test_a_refund_made_at_the_provider_is_healed(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    payment = await shop.confirmed("100.00")
    await harness.out_of_band(shop.container, payment["provider_payment_id"], "refund", 2_500)

    run = await reconcile(shop, since)

    assert kinds(run, payment) == [("refund_mismatch", "healed")]
    state = await flows.payment(shop.http, payment["payment_id"])
    assert (state["status"], state["refunded_amount"]) == ("PARTIALLY_REFUNDED", "25.00")
    assert (await flows.event_types(shop.http, payment["payment_id"]))[-2:] == [
        "REFUND_SUCCEEDED",
        "RECONCILED",
    ]
    assert (await flows.order(shop.http, payment["order_id"]))["status"] == "PARTIALLY_REFUNDED"
    assert (await routing_keys(shop.container, payment["payment_id"]))[-1] == "payment.refunded"
    [refund] = (await flows.ledger(shop.http, payment["order_id"]))[0]["refunds"]
    assert (refund["amount"], refund["status"]) == ("25.00", "SUCCEEDED")
    await nothing_new(shop, since, payment)


async def test_a_held_payment_captured_at_the_provider_is_healed(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    shop.needs("manual_capture")
    held = await shop.confirmed("100.00", manual=True)
    await harness.out_of_band(shop.container, held["provider_payment_id"], "capture")

    run = await reconcile(shop, since)

    assert kinds(run, held) == [("status_mismatch", "healed")]
    state = await flows.payment(shop.http, held["payment_id"])
    assert (state["status"], state["captured_amount"]) == ("CAPTURED", "100.00")
    assert "CAPTURE_SUCCEEDED" in await flows.event_types(shop.http, held["payment_id"])
    assert (await flows.order(shop.http, held["order_id"]))["status"] == "PAID"
    assert "payment.succeeded" in await routing_keys(shop.container, held["payment_id"])
    await nothing_new(shop, since, held)


async def test_a_held_payment_canceled_at_the_provider_is_healed(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    shop.needs("cancel_after_authorization")
    held = await shop.confirmed("100.00", manual=True)
    await harness.out_of_band(shop.container, held["provider_payment_id"], "cancel")

    run = await reconcile(shop, since)

    assert kinds(run, held) == [("status_mismatch", "healed")]
    assert (await flows.payment(shop.http, held["payment_id"]))["status"] == "CANCELED"
    assert "VOIDED" in await flows.event_types(shop.http, held["payment_id"])
    assert (await routing_keys(shop.container, held["payment_id"]))[-1] == "payment.canceled"
    await nothing_new(shop, since, held)


async def test_a_provider_payment_unknown_to_us_is_flagged(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    foreign = await harness.created_out_of_band(shop.container, 4_200)

    run = await reconcile(shop, since)

    assert kinds(run, foreign) == [("missing_locally", "flagged")]
    [found] = mine(run, {foreign})
    assert found["provider_payment_id"] == foreign
    assert found["payment_id"] is None
    assert found["theirs"]["captured_amount"] == "42.00"
    await nothing_new(shop, since, foreign)

    exported = await shop.http.get(
        f"/api/v1/admin/reconciliation/runs/{run['run_id']}/discrepancies.csv",
        headers=headers(ADMIN_KEY),
    )
    assert exported.status_code == 200, exported.text
    assert exported.headers["content-type"] == "text/csv; charset=utf-8"
    reader = csv.DictReader(io.StringIO(exported.text))
    assert tuple(reader.fieldnames or ()) == DISCREPANCY_HEADER
    rows = list(reader)
    assert [r["discrepancy_id"] for r in rows] == [
        d["discrepancy_id"] for d in run["discrepancies"]
    ]
    [row] = [r for r in rows if r["provider_payment_id"] == foreign]
    assert (row["discrepancy_id"], row["kind"]) == (found["discrepancy_id"], "missing_locally")
    assert json.loads(row["theirs"])["captured_amount"] == "42.00"

    resolved = await shop.http.post(
        f"/api/v1/admin/reconciliation/discrepancies/{found['discrepancy_id']}/resolve",
        json={"note": "another shop's sale on our account"},
        headers=headers(ADMIN_KEY, new_key()),
    )
    assert resolved.status_code == 200, resolved.text
    assert resolved.json()["resolution_note"] == "another shop's sale on our account"


async def test_a_dispute_we_never_heard_of_is_recorded(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    payment = await shop.confirmed("100.00")
    await harness.out_of_band(shop.container, payment["provider_payment_id"], "dispute", 4_000)

    run = await reconcile(shop, since)

    assert kinds(run, payment) == [("dispute_opened", "healed")]
    state = await flows.payment(shop.http, payment["payment_id"])
    assert state["disputed_amount"] == "40.00"
    assert "payment.disputed" in await routing_keys(shop.container, payment["payment_id"])
    await nothing_new(shop, since, payment)


async def test_a_lost_webhook_is_healed_by_asking(
    shop: Shop, harness: Harness, since: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer finished 3-D Secure at the provider, but its webhook never came."""
    shop.needs("three_d_secure")
    payment_id = await shop.payment("100.00", card="three_d_secure")
    waiting = await shop.confirm(payment_id)
    assert waiting.json()["status"] == "REQUIRES_ACTION", waiting.text
    await harness.completed_without_webhook(shop.container, waiting.json(), monkeypatch)

    run = await reconcile(shop, since)

    assert kinds(run, payment_id) == [("status_mismatch", "healed")]
    state = await flows.payment(shop.http, payment_id)
    assert state["status"] == "CAPTURED"
    assert "payment.succeeded" in await routing_keys(shop.container, payment_id)
    await nothing_new(shop, since, payment_id)


async def test_a_provider_refund_of_the_rest_makes_it_fully_refunded(
    shop: Shop, harness: Harness, since: datetime
) -> None:
    """Our refund of 90.00, then the provider's own of the 10.00 left: ours is matched by its
    key, theirs is healed, and the payment ends REFUNDED."""
    payment = await shop.confirmed("100.00")
    assert (await shop.refund(payment["payment_id"], "90.00")).status_code == 201
    await harness.out_of_band(shop.container, payment["provider_payment_id"], "refund", 1_000)
    before = await flows.payment(shop.http, payment["payment_id"])

    run = await reconcile(shop, since)

    assert kinds(run, payment) == [("refund_mismatch", "healed")]
    after = await flows.payment(shop.http, payment["payment_id"])
    assert (before["status"], after["status"]) == ("PARTIALLY_REFUNDED", "REFUNDED")
    await nothing_new(shop, since, payment)


async def test_runs_are_listed_newest_first(shop: Shop, since: datetime) -> None:
    first = await reconcile(shop, since)
    second = await reconcile(shop, since)
    listed = await shop.http.get(
        "/api/v1/admin/reconciliation/runs", params={"limit": 2}, headers=headers(ADMIN_KEY)
    )
    assert listed.status_code == 200, listed.text
    assert [r["run_id"] for r in listed.json()["data"]] == [second["run_id"], first["run_id"]]
