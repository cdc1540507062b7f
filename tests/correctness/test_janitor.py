"""The janitor: unknown provider outcomes end in the provider's truth, never in a guess;
payments nobody confirmed in time are canceled, but never one whose confirmation is running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key, settings_for
from tests.correctness.helpers import moved, scalar
from tests.support.clock import MovableClock
from tests.support.flows import confirm, create_order, create_payment
from tillpoint.adapters.db import tables
from tillpoint.bootstrap import Container, build
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import Payment
from tillpoint.service import janitor, payments

FIRST_RECHECK = timedelta(minutes=5)
PAYMENT_TTL = timedelta(minutes=30)
OUTBOX = "SELECT count(*) FROM outbox WHERE aggregate_id = :p AND routing_key = :k"


async def get(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await client.get(url, headers=headers(ADMIN_KEY))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def ledger(client: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    body = await get(client, f"/api/v1/admin/orders/{order_id}/payments")
    transactions: list[dict[str, Any]] = body["data"][0]["transactions"]
    return transactions


async def event_types(client: httpx.AsyncClient, payment_id: str) -> list[str]:
    body = await get(client, f"/api/v1/payments/{payment_id}/events")
    return [e["event_type"] for e in body["data"]]


async def timed_out_payment(client: httpx.AsyncClient) -> tuple[str, str]:
    """A `pm_card_timeout` payment: the provider charged, but its answer never came."""
    order_id = await create_order(client)
    payment = await create_payment(client, order_id, token="pm_card_timeout")
    await confirm(client, payment["payment_id"], "PROCESSING")
    [sale] = await ledger(client, order_id)
    assert (sale["kind"], sale["status"]) == ("SALE", "UNKNOWN")
    return order_id, payment["payment_id"]


@pytest.fixture
async def cancel_policy(database_url: str, clock: MovableClock) -> AsyncIterator[Container]:
    current = build(settings_for(database_url, on_payment_failure="cancel"), clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


class TestUnknownOutcomes:
    async def test_a_timed_out_payment_ends_in_the_providers_truth(
        self, client: httpx.AsyncClient, clock: MovableClock, container: Container
    ) -> None:
        order_id, payment_id = await timed_out_payment(client)

        await janitor.resolve_open_operations(deps=container.deps)
        assert (await get(client, f"/api/v1/payments/{payment_id}"))["status"] == "PROCESSING"
        with moved(clock, FIRST_RECHECK + timedelta(seconds=1)):
            await janitor.resolve_open_operations(deps=container.deps)

        payment = await get(client, f"/api/v1/payments/{payment_id}")
        assert (payment["status"], payment["captured_amount"]) == ("CAPTURED", "100.00")
        assert (await get(client, f"/api/v1/orders/{order_id}"))["status"] == "PAID"
        [sale] = await ledger(client, order_id)
        assert sale["status"] == "SUCCEEDED"
        events = await event_types(client, payment_id)
        assert events.count("RECONCILED") == 1
        assert events.count("CAPTURE_SUCCEEDED") == 1
        assert await scalar(container, OUTBOX, p=payment_id, k="payment.succeeded") == 1

    async def test_a_reconciliation_pass_resolves_every_open_operation(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        order_id, payment_id = await timed_out_payment(client)
        h = headers(ADMIN_KEY, new_key())

        started = await client.post("/api/v1/payments/reconcile", headers=h)
        assert started.status_code == 202, started.text
        assert started.json()["run_id"]

        deadline = time.monotonic() + 10
        while (await get(client, f"/api/v1/payments/{payment_id}"))["status"] != "CAPTURED":
            assert time.monotonic() < deadline, "the reconciliation pass did not resolve it"
        assert (await get(client, f"/api/v1/orders/{order_id}"))["status"] == "PAID"
        run = await finished_run(container, started.json()["run_id"])
        assert run.status == "FINISHED"
        assert run.checked >= 1
        assert run.resolved >= 1
        assert run.finished_at is not None
        replay = await client.post("/api/v1/payments/reconcile", headers=h)
        assert (replay.status_code, replay.content) == (202, started.content)
        assert replay.headers["idempotent-replayed"] == "true"

    async def test_reconciliation_is_for_admins(self, client: httpx.AsyncClient) -> None:
        refused = await client.post(
            "/api/v1/payments/reconcile", headers=headers(SERVICE_KEY, new_key())
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")

    async def test_a_confirmation_in_flight_is_never_asked_about(
        self, client: httpx.AsyncClient, container: Container, slow: Container
    ) -> None:
        """While the provider call runs the provider may not have the charge yet: asking then
        would find nothing and fail a payment that is about to be charged."""
        order_id = await create_order(client)
        payment_id = (await create_payment(client, order_id))["payment_id"]
        running = await confirm_in_background(slow, payment_id)

        await janitor.resolve_open_operations(deps=container.deps, everything=True)

        assert (await running).status.value == "CAPTURED"
        [sale] = await ledger(client, order_id)
        assert sale["status"] == "SUCCEEDED"
        assert (await get(client, f"/api/v1/orders/{order_id}"))["status"] == "PAID"


async def finished_run(container: Container, run_id: str) -> Any:
    """The run's row once the background pass has recorded its end."""
    runs = tables.reconciliation_runs
    deadline = time.monotonic() + 10
    while True:
        async with container.engine.connect() as conn:
            row = (await conn.execute(sa.select(runs).where(runs.c.run_id == run_id))).one()
        if row.status != "RUNNING":
            return row
        assert time.monotonic() < deadline, "the reconciliation run never finished"
        await asyncio.sleep(0.05)


