"""A correctly signed webhook with a malformed body never answers 500 (issue 9, item 10).

An event that can be identified (a usable `id` and `type`) is stored and answered 200, so the
provider stops retrying; its processing fails with the reason and it goes `DEAD` through the
normal path. One that cannot be identified is refused with 400 `malformed_json`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks import Webhook

from tests.api.conftest import assert_problem
from tests.conftest import MOCK_WEBHOOK_SECRET, settings_for
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tests.webhooks.support import mock_event, process, stored
from tillpoint.adapters.db.tables import webhook_events
from tillpoint.adapters.webhooks.stripe import StripeVerifier
from tillpoint.bootstrap import Container, build
from tillpoint.domain.ids import new_id
from tillpoint.service.ports import MalformedEvent

NUL = "\x00"


def signed(body: str, msg_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    """Any text, signed as the mock gateway signs (the signature is over the raw bytes)."""
    msg_id = msg_id or new_id("msg")
    moment = datetime.now(UTC)
    return body.encode(), {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(MOCK_WEBHOOK_SECRET).sign(msg_id, moment, body),
    }


@pytest.fixture
async def few_attempts(database_url: str) -> AsyncIterator[tuple[Container, MovableClock]]:
    """Two attempts, one second apart: DEAD within the test. Events other tests left waiting
    in the shared database are set aside first, so one processing pass sees only ours."""
    clock = MovableClock()
    container = build(
        settings_for(
            database_url,
            webhook_max_attempts=2,
            webhook_retry_base=timedelta(seconds=1),
            webhook_retry_max=timedelta(seconds=1),
        ),
        clock=clock,
    )
    async with container.engine.begin() as conn:
        await conn.execute(
            sa.update(webhook_events)
            .where(webhook_events.c.status.in_(["PENDING", "FAILED"]))
            .values(status="IGNORED", last_error="set aside by the test suite")
        )
    try:
        yield container, clock
    finally:
        await container.aclose()


def _event(**data: Any) -> dict[str, Any]:
    event = mock_event("payment.captured", "mock_pi_malformed")
    event["data"].update(data)
    return event


IDENTIFIABLE: list[tuple[str, dict[str, Any]]] = [
    ("data_a_list", {**_event(), "data": [1, 2, 3]}),
    ("data_a_string", {**_event(), "data": "captured"}),
    ("data_a_number", {**_event(), "data": 7}),
    ("amount_of_5000_digits", _event(amount="9" * 5000)),
    ("amount_a_number", _event(amount=10)),
    ("amount_past_bigint", _event(amount="99999999999999999999.00")),
    ("unknown_currency", _event(currency="ZZZ")),
    ("currency_a_list", _event(currency=["EUR"])),
    ("payment_id_longer_than_its_column", _event(provider_payment_id="p" * 129)),
    ("payment_id_with_nul", _event(provider_payment_id=f"mock_pi{NUL}")),
    ("payment_id_a_list", _event(provider_payment_id=["mock_pi_1"])),
    ("refund_id_longer_than_its_column", _event(provider_refund_id="r" * 500)),
    ("failure_code_with_nul", _event(failure_code=f"card{NUL}declined")),
]


class TestIdentifiableButMalformed:
    @pytest.mark.parametrize(("name", "event"), IDENTIFIABLE, ids=[n for n, _ in IDENTIFIABLE])
    async def test_is_stored_answered_200_and_goes_dead_with_the_reason(
        self,
        few_attempts: tuple[Container, MovableClock],
        name: str,
        event: dict[str, Any],
    ) -> None:
        container, clock = few_attempts
        async with asgi_client(container) as client:
            body, hdrs = signed(json.dumps(event), event["id"])
            response = await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)
            assert response.status_code == 200, response.text
            assert response.json() == {"received": True, "duplicate": False}
            again = await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)
            assert again.json() == {"received": True, "duplicate": True}

            (row,) = await stored(container, event["id"])
            assert (row.status, row.provider_payment_id, row.body) == ("PENDING", None, body)

            assert await process(container) == 1
            (row,) = await stored(container, event["id"])
            assert row.status == "FAILED"
            assert row.last_error.startswith("MalformedEvent: ")
            clock.advance(timedelta(seconds=2))
            assert await process(container) == 1
            (row,) = await stored(container, event["id"])
            assert (row.status, row.attempt_count) == ("DEAD", 2)
            assert row.last_error.startswith("MalformedEvent: ")


UNIDENTIFIABLE: list[tuple[str, str]] = [
    ("not_json", "{not json"),
    ("a_list", "[1, 2]"),
    ("a_string", '"payment.captured"'),
    ("a_number", "5"),
    ("no_id", json.dumps({"type": "payment.captured", "data": {}})),
    ("id_a_number", json.dumps({"id": 5, "type": "payment.captured"})),
    ("id_empty", json.dumps({"id": "", "type": "payment.captured"})),
    ("id_with_nul", json.dumps({"id": f"evt{NUL}1", "type": "payment.captured"})),
    ("id_longer_than_its_column", json.dumps({"id": "e" * 256, "type": "payment.captured"})),
    ("type_with_nul", json.dumps({"id": "evt_t1", "type": f"payment{NUL}captured"})),
    ("type_a_dict", json.dumps({"id": "evt_t2", "type": {"a": 1}})),
    ("lone_surrogate_in_id", '{"id": "evt_\\ud800", "type": "payment.captured"}'),
]


class TestUnidentifiable:
    @pytest.mark.parametrize(("name", "text"), UNIDENTIFIABLE, ids=[n for n, _ in UNIDENTIFIABLE])
    async def test_is_refused_with_400_and_nothing_is_stored(
        self, few_attempts: tuple[Container, MovableClock], name: str, text: str
    ) -> None:
        container, _ = few_attempts
        async with asgi_client(container) as client:
            body, hdrs = signed(text)
            async with container.engine.connect() as conn:
                before = await conn.scalar(sa.select(sa.func.count()).select_from(webhook_events))
            response = await client.post("/api/v1/webhooks/mock", content=body, headers=hdrs)
            assert_problem(response, 400, "malformed_json")
            async with container.engine.connect() as conn:
                after = await conn.scalar(sa.select(sa.func.count()).select_from(webhook_events))
            assert after == before

    async def test_an_unsigned_malformed_body_is_still_401(
        self, few_attempts: tuple[Container, MovableClock]
    ) -> None:
        container, _ = few_attempts
        async with asgi_client(container) as client:
            response = await client.post("/api/v1/webhooks/mock", content=b"[1]")
            assert_problem(response, 401, "invalid_signature")


class TestStripeEvents:
    """Stripe's verifier applies the same rule (its route needs a configured secret)."""

    def verifier(self) -> StripeVerifier:
        return StripeVerifier("whsec_test")

    @pytest.mark.parametrize(
        "data",
        [
            [1],
            {"object": "pi"},
            {"object": {"id": "p" * 200, "amount": 100, "currency": "eur"}},
            {"object": {"id": "pi_1", "amount": 10**30, "currency": "eur"}},
            {"object": {"id": f"pi{NUL}", "amount": 100, "currency": "eur"}},
            {"object": {"id": "pi_1", "last_payment_error": ["x"], "currency": "eur"}},
        ],
    )
    def test_a_malformed_intent_keeps_its_identity(self, data: Any) -> None:
        body = json.dumps({"id": "evt_s1", "type": "payment_intent.payment_failed", "data": data})
        with pytest.raises(MalformedEvent) as caught:
            self.verifier().parse(body.encode())
        assert (caught.value.provider_event_id, caught.value.event_type) == (
            "evt_s1",
            "payment_intent.payment_failed",
        )

    @pytest.mark.parametrize("body", ["[]", '{"id": 1, "type": "x"}', '{"id": "e\\u0000"}'])
    def test_an_event_without_identity_has_none(self, body: str) -> None:
        with pytest.raises(MalformedEvent) as caught:
            self.verifier().parse(body.encode())
        assert caught.value.provider_event_id is None


async def test_a_well_formed_event_is_still_stored_with_its_payment_id(
    few_attempts: tuple[Container, MovableClock],
) -> None:
    container, _ = few_attempts
    event = mock_event("payment.captured", "mock_pi_fine")
    async with asgi_client(container) as client:
        body, hdrs = signed(json.dumps(event), event["id"])
        response: httpx.Response = await client.post(
            "/api/v1/webhooks/mock", content=body, headers=hdrs
        )
        assert response.status_code == 200, response.text
    (row,) = await stored(container, event["id"])
    assert row.provider_payment_id == "mock_pi_fine"
