"""No input makes a 500: hostile strings, amounts, timestamps and sizes are refused at the edge
with the documented problem codes (issue 9, items 7-9, 11 and 12), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key, settings_for
from tests.support.asgi import asgi_client
from tests.support.clock import MovableClock
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.providers.mock import CARDS
from tillpoint.bootstrap import Container, build
from tillpoint.domain.mock_cards import TEST_CARDS
from tillpoint.entrypoints.api.app import create_app
from tillpoint.entrypoints.serving import bounded_protocol, listening_socket

NUL = "\x00"
HUGE = "9" * 5000  # past Python's 4300-digit int conversion limit


async def _captured(api: Api, amount: str = "10.00", **kw: Any) -> dict[str, Any]:
    confirmed = await api.confirmed(amount, **kw)
    assert confirmed["status"] in ("CAPTURED", "AUTHORIZED"), confirmed
    return confirmed


# -- item 7: NUL and other control characters ------------------------------------------------------


class TestControlCharacters:
    @pytest.mark.parametrize(
        "path",
        [
            "/api/v1/payments/pay_%00x",
            "/api/v1/payments/pay_%00x/events",
            "/api/v1/orders/ord%00x",
            "/api/v1/orders/ord%00x/payments",
            "/api/v1/orders/ord%01x",
            "/api/v1/admin/orders/ord%00x/payments",
            "/api/v1/payments/pay_%ED%A0%80",  # a lone surrogate, percent-encoded
        ],
    )
    async def test_a_path_id_with_a_control_character_is_not_found(
        self, api: Api, path: str
    ) -> None:
        assert_problem(await api.get(path, key=ADMIN_KEY), 404, "not_found")

    @pytest.mark.parametrize("verb", ["confirm", "capture", "void", "refund", "mock/complete"])
    async def test_a_command_on_a_path_id_with_nul_is_not_found(self, api: Api, verb: str) -> None:
        response = await api.post(
            f"/api/v1/payments/pay_%00/{verb}", {"result": "SUCCESS"}, key=ADMIN_KEY
        )
        assert_problem(response, 404, "not_found")

    async def test_a_webhook_replay_of_an_id_with_nul_is_not_found(self, api: Api) -> None:
        response = await api.post(
            "/api/v1/admin/webhooks/events/whe_%00/replay", None, key=ADMIN_KEY
        )
        assert_problem(response, 404, "not_found")

    @pytest.mark.parametrize(
        ("path", "param"),
        [
            ("/api/v1/payments", "order_id"),
            ("/api/v1/payments", "provider"),
            ("/api/v1/payments", "cursor"),
            ("/api/v1/payments", "status"),
            ("/api/v1/admin/webhooks/events", "provider"),
            ("/api/v1/admin/webhooks/events", "cursor"),
        ],
    )
    async def test_a_query_filter_with_nul_is_422(self, api: Api, path: str, param: str) -> None:
        response = await api.get(path, key=ADMIN_KEY, **{param: f"a{NUL}b"})
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"] == [{"loc": ["query", param], "msg": problem["errors"][0]["msg"]}]

    @pytest.mark.parametrize("field", ["token", "brand", "holder_name"])
    async def test_a_payment_method_string_with_nul_is_422(self, api: Api, field: str) -> None:
        order_id = await api.order()
        method = {"token": "pm_card_visa", "brand": "visa", field: f"a{NUL}b"}
        response = await api.post(
            "/api/v1/payments",
            {"order_id": order_id, "amount": "100.00", "currency": "USD", "payment_method": method},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["loc"][:3] == ["body", "payment_method", field]
        assert (await api.order_state(order_id))["status"] == "PAYMENT_PENDING"
        listed = await api.get(f"/api/v1/orders/{order_id}/payments")
        assert listed.json()["data"] == []

    @pytest.mark.parametrize("value", [f"b{NUL}", "b\x1b[31m", "b\ud800", "b\n"])
    async def test_a_buyer_id_with_a_control_character_is_422_and_not_stored(
        self, api: Api, value: str
    ) -> None:
        order_id = f"ord-{new_key()}"
        body = {"order_id": order_id, "buyer_id": value, "amount": "1.00", "currency": "USD"}
        response = await api.client.post(
            "/api/v1/orders",
            content=json.dumps(body),  # `\ud800` survives only as a JSON escape
            headers={**headers(SERVICE_KEY, new_key()), "content-type": "application/json"},
        )
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["loc"] == ["body", "buyer_id"]
        assert_problem(await api.get(f"/api/v1/orders/{order_id}"), 404, "not_found")

    async def test_a_refund_reason_with_nul_is_422_and_nothing_is_refunded(self, api: Api) -> None:
        paid = await _captured(api)
        response = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund",
            {"reason": f"duplicate{NUL}"},
            key=ADMIN_KEY,
        )
        assert_problem(response, 422, "validation_error")
        assert (await api.payment_state(paid["payment_id"]))["refunded_amount"] == "0.00"

    async def test_a_refund_reason_may_hold_line_breaks(self, api: Api) -> None:
        paid = await _captured(api)
        response = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund",
            {"reason": "customer asked\nby phone\tticket 7"},
            key=ADMIN_KEY,
        )
        assert response.status_code == 201, response.text
        assert response.json()["reason"] == "customer asked\nby phone\tticket 7"

    @pytest.mark.parametrize(
        ("field", "value"),
        [("provider", f"mock{NUL}"), ("snapshot_id", f"snap_{NUL}")],
    )
    async def test_a_payment_string_with_nul_is_422(self, api: Api, field: str, value: str) -> None:
        order_id = await api.order()
        body = {"order_id": order_id, "amount": "100.00", "currency": "USD", field: value}
        assert_problem(await api.post("/api/v1/payments", body), 422, "validation_error")

    async def test_a_void_reason_and_a_quote_variant_with_nul_are_422(self, api: Api) -> None:
        order_id = await api.order()
        created = await api.payment(order_id)
        void = await api.post(f"/api/v1/payments/{created['payment_id']}/void", {"reason": NUL})
        assert_problem(void, 422, "validation_error")
        quote = await api.post(
            "/api/v1/checkout/quote",
            {
                "order_id": order_id,
                "items": [{"variant_id": f"v{NUL}", "quantity": 1, "unit_amount": "100.00"}],
            },
        )
        assert_problem(quote, 422, "validation_error")


# -- item 8: amounts too long to parse or too large to store ---------------------------------------


class TestHugeAmounts:
    async def test_capture_of_a_5000_digit_amount_is_422(self, api: Api) -> None:
        held = await _captured(api, capture_method="manual")
        response = await api.post(
            f"/api/v1/payments/{held['payment_id']}/capture", {"amount": HUGE}
        )
        assert_problem(response, 422, "validation_error")
        assert (await api.payment_state(held["payment_id"]))["status"] == "AUTHORIZED"

    async def test_refund_of_a_5000_digit_amount_is_422(self, api: Api) -> None:
        paid = await _captured(api)
        response = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund", {"amount": HUGE}, key=ADMIN_KEY
        )
        assert_problem(response, 422, "validation_error")

    @pytest.mark.parametrize("amount", [HUGE, f"1.{'0' * 5000}", "1" * 40])
    async def test_patching_an_order_to_a_huge_amount_is_422(self, api: Api, amount: str) -> None:
        order_id = await api.order()
        response = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": amount}, headers=headers(SERVICE_KEY)
        )
        assert_problem(response, 422, "validation_error")
        assert (await api.order_state(order_id))["amount"] == "100.00"

    async def test_an_order_of_a_huge_amount_is_422(self, api: Api) -> None:
        body = {"order_id": f"o-{new_key()}", "buyer_id": "b", "amount": HUGE, "currency": "USD"}
        assert_problem(await api.post("/api/v1/orders", body), 422, "validation_error")

    @pytest.mark.parametrize("field", ["unit_amount", "shipping_amount"])
    async def test_a_quote_with_a_5000_digit_amount_is_422(self, api: Api, field: str) -> None:
        order_id = await api.order()
        item = {"variant_id": "v1", "quantity": 1, "unit_amount": "1.00"}
        body: dict[str, Any] = {"order_id": order_id, "items": [item]}
        if field == "unit_amount":
            item["unit_amount"] = HUGE
        else:
            body["shipping_amount"] = HUGE
        assert_problem(await api.post("/api/v1/checkout/quote", body), 422, "validation_error")

    async def test_a_quote_whose_total_overflows_64_bits_is_422(self, api: Api) -> None:
        order_id = await api.order()
        big = "10000000000000.00"  # MAX_MINOR in cents: each line alone is valid
        items = [
            {"variant_id": f"v{i}", "quantity": 10_000, "unit_amount": big} for i in range(500)
        ]
        response = await api.post("/api/v1/checkout/quote", {"order_id": order_id, "items": items})
        problem = assert_problem(response, 422, "validation_error")
        assert "too large" in problem["detail"]

    async def test_a_quote_just_beyond_the_largest_amount_is_422(self, api: Api) -> None:
        order_id = await api.order()
        items = [{"variant_id": "v", "quantity": 2, "unit_amount": "10000000000000.00"}]
        response = await api.post(
            "/api/v1/checkout/quote",
            {"order_id": order_id, "items": items, "shipping_amount": "1.00"},
        )
        assert_problem(response, 422, "validation_error")


# -- item 9: timestamps ----------------------------------------------------------------------------


class TestTimestampFilters:
    @pytest.mark.parametrize(
        ("param", "value"),
        [
            ("created_from", "0001-01-01T00:00:00+03:04"),
            ("created_to", "9999-12-31T23:59:59-05:00"),
            ("created_to", "-1"),
            ("created_from", "1700000000"),
            ("created_from", "2026-11-23T10:30:00"),  # no time zone
            ("created_from", "2026-11-23"),
            ("created_to", "2026-13-01T00:00:00Z"),
            ("created_to", "now"),
        ],
    )
    async def test_a_bad_timestamp_is_422(self, api: Api, param: str, value: str) -> None:
        response = await api.get("/api/v1/payments", key=ADMIN_KEY, **{param: value})
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["loc"] == ["query", param]

    async def test_an_rfc3339_window_with_an_offset_selects_by_the_instant(self, api: Api) -> None:
        order_id = await api.order()
        created = await api.payment(order_id)
        at = created["created_at"]  # RFC 3339 UTC with a Z
        response = await api.get(
            "/api/v1/payments",
            key=ADMIN_KEY,
            order_id=order_id,
            created_from="0001-01-01T00:00:00Z",
            created_to="9999-12-31T23:59:59+00:00",
        )
        assert response.status_code == 200, response.text
        assert [p["payment_id"] for p in response.json()["data"]] == [created["payment_id"]]
        before = await api.get("/api/v1/payments", key=ADMIN_KEY, order_id=order_id, created_to=at)
        assert before.json()["data"] == []


# -- item 11: body and header sizes ----------------------------------------------------------------


class TestSizeLimits:
    async def test_a_body_over_1_mib_is_413_from_its_content_length(self, api: Api) -> None:
        response = await api.client.post(
            "/api/v1/webhooks/mock",
            content=b"x" * (1024 * 1024 + 1),
            headers={"content-type": "application/json"},
        )
        problem = assert_problem(response, 413, "payload_too_large")
        assert "1048576" in problem["detail"]

    async def test_a_streamed_body_over_the_limit_is_413_without_reading_it_all(
        self, api: Api
    ) -> None:
        sent = 0

        async def chunks() -> Any:
            nonlocal sent
            for _ in range(64):  # 64 MiB offered, no Content-Length
                sent += 1
                yield b"x" * (1024 * 1024)

        response = await api.client.post(
            "/api/v1/orders",
            content=chunks(),
            headers={**headers(SERVICE_KEY, new_key()), "content-type": "application/json"},
        )
        assert_problem(response, 413, "payload_too_large")
        assert sent <= 3

    async def test_a_body_under_the_limit_is_read(self, api: Api) -> None:
        order_id = f"ord-{new_key()}"
        body = json.dumps(
            {"order_id": order_id, "buyer_id": "b", "amount": "1.00", "currency": "USD"}
        )
        padded = body[:-1] + " " * (1024 * 1024 - len(body) - 1) + "}"
        response = await api.client.post(
            "/api/v1/orders",
            content=padded.encode(),
            headers={**headers(SERVICE_KEY, new_key()), "content-type": "application/json"},
        )
        assert response.status_code == 201, response.text

    async def test_headers_over_the_limit_are_431(self, api: Api) -> None:
        response = await api.client.get(
            "/api/v1/orders/anything",
            headers={**headers(SERVICE_KEY), "x-padding": "a" * (33 * 1024)},
        )
        assert_problem(response, 431, "headers_too_large")

    async def test_the_limits_are_settings(self, database_url: str) -> None:
        settings = settings_for(database_url, max_body_bytes=2048, max_header_bytes=8192)
        container = build(settings, clock=MovableClock())
        try:
            async with asgi_client(container) as http:
                big_body = await http.post("/api/v1/webhooks/mock", content=b"{}" + b" " * 2048)
                assert_problem(big_body, 413, "payload_too_large")
                big_headers = await http.get("/healthz", headers={"x-pad": "a" * 8200})
                assert_problem(big_headers, 431, "headers_too_large")
                fine = await http.get("/healthz", headers={"x-pad": "a" * 4000})
                assert fine.status_code == 200, fine.text
        finally:
            await container.aclose()


class TestServerHeadLimit:
    """The HTTP server itself stops reading a request head past the limit (httptools has none),
    verified over a real socket against uvicorn with the protocol `tillpoint serve` uses."""

    @staticmethod
    async def _exchange(port: int, head: bytes) -> bytes:
        """Sends `head` in pieces while reading, as a client does, until the server answers."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)

        async def send() -> None:
            with contextlib.suppress(ConnectionError):
                for start in range(0, len(head), 64 * 1024):
                    writer.write(head[start : start + 64 * 1024])
                    await writer.drain()

        sending = asyncio.create_task(send())
        try:
            return await asyncio.wait_for(reader.read(), timeout=10)
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sending
            writer.close()

    async def test_a_huge_header_is_431_before_it_is_read(self, container: Container) -> None:
        app = create_app(container=container, run_workers=False)
        sock = listening_socket("127.0.0.1", 0, reuse_port=False)
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, http=bounded_protocol(8192), lifespan="on", log_config=None, access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            huge = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: " + b"a" * (4 * 1024 * 1024)
            answer = await self._exchange(port, huge)  # never finished: no CRLF CRLF
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:200]
            head, _, body = rest.partition(b"\r\n\r\n")
            assert b"content-type: application/problem+json" in head
            problem = json.loads(body)
            assert (problem["status"], problem["code"]) == (431, "headers_too_large")

            fine = b"GET /healthz HTTP/1.1\r\nhost: t\r\nx-pad: " + b"a" * 4000
            answer = await self._exchange(port, fine + b"\r\nconnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        finally:
            server.should_exit = True
            await task


# -- item 12: contract gaps ------------------------------------------------------------------------


class TestContractGaps:
    async def test_the_void_reason_is_kept_in_the_event_and_the_message(self, api: Api) -> None:
        held = await _captured(api, capture_method="manual")
        pid = held["payment_id"]
        response = await api.post(
            f"/api/v1/payments/{pid}/void", {"reason": "customer changed mind"}
        )
        assert response.status_code == 200, response.text
        events = (await api.get(f"/api/v1/payments/{pid}/events")).json()["data"]
        voided = [e for e in events if e["event_type"] == "VOIDED"]
        assert voided
        assert voided[0]["payload"]["reason"] == "customer changed mind"
        canceled = [body for key, _, body in await api.outbox(pid) if key == "payment.canceled"]
        assert canceled
        assert canceled[0]["reason"] == "customer changed mind"
        op = await api.row(t.payment_transactions, payment_id=pid, kind="VOID")
        assert op["reason"] == "customer changed mind"

    async def test_the_void_reason_of_an_unsent_payment_is_kept_too(self, api: Api) -> None:
        created = await api.payment(await api.order())
        pid = created["payment_id"]
        response = await api.post(f"/api/v1/payments/{pid}/void", {"reason": "duplicate order"})
        assert response.status_code == 200, response.text
        canceled = [body for key, _, body in await api.outbox(pid) if key == "payment.canceled"]
        assert canceled
        assert canceled[0]["reason"] == "duplicate order"

    async def test_refunding_a_fully_refunded_payment_exceeds_the_refundable(
        self, api: Api
    ) -> None:
        paid = await _captured(api)
        path = f"/api/v1/payments/{paid['payment_id']}/refund"
        assert (await api.post(path, None, key=ADMIN_KEY)).status_code == 201
        assert (await api.payment_state(paid["payment_id"]))["status"] == "REFUNDED"
        again = await api.post(path, {"amount": "1.00"}, key=ADMIN_KEY)
        assert_problem(again, 409, "amount_exceeds_refundable")
        assert_problem(await api.post(path, None, key=ADMIN_KEY), 409, "amount_exceeds_refundable")

    @pytest.mark.parametrize("status", ["captured", "PAID", "nope"])
    async def test_listing_by_an_unknown_status_is_422(self, api: Api, status: str) -> None:
        response = await api.get("/api/v1/payments", key=ADMIN_KEY, status=status)
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["loc"] == ["query", "status"]

    async def test_listing_by_a_known_status_still_filters(self, api: Api) -> None:
        paid = await _captured(api)
        response = await api.get(
            "/api/v1/payments", key=ADMIN_KEY, status="CAPTURED", order_id=paid["order_id"]
        )
        assert response.status_code == 200, response.text
        assert [p["payment_id"] for p in response.json()["data"]] == [paid["payment_id"]]

    @pytest.mark.parametrize(
        ("path", "content"),
        [
            ("/api/v1/orders", b'{"order_id": '),
            ("/api/v1/orders", b"\xff\xfe not utf-8"),
            ("/api/v1/payments/pay_x/confirm", b"{bad"),
            ("/api/v1/checkout/quote", b"[1,"),
        ],
    )
    async def test_malformed_json_is_400_malformed_json(
        self, api: Api, path: str, content: bytes
    ) -> None:
        response = await api.client.post(
            path,
            content=content,
            headers={**headers(SERVICE_KEY, new_key()), "content-type": "application/json"},
        )
        assert_problem(response, 400, "malformed_json")

    async def test_malformed_json_is_not_stored_under_its_key(self, api: Api) -> None:
        key, order_id = new_key(), f"ord-{new_key()}"
        hdrs = {**headers(SERVICE_KEY, key), "content-type": "application/json"}
        bad = await api.client.post("/api/v1/orders", content=b"{", headers=hdrs)
        assert_problem(bad, 400, "malformed_json")
        body = {"order_id": order_id, "buyer_id": "b", "amount": "1.00", "currency": "USD"}
        assert (await api.post("/api/v1/orders", body, idem=key)).status_code == 201

    @pytest.mark.parametrize(
        ("method", "path", "allow"),
        [
            ("DELETE", "/api/v1/orders", {"POST"}),
            ("PUT", "/api/v1/payments/pay_1", {"GET"}),
            ("GET", "/api/v1/payments/pay_1/capture", {"POST"}),
            # Two routes share this path: `Allow` names the methods of both.
            ("OPTIONS", "/api/v1/orders/ord-1", {"GET", "PATCH"}),
            ("DELETE", "/api/v1/payments", {"GET", "POST"}),
            ("PUT", "/api/v1/payments/reconcile", {"POST"}),
        ],
    )
    async def test_405_names_the_allowed_methods(
        self, api: Api, method: str, path: str, allow: set[str]
    ) -> None:
        response = await api.client.request(method, path, headers=headers(SERVICE_KEY))
        assert_problem(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["allow"].split(",")} - {"HEAD"} == allow

    async def test_an_unknown_test_card_is_refused_at_create(self, api: Api) -> None:
        order_id = await api.order()
        response = await api.post(
            "/api/v1/payments",
            {
                "order_id": order_id,
                "amount": "100.00",
                "currency": "USD",
                "payment_method": {"token": "pm_card_chargeDecliend"},
            },
        )
        problem = assert_problem(response, 422, "validation_error")
        assert all(card in problem["detail"] for card in TEST_CARDS)
        assert (await api.get(f"/api/v1/orders/{order_id}/payments")).json()["data"] == []

    async def test_an_unknown_test_card_is_refused_at_confirm_before_the_provider(
        self, api: Api, container: Container
    ) -> None:
        created = await api.payment(await api.order())
        pid = created["payment_id"]
        response = await api.confirm(pid, {"payment_method": {"token": "pm_card_visaa"}})
        problem = assert_problem(response, 422, "validation_error")
        assert "pm_card_visa" in problem["detail"]
        state = await api.payment_state(pid)
        assert state["status"] == "INITIATED"
        async with container.engine.connect() as conn:
            ledger = t.mock_gateway_ledger
            effects = await conn.scalar(
                sa.select(sa.func.count()).select_from(ledger).where(ledger.c.payment_id == pid)
            )
            ops = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(t.payment_transactions)
                .where(t.payment_transactions.c.payment_id == pid)
            )
        assert (effects, ops) == (0, 0)
        # the corrected retry goes through
        fixed = await api.confirm(pid, {"payment_method": {"token": "pm_card_visa"}})
        assert fixed.status_code == 200, fixed.text

    def test_the_domain_knows_every_test_card_of_the_mock(self) -> None:
        assert set(TEST_CARDS) == {card for card in CARDS if card.startswith("pm_card_")}


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000 + b"]" * 100_000, b'"\\ud800"', b'{"a": "\\udfff"}', b"9" * 5000],
    ids=["deeply_nested", "lone_surrogate", "lone_surrogate_in_object", "5000_digits"],
)
async def test_a_hostile_body_on_a_route_that_takes_no_fields_is_no_500(
    api: Api, content: bytes
) -> None:
    """Routes that take no fields read their body all the same: a hostile one is refused as a
    client error, never a 500 (and never ignored)."""
    for path in ("/api/v1/payments/reconcile", "/api/v1/admin/webhooks/events/whe_x/replay"):
        response = await api.client.post(
            path,
            content=content,
            headers={**headers(ADMIN_KEY, new_key()), "content-type": "application/json"},
        )
        assert response.status_code in (400, 422), (path, response.text)
        assert response.json()["code"] in ("malformed_json", "validation_error"), response.text


async def test_nothing_here_answered_500(client: httpx.AsyncClient) -> None:
    """A smoke pass over the inputs above in one place, for a quick look at the whole edge."""
    hdrs = {**headers(ADMIN_KEY, new_key()), "content-type": "application/json"}
    for path in ("/api/v1/payments/%00", "/api/v1/orders/%00", "/api/v1/payments?cursor=%00"):
        response = await client.get(path, headers=hdrs)
        assert response.status_code < 500, (path, response.text)


@pytest.mark.parametrize("length", ["\u00b2", "-1", "1" * 40, "abc"])
async def test_a_strange_content_length_is_no_500(api: Api, length: str) -> None:
    """Not a number the guard can trust: left to the server and the body's own reading."""
    response = await api.client.post(
        "/api/v1/webhooks/mock",
        content=b"{}",
        headers=[
            (b"content-type", b"application/json"),
            (b"content-length", length.encode("latin-1")),
        ],
    )
    assert response.status_code < 500, response.text