@pytest.fixture
async def slow(database_url: str, clock: MovableClock) -> AsyncIterator[Container]:
    """A second process's worth of service whose provider answers after a second."""
    settings = settings_for(database_url, mock_delay_ms=1000, provider_timeout=timedelta(seconds=5))
    current = build(settings, clock=clock)
    try:
        yield current
    finally:
        await current.aclose()


async def confirm_in_background(slow: Container, payment_id: str) -> asyncio.Task[Payment]:
    """Start a confirmation and return once its operation is committed PENDING (phase 1) and
    the provider call is running."""
    ctx = ChangeContext(source="api", actor="test")
    task = asyncio.create_task(payments.confirm_payment(payment_id, None, ctx, deps=slow.deps))
    deadline = time.monotonic() + 10
    sql = "SELECT count(*) FROM payment_transactions WHERE payment_id = :p AND status = 'PENDING'"
    while not await scalar(slow, sql, p=payment_id):
        assert not task.done(), "the confirmation ended before it was seen in flight"
        assert time.monotonic() < deadline, "phase 1 never committed"
        await asyncio.sleep(0.02)
    return task


class TestStalePayments:
    async def test_a_stale_payment_is_canceled_and_its_order_kept_pending(
        self, client: httpx.AsyncClient, clock: MovableClock, container: Container
    ) -> None:
        order_id = await create_order(client)
        payment_id = (await create_payment(client, order_id))["payment_id"]

        await janitor.cancel_stale_payments(deps=container.deps)
        assert (await get(client, f"/api/v1/payments/{payment_id}"))["status"] == "INITIATED"
        with moved(clock, PAYMENT_TTL + timedelta(minutes=1)):
            assert await janitor.cancel_stale_payments(deps=container.deps) >= 1

        assert (await get(client, f"/api/v1/payments/{payment_id}"))["status"] == "CANCELED"
        events = (await get(client, f"/api/v1/payments/{payment_id}/events"))["data"]
        voided = [e for e in events if e["event_type"] == "VOIDED"]
        assert [e["payload"]["reason"] for e in voided] == ["payment_expired"]
        assert await scalar(container, OUTBOX, p=payment_id, k="payment.canceled") == 1
        assert (await get(client, f"/api/v1/orders/{order_id}"))["status"] == "PAYMENT_PENDING"
        # The order is payable again: a new payment may be created for it.
        await create_payment(client, order_id)

    async def test_with_the_cancel_policy_the_order_is_canceled_too(
        self, client: httpx.AsyncClient, clock: MovableClock, cancel_policy: Container
    ) -> None:
        order_id = await create_order(client)
        payment_id = (await create_payment(client, order_id))["payment_id"]

        with moved(clock, PAYMENT_TTL + timedelta(minutes=1)):
            await janitor.cancel_stale_payments(deps=cancel_policy.deps)

        assert (await get(client, f"/api/v1/payments/{payment_id}"))["status"] == "CANCELED"
        order = await get(client, f"/api/v1/orders/{order_id}")
        assert order["status"] == "CANCELED"
        last = order["history"][-1]
        assert (last["from_status"], last["to_status"]) == ("PAYMENT_PENDING", "CANCELED")
        assert last["source"] == "janitor"

    async def test_a_payment_whose_confirmation_is_running_is_not_canceled(
        self, client: httpx.AsyncClient, clock: MovableClock, container: Container, slow: Container
    ) -> None:
        order_id = await create_order(client)
        payment_id = (await create_payment(client, order_id))["payment_id"]
        running = await confirm_in_background(slow, payment_id)

        with moved(clock, PAYMENT_TTL + timedelta(minutes=1)):
            await janitor.cancel_stale_payments(deps=container.deps)
            confirmed = await running

        assert confirmed.status.value == "CAPTURED"
        [sale] = await ledger(client, order_id)
        assert sale["status"] == "SUCCEEDED"
        assert "VOIDED" not in await event_types(client, payment_id)
