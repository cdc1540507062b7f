"""Idempotency keys (API.md "Idempotency"): the first outcome is kept and replayed byte for
byte, refusals that the client can correct are never kept, and keys expire."""

from __future__ import annotations

from datetime import timedelta

import httpx

from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.correctness.helpers import idempotent_hits, moved, scalar
from tests.support.clock import MovableClock
from tests.support.flows import confirm, create_order, create_payment, payment_body
from tillpoint.bootstrap import Container
from tillpoint.service.idempotency import fingerprint

KEY_ROWS = "SELECT count(*) FROM idempotency_keys WHERE key = :k"


def order_body(amount: str = "10.00") -> dict[str, str]:
    return {"order_id": f"ord-{new_key()}", "buyer_id": "b", "amount": amount, "currency": "EUR"}


class TestReplay:
    async def test_replays_the_same_bytes_now_and_after_23_hours(
        self, client: httpx.AsyncClient, clock: MovableClock
    ) -> None:
        order_id = await create_order(client)
        h = headers(SERVICE_KEY, new_key())
        first = await client.post("/api/v1/payments", json=payment_body(order_id), headers=h)
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        hits = idempotent_hits()

        now = await client.post("/api/v1/payments", json=payment_body(order_id), headers=h)
        with moved(clock, timedelta(hours=23)):
            later = await client.post("/api/v1/payments", json=payment_body(order_id), headers=h)

        for replay in (now, later):
            assert replay.status_code == 201
            assert replay.content == first.content
            assert replay.headers["idempotent-replayed"] == "true"
        assert idempotent_hits() == hits + 2

    async def test_replays_a_stored_decline(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(
            client, await create_order(client), token="pm_card_chargeDeclined"
        )
        h = headers(SERVICE_KEY, new_key())
        url = f"/api/v1/payments/{payment['payment_id']}/confirm"

        first = await client.post(url, headers=h)
        replay = await client.post(url, headers=h)

        assert first.status_code == 402
        assert first.json()["code"] == "card_declined"
        assert first.json()["payment"]["status"] == "FAILED"
        assert (replay.status_code, replay.content) == (402, first.content)
        assert replay.headers["idempotent-replayed"] == "true"

    async def test_replays_a_stored_conflict(self, client: httpx.AsyncClient) -> None:
        payment = await create_payment(client, await create_order(client))
        await confirm(client, payment["payment_id"], "CAPTURED")
        h = headers(SERVICE_KEY, new_key())
        url = f"/api/v1/payments/{payment['payment_id']}/void"

        first = await client.post(url, headers=h)
        replay = await client.post(url, headers=h)

        assert first.status_code == 409
        assert first.json()["code"] == "invalid_state_transition"
        assert (replay.status_code, replay.content) == (409, first.content)
        assert replay.headers["idempotent-replayed"] == "true"

    async def test_a_key_is_reaped_after_its_ttl(
        self, client: httpx.AsyncClient, clock: MovableClock, container: Container
    ) -> None:
        key, body = new_key(), order_body()
        created = await client.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
        assert created.status_code == 201

        with moved(clock, timedelta(hours=23)):
            await container.idempotency.store.reap(clock.now(), 1000)
            assert await scalar(container, KEY_ROWS, k=key) == 1
        with moved(clock, timedelta(hours=25)):
            assert await container.idempotency.store.reap(clock.now(), 1000) >= 1
            assert await scalar(container, KEY_ROWS, k=key) == 0
            # Forgotten: the same key now runs the request again (the order exists by now).
            again = await client.post(
                "/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key)
            )
        assert again.status_code == 409
        assert again.json()["code"] == "order_exists"
        assert "idempotent-replayed" not in again.headers


class TestRefusals:
    async def test_a_changed_body_with_the_same_key_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        h = headers(SERVICE_KEY, new_key())
        assert (await client.post("/api/v1/orders", json=order_body(), headers=h)).status_code == (
            201
        )

        reused = await client.post("/api/v1/orders", json=order_body(), headers=h)

        assert reused.status_code == 422
        assert reused.json()["code"] == "idempotency_key_reused"

    async def test_a_missing_or_overlong_key_is_refused(self, client: httpx.AsyncClient) -> None:
        body = order_body()
        missing = await client.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY))
        too_long = await client.post(
            "/api/v1/orders", json=body, headers=headers(SERVICE_KEY, "k" * 256)
        )

        assert (missing.status_code, missing.json()["code"]) == (400, "idempotency_key_missing")
        assert (too_long.status_code, too_long.json()["code"]) == (400, "idempotency_key_invalid")

    async def test_a_bad_token_leaves_no_key_behind(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        key, body = new_key(), order_body()

        denied = await client.post(
            "/api/v1/orders", json=body, headers=headers("not-a-key-0123456789", key)
        )
        assert denied.status_code == 401
        assert await scalar(container, KEY_ROWS, k=key) == 0

        retried = await client.post("/api/v1/orders", json=body, headers=headers(SERVICE_KEY, key))
        assert retried.status_code == 201, retried.text

    async def test_a_validation_error_leaves_no_key_behind(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        key, body = new_key(), order_body()
        h = headers(SERVICE_KEY, key)

        invalid = await client.post("/api/v1/orders", json={**body, "amount": "10.005"}, headers=h)
        assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_error")
        assert await scalar(container, KEY_ROWS, k=key) == 0

        corrected = await client.post("/api/v1/orders", json=body, headers=h)
        assert corrected.status_code == 201, corrected.text

    async def test_a_validation_error_found_by_the_use_case_is_not_kept(
        self, client: httpx.AsyncClient, container: Container
    ) -> None:
        order_id = await create_order(client)
        key = new_key()
        h = headers(SERVICE_KEY, key)

        unknown = await client.post(
            "/api/v1/payments", json=payment_body(order_id, provider="nope"), headers=h
        )
        assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_error")
        assert await scalar(container, KEY_ROWS, k=key) == 0

        corrected = await client.post("/api/v1/payments", json=payment_body(order_id), headers=h)
        assert corrected.status_code == 201, corrected.text

    async def test_a_running_key_is_in_use_until_its_lock_times_out(
        self, client: httpx.AsyncClient, clock: MovableClock, container: Container
    ) -> None:
        """A key claimed by a request that never finished (its process died) is `in use`;
        after the lock timeout the next retry takes it over and runs the request."""
        key, body = new_key(), order_body()
        principal = container.keys.authenticate(SERVICE_KEY)
        assert principal is not None
        now = clock.now()
        await container.idempotency.store.claim(
            f"{principal.id} POST /api/v1/orders",
            key,
            fingerprint("/api/v1/orders", body),
            now=now,
            expires_at=now + timedelta(hours=24),
            lock_timeout=timedelta(seconds=90),
        )
        h = headers(SERVICE_KEY, key)

        busy = await client.post("/api/v1/orders", json=body, headers=h)
        assert (busy.status_code, busy.json()["code"]) == (409, "idempotency_key_in_use")
        with moved(clock, container.settings.idempotency_lock_timeout + timedelta(seconds=1)):
            taken_over = await client.post("/api/v1/orders", json=body, headers=h)
        assert taken_over.status_code == 201, taken_over.text
        replay = await client.post("/api/v1/orders", json=body, headers=h)
        assert replay.content == taken_over.content

    async def test_keys_are_scoped_to_the_principal(self, client: httpx.AsyncClient) -> None:
        key = new_key()
        assert (
            await client.post(
                "/api/v1/orders", json=order_body(), headers=headers(SERVICE_KEY, key)
            )
        ).status_code == 201

        other = await client.post(
            "/api/v1/orders", json=order_body(), headers=headers(ADMIN_KEY, key)
        )

        assert other.status_code == 201
        assert "idempotent-replayed" not in other.headers
