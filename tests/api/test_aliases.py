"""The seeds' own paths answer what the canonical paths answer (docs/api.md, Aliases)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, SERVICE_KEY, headers, new_key
from tests.webhooks.support import mock_event, sign_mock

VOLATILE = {"request_id", "updated_at"}


def same(a: httpx.Response, b: httpx.Response) -> None:
    """Same status and body, but for the request id of each answer."""
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.headers["content-type"] == b.headers["content-type"]
    left, right = a.json(), b.json()
    if isinstance(left, dict):
        left = {k: v for k, v in left.items() if k not in VOLATILE}
        right = {k: v for k, v in right.items() if k not in VOLATILE}
    assert left == right


async def captured(api: Api) -> dict[str, Any]:
    return await api.confirmed()


async def authorized(api: Api) -> dict[str, Any]:
    return await api.confirmed(capture_method="manual")


class TestSeed001:
    async def test_get_and_list(self, api: Api) -> None:
        payment = await captured(api)
        pid = payment["payment_id"]
        same(await api.get(f"/api/payments/{pid}"), await api.get(f"/api/v1/payments/{pid}"))
        same(
            await api.get("/api/payments", key=ADMIN_KEY, order_id=payment["order_id"]),
            await api.get("/api/v1/payments", key=ADMIN_KEY, order_id=payment["order_id"]),
        )
        # same auth: the list is admin-only on both paths
        assert_problem(await api.get("/api/payments"), 403, "forbidden")
        assert_problem(await api.client.get("/api/payments/x"), 401, "unauthenticated")

    async def test_create_and_confirm(self, api: Api) -> None:
        order = await api.order()
        body = {"order_id": order, "amount": "100.00", "currency": "USD"}
        created = await api.post("/api/payments", body)
        assert created.status_code == 201, created.text
        pid = created.json()["payment_id"]
        assert created.json()["status"] == "INITIATED"
        confirmed = await api.post(
            f"/api/payments/{pid}/confirm", {"payment_method": {"token": "pm_card_visa"}}
        )
        assert confirmed.status_code == 200, confirmed.text
        assert confirmed.json()["status"] == "CAPTURED"
        same(confirmed, await api.get(f"/api/v1/payments/{pid}"))

    async def test_an_alias_shares_the_canonical_idempotency_scope(self, api: Api) -> None:
        order = await api.order()
        body = {"order_id": order, "amount": "100.00", "currency": "USD"}
        key = new_key()
        first = await api.post("/api/v1/payments", body, idem=key)
        again = await api.post("/api/payments", body, idem=key)
        assert first.status_code == 201
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.content == first.content
        reused = await api.post("/api/payments", {**body, "amount": "1.00"}, idem=key)
        assert_problem(reused, 422, "idempotency_key_reused")

    async def test_refund(self, api: Api) -> None:
        pid = (await captured(api))["payment_id"]
        alias = await api.post(f"/api/payments/{pid}/refund", {"amount": "10.00"}, key=ADMIN_KEY)
        assert alias.status_code == 201, alias.text
        canonical = await api.post(
            f"/api/v1/payments/{pid}/refund", {"amount": "10.00"}, key=ADMIN_KEY
        )
        assert canonical.status_code == 201
        assert alias.json().keys() == canonical.json().keys()
        assert (await api.payment_state(pid))["refunded_amount"] == "20.00"
        assert_problem(
            await api.post(f"/api/payments/{pid}/refund", {}, key=SERVICE_KEY), 403, "forbidden"
        )

    async def test_reconcile_and_ready(self, api: Api) -> None:
        alias = await api.post("/api/payments/reconcile", key=ADMIN_KEY)
        assert alias.status_code == 202, alias.text
        assert set(alias.json()) == {"run_id"}
        alias = await api.client.get("/health/ready")
        canonical = await api.client.get("/healthz/ready")
        assert alias.status_code == canonical.status_code == 200
        assert alias.json()["checks"] == canonical.json()["checks"]  # the relay's age moves on

    async def test_webhooks(self, api: Api) -> None:
        payment = await captured(api)
        event = mock_event("payment.captured", payment["provider_payment_id"], "100.00")
        body, signed = sign_mock(event)
        first = await api.client.post("/api/payments/webhooks/mock", content=body, headers=signed)
        assert first.json() == {"received": True, "duplicate": False}
        for path in ("/api/v1/payments/webhook/mock", "/api/v1/webhooks/mock"):
            again = await api.client.post(path, content=body, headers=signed)
            assert again.status_code == 200
            assert again.json() == {"received": True, "duplicate": True}
        forged = await api.client.post(
            "/api/v1/payments/webhook/mock", content=body + b" ", headers=signed
        )
        assert_problem(forged, 401, "invalid_signature")


class TestSeed003:
    async def test_capture_and_void_under_the_order(self, api: Api) -> None:
        held = await authorized(api)
        path = f"/api/v1/admin/orders/{held['order_id']}/payments/{held['payment_id']}"
        # Under /api/v1/admin/: admin only, though the canonical routes serve the service role.
        refused = await api.post(f"{path}/capture", {"amount": "40.00"})
        assert_problem(refused, 403, "forbidden")
        capture = await api.post(f"{path}/capture", {"amount": "40.00"}, key=ADMIN_KEY)
        assert capture.status_code == 200, capture.text
        assert capture.json()["status"] == "CAPTURED"
        assert capture.json()["captured_amount"] == "40.00"
        same(capture, await api.get(f"/api/v1/payments/{held['payment_id']}"))

        other = await authorized(api)
        path = f"/api/v1/admin/orders/{other['order_id']}/payments/{other['payment_id']}"
        assert_problem(await api.post(f"{path}/void", {"reason": "x"}), 403, "forbidden")
        void = await api.post(f"{path}/void", {"reason": "customer asked"}, key=ADMIN_KEY)
        assert void.status_code == 200, void.text
        assert void.json()["status"] == "CANCELED"

    async def test_a_payment_of_another_order_is_not_found(self, api: Api) -> None:
        held = await authorized(api)
        stranger = await api.order()
        path = f"/api/v1/admin/orders/{stranger}/payments/{held['payment_id']}/capture"
        assert_problem(await api.post(path, key=ADMIN_KEY), 404, "not_found")
        assert_problem(await api.client.post(path), 401, "unauthenticated")
        assert (await api.payment_state(held["payment_id"]))["status"] == "AUTHORIZED"

    async def test_refund_under_the_order(self, api: Api) -> None:
        payment = await captured(api)
        path = f"/api/v1/admin/orders/{payment['order_id']}/payments/{payment['payment_id']}"
        refund = await api.post(f"{path}/refund", {"amount": "5.00"}, key=ADMIN_KEY)
        assert refund.status_code == 201, refund.text
        assert refund.json()["status"] == "SUCCEEDED"
        assert_problem(await api.post(f"{path}/refund", {}), 403, "forbidden")

    async def test_authorize_creates_and_confirms_a_held_payment(self, api: Api) -> None:
        order = await api.order()
        key = new_key()
        path = f"/api/v1/checkout/orders/{order}/payments/authorize"
        body = {"payment_method": {"token": "pm_card_visa"}}
        held = await api.post(path, body, idem=key)
        assert held.status_code == 200, held.text
        assert held.json()["status"] == "AUTHORIZED"
        assert held.json()["amount"] == "100.00"
        same(held, await api.get(f"/api/v1/payments/{held.json()['payment_id']}"))
        replay = await api.post(path, body, idem=key)
        assert replay.content == held.content
        assert replay.headers["idempotent-replayed"] == "true"
        assert len((await api.get(f"/api/v1/orders/{order}/payments")).json()["data"]) == 1

    async def test_submit_payment_captures_or_answers_the_decline(self, api: Api) -> None:
        order = await api.order()
        paid = await api.post(
            f"/api/v1/checkout/orders/{order}/submit-payment",
            {"payment_method": {"token": "pm_card_visa"}},
        )
        assert paid.status_code == 200, paid.text
        assert paid.json()["status"] == "CAPTURED"
        assert (await api.order_state(order))["status"] == "PAID"

        declined_order = await api.order()
        declined = await api.post(
            f"/api/v1/checkout/orders/{declined_order}/submit-payment",
            {"payment_method": {"token": "pm_card_chargeDeclined"}},
        )
        problem = assert_problem(declined, 402, "card_declined")
        assert problem["payment"]["status"] == "FAILED"

    async def test_authorize_refuses_what_create_refuses(self, api: Api) -> None:
        order = await api.order()
        path = f"/api/v1/checkout/orders/{order}/payments/authorize"
        assert_problem(await api.post(path, {"amount": "1.00"}), 422, "amount_mismatch")
        assert_problem(
            await api.post("/api/v1/checkout/orders/nope/payments/authorize", {}), 404, "not_found"
        )
        missing = await api.client.post(path, json={}, headers=headers(SERVICE_KEY))
        assert_problem(missing, 400, "idempotency_key_missing")


class TestSeed004:
    async def test_the_newest_payment_of_an_order(self, api: Api) -> None:
        payment = await captured(api)
        alias = await api.get(f"/payments/{payment['order_id']}", key=ADMIN_KEY)
        assert alias.status_code == 200, alias.text
        canonical = await api.get(f"/api/v1/orders/{payment['order_id']}/payments")
        assert alias.json() == canonical.json()["data"][0]
        assert_problem(await api.get(f"/payments/{payment['order_id']}"), 403, "forbidden")
        assert_problem(
            await api.get(f"/payments/{payment['order_id']}", key=CUSTOMER_KEY), 404, "not_found"
        )
        assert_problem(
            await api.get(f"/payments/{await api.order()}", key=ADMIN_KEY), 404, "not_found"
        )


class TestDeprecated:
    async def test_every_alias_is_deprecated_in_the_document(self, api: Api) -> None:
        paths = (await api.client.get("/openapi.json")).json()["paths"]
        aliases = [
            "/api/v1/payments/webhook/{provider}",
            "/api/payments",
            "/api/payments/{payment_id}",
            "/api/payments/{payment_id}/confirm",
            "/api/payments/{payment_id}/refund",
            "/api/payments/reconcile",
            "/api/payments/webhooks/{provider}",
            "/health/ready",
            "/api/v1/admin/orders/{order_id}/payments/{payment_id}/capture",
            "/api/v1/admin/orders/{order_id}/payments/{payment_id}/void",
            "/api/v1/admin/orders/{order_id}/payments/{payment_id}/refund",
            "/api/v1/checkout/orders/{order_id}/payments/authorize",
            "/api/v1/checkout/orders/{order_id}/submit-payment",
            "/payments/{order_id}",
        ]
        for path in aliases:
            for op in paths[path].values():
                assert op["deprecated"] is True, path
        canonical = paths["/api/v1/payments/{payment_id}/confirm"]["post"]
        assert "deprecated" not in canonical
