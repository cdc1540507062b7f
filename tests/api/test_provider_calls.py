"""The provider call audit through HTTP: every outbound call of a payment is a row, listed by
`GET /api/v1/admin/payments/{payment_id}/provider-calls`, redacted, with the correlation id of
the request that made it."""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

import sqlalchemy as sa

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.security.scan import card_data
from tillpoint.adapters.db import tables as t

# A Stripe secret key (`sk_test_…`, restricted `rk_live_…`), a signing secret, a client secret.
SECRETS = re.compile(r"\b(?:sk|rk)_(?:test|live)_|whsec_|_secret_")
FIELDS = {
    "call_id",
    "provider",
    "operation",
    "payment_id",
    "idempotency_key",
    "provider_request_id",
    "http_status",
    "outcome",
    "latency_ms",
    "correlation_id",
    "request",
    "response",
    "created_at",
}


def request_id(step: str) -> str:
    return f"req_{step}_{secrets.token_hex(6)}"


async def post(api: Api, path: str, body: Any, *, key: str, rid: str) -> dict[str, Any]:
    response = await api.client.post(
        path, json=body, headers={**headers(key, new_key()), "X-Request-ID": rid}
    )
    assert response.status_code in (200, 201), response.text
    assert response.headers["x-request-id"] == rid
    answer: dict[str, Any] = response.json()
    return answer


async def calls_of(api: Api, payment_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/admin/payments/{payment_id}/provider-calls", key=ADMIN_KEY)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


class TestProviderCallAudit:
    async def test_each_call_of_a_payment_is_listed_oldest_first(self, api: Api) -> None:
        order_id = await api.order("100.00")
        created = await api.payment(order_id, "100.00", capture_method="manual")
        payment_id = created["payment_id"]
        base = f"/api/v1/payments/{payment_id}"
        rids = [request_id("confirm"), request_id("capture"), request_id("refund")]
        confirmed = await post(api, f"{base}/confirm", None, key=SERVICE_KEY, rid=rids[0])
        assert confirmed["status"] == "AUTHORIZED"
        captured = await post(api, f"{base}/capture", {}, key=SERVICE_KEY, rid=rids[1])
        assert captured["status"] == "CAPTURED"
        await post(api, f"{base}/refund", {"amount": "40.00"}, key=ADMIN_KEY, rid=rids[2])

        calls = await calls_of(api, payment_id)
        assert [c["operation"] for c in calls] == ["authorize", "capture", "refund"]
        assert [c["outcome"] for c in calls] == ["AUTHORIZED", "CAPTURED", "REFUNDED"]
        assert [c["idempotency_key"] for c in calls] == [
            f"{payment_id}:authorize:1",
            f"{payment_id}:capture:2",
            f"{payment_id}:refund:3",
        ]
        assert [c["correlation_id"] for c in calls] == rids
        for call in calls:
            assert call.keys() >= FIELDS
            assert call["provider"] == "mock"
            assert call["payment_id"] == payment_id
            assert isinstance(call["latency_ms"], int)
            assert call["latency_ms"] >= 0
            assert call["http_status"] is None  # the mock has no HTTP
            assert call["call_id"].startswith("pcall_")
        authorize, capture, refund = calls
        assert authorize["request"]["payment_method"]["token"] == "pm_card_visa"
        assert authorize["request"]["capture"] is False
        assert authorize["response"]["status"] == "AUTHORIZED"
        provider_payment_id = confirmed["provider_payment_id"]
        assert authorize["response"]["provider_payment_id"] == provider_payment_id
        assert capture["request"]["provider_payment_id"] == provider_payment_id
        assert (capture["request"]["amount_minor"], capture["request"]["currency"]) == (
            10000,
            "USD",
        )
        assert refund["request"]["amount_minor"] == 4000
        assert refund["response"]["status"] == "REFUNDED"

        # The same rows, as the database keeps them: nothing secret, no card number.
        audit = t.provider_call_audit
        async with api.container.engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(audit).where(audit.c.payment_id == payment_id))
            ).all()
        assert len(rows) == 3
        stored = json.dumps([list(row) for row in rows], default=str)
        listed = json.dumps(calls)
        for text in (stored, listed):
            assert card_data(text) == []
            assert SECRETS.search(text) is None

    async def test_a_declined_sale_is_one_failed_call(self, api: Api) -> None:
        order_id = await api.order()
        created = await api.payment(order_id, method={"token": "pm_card_chargeDeclined"})
        response = await api.confirm(created["payment_id"])
        assert_problem(response, 402, "card_declined")
        [call] = await calls_of(api, created["payment_id"])
        assert (call["operation"], call["outcome"]) == ("authorize", "FAILED")
        assert call["response"]["failure_code"] == "card_declined"
        assert call["correlation_id"] == response.headers["x-request-id"]

    async def test_a_payment_not_sent_yet_has_no_calls(self, api: Api) -> None:
        created = await api.payment(await api.order())
        assert await calls_of(api, created["payment_id"]) == []

    async def test_only_an_admin_may_read_it(self, api: Api) -> None:
        paid = await api.confirmed()
        path = f"/api/v1/admin/payments/{paid['payment_id']}/provider-calls"
        assert_problem(await api.get(path, key=SERVICE_KEY), 403, "forbidden")

    async def test_an_unknown_payment_is_404(self, api: Api) -> None:
        path = "/api/v1/admin/payments/pay_01UNKNOWN00000000000000000/provider-calls"
        assert_problem(await api.get(path, key=ADMIN_KEY), 404, "not_found")
