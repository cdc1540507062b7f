"""Who may do what, request ids and problem documents, idempotency headers, listing and the
operational endpoints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, SERVICE_KEY, headers, new_key
from tests.support.asgi import asgi_client
from tillpoint.bootstrap import Container
from tillpoint.entrypoints.api.app import create_app

ORDER = {"buyer_id": "b", "amount": "1.00", "currency": "USD"}


class TestAuthentication:
    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer nope-not-a-key", "Basic dXNlcjpwYXNz", "Bearer ", SERVICE_KEY],
    )
    async def test_no_or_an_unknown_token_is_401(
        self, client: httpx.AsyncClient, authorization: str | None
    ) -> None:
        sent = {"Idempotency-Key": new_key()}
        if authorization is not None:
            sent["Authorization"] = authorization
        for response in (
            await client.get("/api/v1/orders/anything", headers=sent),
            await client.post(
                "/api/v1/orders", json={"order_id": f"o-{new_key()}", **ORDER}, headers=sent
            ),
        ):
            assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"] == "Bearer"

    async def test_the_service_role_may_not_refund_or_list(self, api: Api) -> None:
        paid = await api.confirmed()
        refund = await api.post(f"/api/v1/payments/{paid['payment_id']}/refund", {})
        assert_problem(refund, 403, "forbidden")
        assert (await api.payment_state(paid["payment_id"]))["status"] == "CAPTURED"
        assert_problem(await api.get("/api/v1/payments"), 403, "forbidden")
        ledger = await api.get(f"/api/v1/admin/orders/{paid['order_id']}/payments")
        assert_problem(ledger, 403, "forbidden")

    async def test_admin_may_do_what_the_service_does(self, api: Api) -> None:
        order_id = f"ord-{new_key()}"
        response = await api.post("/api/v1/orders", {"order_id": order_id, **ORDER}, key=ADMIN_KEY)
        assert response.status_code == 201, response.text


class TestCustomer:
    async def test_reads_its_own_order_and_payment(self, api: Api) -> None:
        paid = await api.confirmed()  # bought by buyer-1, the customer key's subject
        order = await api.get(f"/api/v1/orders/{paid['order_id']}", key=CUSTOMER_KEY)
        assert order.status_code == 200, order.text
        assert order.json()["status"] == "PAID"
        payment = await api.get(f"/api/v1/payments/{paid['payment_id']}", key=CUSTOMER_KEY)
        assert payment.status_code == 200, payment.text
        listed = await api.get(f"/api/v1/orders/{paid['order_id']}/payments", key=CUSTOMER_KEY)
        assert [p["payment_id"] for p in listed.json()["data"]] == [paid["payment_id"]]

    async def test_another_buyers_order_and_payment_are_404(self, api: Api) -> None:
        order_id = await api.order(buyer_id="buyer-2")
        created = await api.payment(order_id)
        for path in (
            f"/api/v1/orders/{order_id}",
            f"/api/v1/orders/{order_id}/payments",
            f"/api/v1/payments/{created['payment_id']}",
        ):
            assert_problem(await api.get(path, key=CUSTOMER_KEY), 404, "not_found")

    async def test_anything_else_is_404_not_403(self, api: Api) -> None:
        paid = await api.confirmed()
        response = await api.post(
            "/api/v1/orders", {"order_id": f"o-{new_key()}", **ORDER}, key=CUSTOMER_KEY
        )
        assert_problem(response, 404, "not_found")
        void = await api.post(f"/api/v1/payments/{paid['payment_id']}/void", key=CUSTOMER_KEY)
        assert_problem(void, 404, "not_found")
        events = await api.get(f"/api/v1/payments/{paid['payment_id']}/events", key=CUSTOMER_KEY)
        assert_problem(events, 404, "not_found")


class TestRequestIds:
    async def test_a_sent_request_id_is_echoed_on_success_and_error(
        self, client: httpx.AsyncClient
    ) -> None:
        ok = await client.get("/healthz", headers={"X-Request-ID": "trace-123"})
        assert ok.headers["x-request-id"] == "trace-123"
        failed = await client.get(
            "/api/v1/orders/none", headers={**headers(SERVICE_KEY), "X-Request-ID": "trace-456"}
        )
        body = assert_problem(failed, 404, "not_found")
        assert body["request_id"] == "trace-456"

    async def test_a_request_id_is_generated_when_none_is_sent(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await client.get("/healthz")
        second = await client.get("/api/v1/orders/none")
        assert first.headers["x-request-id"]
        assert second.headers["x-request-id"]
        assert first.headers["x-request-id"] != second.headers["x-request-id"]
        assert second.json()["request_id"] == second.headers["x-request-id"]

    async def test_a_correlation_id_is_echoed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/healthz", headers={"X-Correlation-ID": "corr-1"})
        assert response.headers["x-correlation-id"] == "corr-1"

    async def test_an_unexpected_error_is_a_500_problem_with_the_ids(
        self, container: Container
    ) -> None:
        app = create_app(container=container, run_workers=False)

        @app.get("/boom")
        async def boom() -> None:
            raise RuntimeError("a bug")

        async with asgi_client(app=app) as http:
            response = await http.get("/boom", headers={"X-Request-ID": "trace-500"})
        body = assert_problem(response, 500, "internal_error")
        assert body["request_id"] == "trace-500"
        assert "a bug" not in response.text

    async def test_an_unknown_route_is_a_problem_document(self, client: httpx.AsyncClient) -> None:
        assert_problem(await client.get("/api/v1/nowhere"), 404, "not_found")


class TestIdempotencyHeader:
    async def test_a_post_without_a_key_is_400(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/api/v1/orders",
            json={"order_id": f"o-{new_key()}", **ORDER},
            headers=headers(SERVICE_KEY),
        )
        assert_problem(response, 400, "idempotency_key_missing")

    async def test_a_256_character_key_is_400_and_255_is_fine(self, api: Api) -> None:
        order_id = f"o-{new_key()}"
        too_long = await api.post("/api/v1/orders", {"order_id": order_id, **ORDER}, idem="k" * 256)
        assert_problem(too_long, 400, "idempotency_key_invalid")
        longest = await api.post("/api/v1/orders", {"order_id": order_id, **ORDER}, idem="k" * 255)
        assert longest.status_code == 201, longest.text

    async def test_the_body_key_works_for_create_payment(self, api: Api) -> None:
        order_id = await api.order()
        body = {
            "order_id": order_id,
            "amount": "100.00",
            "currency": "USD",
            "idempotency_key": new_key(),
        }
        first = await api.client.post("/api/v1/payments", json=body, headers=headers(SERVICE_KEY))
        assert first.status_code == 201, first.text
        again = await api.client.post("/api/v1/payments", json=body, headers=headers(SERVICE_KEY))
        assert again.status_code == 201
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == first.content


class TestListPayments:
    async def test_filters_and_cursor_pages_newest_first(self, api: Api) -> None:
        since = api.container.deps.clock.now()
        captured = [(await api.confirmed())["payment_id"] for _ in range(3)]
        held = (await api.confirmed(capture_method="manual"))["payment_id"]
        newest_first = [held, *reversed(captured)]

        def window(**params: object) -> dict[str, object]:
            return {"created_from": since.isoformat(), **params}

        seen: list[str] = []
        cursor: str | None = None
        for _ in range(10):
            params = window(limit=1, **({"cursor": cursor} if cursor else {}))
            page = await api.get("/api/v1/payments", key=ADMIN_KEY, **params)
            assert page.status_code == 200, page.text
            assert len(page.json()["data"]) <= 1
            seen += [p["payment_id"] for p in page.json()["data"]]
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == newest_first

        full = await api.get("/api/v1/payments", key=ADMIN_KEY, **window(limit=100))
        assert [p["payment_id"] for p in full.json()["data"]] == newest_first
        assert full.json()["next_cursor"] is None

        authorized = await api.get("/api/v1/payments", key=ADMIN_KEY, **window(status="AUTHORIZED"))
        assert [p["payment_id"] for p in authorized.json()["data"]] == [held]
        one_order = await api.get(
            "/api/v1/payments", key=ADMIN_KEY, order_id=(await api.payment_state(held))["order_id"]
        )
        assert [p["payment_id"] for p in one_order.json()["data"]] == [held]
        mock = await api.get("/api/v1/payments", key=ADMIN_KEY, **window(provider="mock"))
        assert len(mock.json()["data"]) == 4
        other = await api.get("/api/v1/payments", key=ADMIN_KEY, **window(provider="stripe"))
        assert other.json()["data"] == []
        future = await api.get(
            "/api/v1/payments",
            key=ADMIN_KEY,
            created_from=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
        )
        assert future.json()["data"] == []
        before = await api.get(
            "/api/v1/payments", key=ADMIN_KEY, **window(created_to=since.isoformat())
        )
        assert before.json()["data"] == []

    @pytest.mark.parametrize("limit", [0, 101, -1, "many"])
    async def test_a_limit_outside_1_to_100_is_422(self, api: Api, limit: object) -> None:
        response = await api.get("/api/v1/payments", key=ADMIN_KEY, limit=limit)
        assert_problem(response, 422, "validation_error")


class TestOperations:
    async def test_health(self, client: httpx.AsyncClient) -> None:
        alive = await client.get("/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "UP"})
        ready = await client.get("/healthz/ready")
        assert ready.status_code == 200
        assert ready.json()["status"] == "UP"
        assert ready.json()["checks"]["database"] == "UP"
        assert "broker" in ready.json()["checks"]

    async def test_metrics_count_created_payments(self, api: Api) -> None:
        await api.payment(await api.order())
        response = await api.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'payment_create_total{status="created"}' in response.text

    async def test_openapi_describes_the_api(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/openapi.json")
        assert response.status_code == 200
        paths = response.json()["paths"]
        for path in (
            "/api/v1/orders",
            "/api/v1/payments",
            "/api/v1/payments/{payment_id}/confirm",
            "/api/v1/payments/{payment_id}/refund",
            "/api/v1/admin/orders/{order_id}/payments",
        ):
            assert path in paths
        docs = await client.get("/docs")
        assert docs.status_code == 200
