"""Rotating an API key's value keeps its principal, so a retry sent with the new value after
the switch is still a replay of what the old value started (idempotency is scoped by the id)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from tests.conftest import headers, new_key, settings_for
from tests.security.scan import register_secret
from tests.support import flows
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tillpoint.bootstrap import build
from tillpoint.config import ApiKey

OLD = "checkout-old-value-0123456789"
NEW = "checkout-new-value-9876543210"
register_secret(OLD, "the rotated-out checkout API key")
register_secret(NEW, "the rotated-in checkout API key")


@asynccontextmanager
async def serving(
    database_url: str, clock: MovableClock, *values: str
) -> AsyncIterator[httpx.AsyncClient]:
    keys = [ApiKey.model_validate({"id": "checkout", "key": v, "role": "service"}) for v in values]
    container = build(settings_for(database_url, api_keys=keys), clock=clock)
    try:
        async with asgi_client(container) as http:
            yield http
    finally:
        await container.aclose()


async def test_a_retry_with_the_rotated_value_is_a_replay(
    database_url: str, clock: MovableClock
) -> None:
    idem = new_key()
    order_id = flows.new_order_id()
    body = {"order_id": order_id, "buyer_id": "buyer-1", "amount": "10.00", "currency": "EUR"}

    async with serving(database_url, clock, OLD) as http:
        first = await http.post("/api/v1/orders", json=body, headers=headers(OLD, idem))
    async with serving(database_url, clock, OLD, NEW) as http:  # the switch: both values valid
        during = await http.post("/api/v1/orders", json=body, headers=headers(NEW, idem))
        old_still = await http.get(f"/api/v1/orders/{order_id}", headers=headers(OLD))
    async with serving(database_url, clock, NEW) as http:  # the old value withdrawn
        after = await http.post("/api/v1/orders", json=body, headers=headers(NEW, idem))
        refused = await http.get(f"/api/v1/orders/{order_id}", headers=headers(OLD))

    assert first.status_code == 201, first.text
    assert (during.status_code, during.headers.get("idempotent-replayed")) == (201, "true")
    assert (after.status_code, after.headers.get("idempotent-replayed")) == (201, "true")
    assert during.content == after.content == first.content
    assert old_still.status_code == 200
    assert refused.status_code == 401
