"""Stored events are applied by the worker: once, forward-only, retried until they apply."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from itertools import permutations
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key, settings_for
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.webhooks.support import (
    deliver,
    mock_event,
    new_payment,
    outbox_rows,
    process,
    stored,
)
from tillpoint.adapters.db.tables import webhook_events
from tillpoint.adapters.providers import mock as mock_gateway
from tillpoint.bootstrap import Container, build


@pytest.fixture(autouse=True)
async def quiet_inbox(container: Container) -> None:
    """These tests count what one processing pass did, so events left waiting by other test
    modules in the shared database (and made due by their clock moves) are set aside first."""
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(webhook_events)
            .where(webhook_events.c.status.in_(["PENDING", "FAILED"]))
            .values(status="IGNORED", last_error="set aside by the test suite")
        )


SIGNALS = {
    "authorized": "payment.authorized",
    "captured": "payment.captured",
    "failed": "payment.failed",
}
# Forward-only order of the states these signals lead to; FAILED and CAPTURED are both ends.
RANK = {"REQUIRES_ACTION": 0, "AUTHORIZED": 1, "CAPTURED": 2, "FAILED": 2}


def provider_outcome(order: tuple[str, ...]) -> tuple[str, list[str]]:
    """Where a forward-only provider ends after these signals, and which ones it applied."""
    state, applied = "REQUIRES_ACTION", []
    for signal in order:
        if signal == "authorized" and state == "REQUIRES_ACTION":
            state = "AUTHORIZED"
        elif signal == "captured" and state in ("REQUIRES_ACTION", "AUTHORIZED"):
            state = "CAPTURED"
        elif signal == "failed" and state == "REQUIRES_ACTION":
            state = "FAILED"
        else:
            continue
        applied.append(signal)
    return state, applied


async def _webhook_rows(client: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    got = await client.get(
        "/api/v1/admin/webhooks/events", params=filters, headers=headers(ADMIN_KEY)
    )
    assert got.status_code == 200, got.text
    return list(got.json()["data"])


class TestDuplicates:
    async def test_parallel_and_repeated_deliveries_change_the_payment_once(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        pay = await new_payment(client)
        assert pay["status"] == "REQUIRES_ACTION"
        event = mock_event("payment.captured", pay["provider_payment_id"])

        first = await asyncio.gather(*(deliver(client, event) for _ in range(20)))
        assert [r.status_code for r in first] == [200] * 20
        assert sum(not r.json()["duplicate"] for r in first) == 1
        assert await process(container) == 1
        later = [await deliver(client, event) for _ in range(5)]
        assert [(r.status_code, r.json()["duplicate"]) for r in later] == [(200, True)] * 5
        assert await process(container) == 0

        assert (await flows.payment(client, pay["payment_id"]))["status"] == "CAPTURED"
        types = await flows.event_types(client, pay["payment_id"])
        assert types.count("CAPTURE_SUCCEEDED") == 1
        assert types.count("WEBHOOK_RECEIVED") == 1
        assert [r.routing_key for r in await outbox_rows(container, pay["payment_id"])] == [
            "payment.succeeded"
        ]
        assert len(await stored(container, event["id"])) == 1
        assert (await flows.order(client, pay["order_id"]))["status"] == "PAID"


class TestOrdering:
    @pytest.mark.parametrize("order", list(permutations(SIGNALS)), ids=lambda o: "-".join(o))
    async def test_every_order_ends_where_the_provider_ended_and_never_moves_back(
        self, client: httpx.AsyncClient, container: Container, order: tuple[str, ...]
    ) -> None:
        pay = await new_payment(client, capture_method="manual")
        expected, applied = provider_outcome(order)
        seen = [RANK[pay["status"]]]
        statuses = []
        for signal in order:
            event = mock_event(
                SIGNALS[signal], pay["provider_payment_id"], failure_code="card_declined"
            )
            assert (await deliver(client, event)).status_code == 200
            assert await process(container) == 1
            current = (await flows.payment(client, pay["payment_id"]))["status"]
            seen.append(RANK[current])
            (row,) = await stored(container, event["id"])
            statuses.append(row.status)
        assert seen == sorted(seen), f"moved backwards: {seen}"
        assert (await flows.payment(client, pay["payment_id"]))["status"] == expected
        assert statuses == ["PROCESSED" if s in applied else "IGNORED" for s in order]
        types = await flows.event_types(client, pay["payment_id"])
        assert types.count("STALE_SIGNAL_IGNORED") == len(order) - len(applied)
        assert types.count("WEBHOOK_RECEIVED") == len(order)
        if "captured" in applied:  # even when it overtook its authorization
            assert (await flows.order(client, pay["order_id"]))["status"] == "PAID"

    @pytest.mark.parametrize("order", [("authorized", "captured"), ("captured", "authorized")])
    async def test_a_capture_overtaking_its_authorization_still_lands_in_captured(
        self, client: httpx.AsyncClient, container: Container, order: tuple[str, ...]
    ) -> None:
        pay = await new_payment(client, capture_method="manual")
        for signal in order:
            await deliver(client, mock_event(SIGNALS[signal], pay["provider_payment_id"]))
        assert await process(container) == 2
        got = await flows.payment(client, pay["payment_id"])
        assert (got["status"], got["captured_amount"]) == ("CAPTURED", "10.00")
        routing = sorted(r.routing_key for r in await outbox_rows(container, pay["payment_id"]))
        assert routing.count("payment.succeeded") == 1
        assert routing.count("payment.authorized") <= 1  # never twice, whatever the order


@pytest.fixture
def known_provider_id(monkeypatch: pytest.MonkeyPatch) -> str:
    """The provider id the mock will give the next payment (so an event can come first)."""
    ident = f"mock_pi_{new_key()}"
    original = mock_gateway._ref
    monkeypatch.setattr(
        mock_gateway, "_ref", lambda prefix: ident if prefix == "mock_pi" else original(prefix)
    )
    return ident


class TestRetries:
    async def test_an_event_before_its_payment_waits_and_is_applied_once_it_exists(
        self,
        client: httpx.AsyncClient,
        container: Container,
        clock: MovableClock,
        known_provider_id: str,
    ) -> None:
        event = mock_event("payment.captured", known_provider_id)
        assert (await deliver(client, event)).status_code == 200
        assert await process(container) == 1
        (row,) = await stored(container, event["id"])
        assert (row.status, row.attempt_count) == ("FAILED", 1)
        assert "PaymentNotKnownYet" in row.last_error
        assert row.next_attempt_at > clock.now()  # backed off

        pay = await new_payment(client)
        assert pay["provider_payment_id"] == known_provider_id
        assert await process(container) == 0  # not due yet
        clock.advance(container.settings.webhook_retry_base * 2)
        assert await process(container) == 1
        (row,) = await stored(container, event["id"])
        assert (row.status, row.attempt_count) == ("PROCESSED", 2)
        assert (await flows.payment(client, pay["payment_id"]))["status"] == "CAPTURED"
        assert (await flows.order(client, pay["order_id"]))["status"] == "PAID"

    async def test_a_handler_that_keeps_failing_goes_dead_and_replay_queues_it_again(
        self, database_url: str, clock: MovableClock, known_provider_id: str
    ) -> None:
        container = build(
            settings_for(
                database_url,
                webhook_max_attempts=3,
                webhook_retry_base=timedelta(seconds=1),
                webhook_retry_max=timedelta(seconds=1),
            ),
            clock=clock,
        )
        try:
            async with asgi_client(container) as client:
                await self._dead_and_replay(client, container, clock, known_provider_id)
        finally:
            await container.aclose()

    async def _dead_and_replay(
        self,
        client: httpx.AsyncClient,
        container: Container,
        clock: MovableClock,
        provider_payment_id: str,
    ) -> None:
        event = mock_event("payment.captured", provider_payment_id)
        await deliver(client, event)
        for _ in range(3):
            assert await process(container) == 1
            assert await process(container) == 0  # backing off
            clock.advance(timedelta(seconds=2))
        assert await process(container) == 0  # dead events are not retried
        dead = [
            r
            for r in await _webhook_rows(client, provider="mock", status="DEAD")
            if r["provider_event_id"] == event["id"]
        ]
        assert len(dead) == 1
        assert dead[0]["attempt_count"] == 3
        assert "PaymentNotKnownYet" in dead[0]["last_error"]
        assert dead[0]["next_attempt_at"] is None

        pay = await new_payment(client)  # the cause is fixed: the payment now exists
        key = new_key()
        url = f"/api/v1/admin/webhooks/events/{dead[0]['webhook_event_id']}/replay"
        replayed = await client.post(url, headers=headers(ADMIN_KEY, key))
        assert replayed.status_code == 202, replayed.text
        assert replayed.json()["status"] == "PENDING"
        assert replayed.json()["attempt_count"] == 0  # a fresh retry budget
        again = await client.post(url, headers=headers(ADMIN_KEY, key))
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == replayed.content
        assert await process(container) == 1
        (row,) = await stored(container, event["id"])
        assert row.status == "PROCESSED"
        assert (await flows.payment(client, pay["payment_id"]))["status"] == "CAPTURED"

    async def test_replay_of_an_unknown_event_is_404(self, client: httpx.AsyncClient) -> None:
        got = await client.post(
            "/api/v1/admin/webhooks/events/whe_nope/replay", headers=headers(ADMIN_KEY, new_key())
        )
        assert got.status_code == 404
        assert got.json()["code"] == "not_found"


class TestSimulator:
    async def test_a_completed_3ds_challenge_is_announced_and_the_late_webhook_is_a_no_op(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        pay = await new_payment(client)
        done = await client.post(
            f"/api/v1/payments/{pay['payment_id']}/mock/complete",
            json={"result": "SUCCESS"},
            headers=headers(SERVICE_KEY, new_key()),
        )
        assert done.json()["status"] == "CAPTURED"
        assert container.mock_webhooks is not None
        async with asyncio.timeout(10):
            await container.mock_webhooks.wait_idle()
        assert await process(container) >= 1
        types = await flows.event_types(client, pay["payment_id"])
        assert types.count("WEBHOOK_RECEIVED") == 1
        assert types.count("CAPTURE_SUCCEEDED") == 1
        assert "STALE_SIGNAL_IGNORED" in types

    async def test_duplicated_and_reordered_deliveries_still_capture_once(
        self, database_url: str, clock: MovableClock
    ) -> None:
        container = build(
            settings_for(database_url, mock_webhook_faults="duplicate,reorder"), clock=clock
        )
        try:
            async with asgi_client(container) as client:
                pay = await new_payment(client, token="pm_card_async")
                assert pay["status"] == "PROCESSING"
                assert container.mock_webhooks is not None
                async with asyncio.timeout(10):
                    await container.mock_webhooks.wait_idle()
                while await process(container):
                    pass
                got = await flows.payment(client, pay["payment_id"])
                assert got["status"] == "CAPTURED"
                types = await flows.event_types(client, pay["payment_id"])
                assert types.count("WEBHOOK_RECEIVED") == 2  # two events, each stored once
                assert types.count("CAPTURE_SUCCEEDED") == 1
                assert (await flows.order(client, pay["order_id"]))["status"] == "PAID"
        finally:
            await container.aclose()
