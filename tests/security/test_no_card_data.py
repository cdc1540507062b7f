"""A hostile workload: card numbers and CVCs thrown at every free-text field of the API. Each is
refused; then everything the service kept or said during the workload (every column of every
table, the log output, every response) is scanned, and holds no card number and no CVC.

Runs on SQLite and PostgreSQL (the `api` fixture). The database scan looks at the values the
workload added or changed, so rows other tests left in a shared database do not count.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog

from tests.api.conftest import Api
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers
from tests.security.scan import card_data, database_values, find_card_numbers, findings
from tests.support.flows import payment
from tests.webhooks.support import (
    deliver,
    mock_event,
    new_payment,
    process,
    sign_mock,
    stored,
)
from tillpoint.adapters.db.tables import webhook_events
from tillpoint.adapters.logging import processors, redact
from tillpoint.bootstrap import Container

CARDS: list[str | int] = [
    "4111111111111111",
    "4242 4242 4242 4242",
    "5555-5555-5555-4444",
    "378282246310005",
    378282246310005,  # as a JSON number
]
CVCS: dict[str, str] = {"cvc": "737", "cvv": "9731", "cvv2": "123", "security_code": "4321"}


def word(size: int = 12) -> str:
    """Letters only: ids and keys of this workload can never look like a card number."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(size))


def variants(card: str | int) -> list[str | int]:
    if isinstance(card, int):
        return [card]
    return [card, f"tok_{card}", f"paid with {card}, thanks"]


class Logs:
    """structlog lines rendered by the service's own chain (masking included) and stdlib
    records, both kept while the workload runs."""

    def __init__(self, caplog: pytest.LogCaptureFixture) -> None:
        self.stream = io.StringIO()
        self.caplog = caplog

    @property
    def text(self) -> str:
        return self.stream.getvalue() + "\n" + self.caplog.text


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    captured = Logs(caplog)
    saved = structlog.get_config()
    structlog.configure(
        processors=processors("json"),
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(captured.stream),
        cache_logger_on_first_use=False,
    )
    caplog.set_level(logging.INFO)
    try:
        yield captured
    finally:
        structlog.configure(**saved)


class Workload:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.client: httpx.AsyncClient = api.client
        self.responses: list[httpx.Response] = []

    async def post(self, path: str, body: Any, *, key: str = SERVICE_KEY) -> httpx.Response:
        response = await self.client.post(path, json=body, headers=headers(key, f"k-{word()}"))
        self.responses.append(response)
        return response

    async def send(
        self, method: str, path: str, body: Any, *, key: str = SERVICE_KEY
    ) -> httpx.Response:
        response = await self.client.request(
            method, path, json=body, headers=headers(key, f"k-{word()}")
        )
        self.responses.append(response)
        return response

    async def order(self, **extra_headers: str) -> str:
        order_id = f"ord-{word()}"
        body = {"order_id": order_id, "buyer_id": "buyer-1", "amount": "100.00", "currency": "USD"}
        response = await self.client.post(
            "/api/v1/orders", json=body, headers=headers(SERVICE_KEY, f"k-{word()}") | extra_headers
        )
        self.responses.append(response)
        assert response.status_code == 201, response.text
        return order_id

    async def payment(self, order_id: str, **extra: Any) -> dict[str, Any]:
        method = {
            "token": "pm_card_visa",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "holder_name": "Ada Lovelace",
        }
        body = {
            "order_id": order_id,
            "amount": "100.00",
            "currency": "USD",
            "payment_method": method,
            **extra,
        }
        response = await self.post("/api/v1/payments", body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def confirmed(self, **extra: Any) -> str:
        created = await self.payment(await self.order(), **extra)
        response = await self.post(f"/api/v1/payments/{created['payment_id']}/confirm", None)
        assert response.status_code == 200, response.text
        return str(created["payment_id"])


def hostile(
    fresh_order: str, initiated: str, captured: str, authorized: str
) -> list[tuple[str, str, Any, str]]:
    """`(method, path, body, api key)` of every request that carries card data."""
    out: list[tuple[str, str, Any, str]] = []
    base = {"order_id": fresh_order, "amount": "100.00", "currency": "USD"}
    item = {"variant_id": "v-1", "quantity": 1, "unit_amount": "100.00"}
    quote = {"order_id": fresh_order, "items": [item]}
    methods: list[dict[str, Any]] = []
    for card in CARDS:
        for value in variants(card):
            methods += [
                {"token": value},
                *(
                    {"token": "pm_card_visa", name: value}
                    for name in ("brand", "holder_name", "last4", "type", "nickname", "number")
                ),
            ]
            out += [
                ("POST", "/api/v1/payments", {**base, "provider": value}, SERVICE_KEY),
                ("POST", "/api/v1/payments", {**base, "card_number": value}, SERVICE_KEY),
                (
                    "POST",
                    "/api/v1/orders",
                    {**base, "order_id": f"ord-{word()}", "buyer_id": value},
                    SERVICE_KEY,
                ),
                (
                    "POST",
                    "/api/v1/orders",
                    {**base, "order_id": f"ord-{word()}", "buyer_id": "b", "amount": value},
                    SERVICE_KEY,
                ),
                ("PATCH", f"/api/v1/orders/{fresh_order}", {"amount": value}, SERVICE_KEY),
                ("POST", f"/api/v1/payments/{captured}/refund", {"reason": value}, ADMIN_KEY),
                ("POST", f"/api/v1/payments/{captured}/refund", {"amount": value}, ADMIN_KEY),
                ("POST", f"/api/v1/payments/{authorized}/void", {"reason": value}, SERVICE_KEY),
                ("POST", f"/api/v1/payments/{authorized}/capture", {"amount": value}, SERVICE_KEY),
                (
                    "POST",
                    f"/api/v1/payments/{captured}/mock/complete",
                    {"result": "FAIL", "failure_code": value},
                    SERVICE_KEY,
                ),
                *(
                    ("POST", "/api/v1/checkout/quote", {**quote, field: value}, SERVICE_KEY)
                    for field in ("shipping_amount", "tax_amount", "discount_amount")
                ),
                (
                    "POST",
                    "/api/v1/checkout/quote",
                    {**quote, "items": [{**item, "unit_amount": value}]},
                    SERVICE_KEY,
                ),
            ]
    for name, cvc in CVCS.items():
        methods.append({"token": "pm_card_visa", name: cvc})
        out += [
            ("POST", "/api/v1/payments", {**base, name: cvc}, SERVICE_KEY),
            ("POST", f"/api/v1/payments/{captured}/refund", {"reason": "x", name: cvc}, ADMIN_KEY),
            ("POST", f"/api/v1/payments/{authorized}/void", {name: cvc}, SERVICE_KEY),
        ]
    for method in methods:
        out += [
            ("POST", "/api/v1/payments", {**base, "payment_method": method}, SERVICE_KEY),
            (
                "POST",
                f"/api/v1/payments/{initiated}/confirm",
                {"payment_method": method},
                SERVICE_KEY,
            ),
        ]
    return out


FORGED = {"webhook-id": "msg_x", "webhook-timestamp": "1", "webhook-signature": "v1,eA=="}


def webhook_bodies() -> list[bytes]:
    """Provider-shaped webhook bodies carrying card data (unsigned or with forged signatures)."""
    return [
        json.dumps(
            {
                "id": f"evt_{word()}",
                "type": "payment.succeeded",
                "data": {"card_number": str(card), "cvc": "737", "note": f"tok_{card}"},
            }
        ).encode()
        for card in CARDS
    ]


async def test_card_data_is_refused_everywhere_and_found_nowhere(api: Api, logs: Logs) -> None:
    work = Workload(api)
    engine = api.container.engine
    before = await database_values(engine)
    # the legitimate part of the workload: what a scan must see pass untouched
    fresh_order = await work.order()
    initiated = (await work.payment(await work.order()))["payment_id"]
    captured = await work.confirmed()
    authorized = await work.confirmed(capture_method="manual")
    refund = await work.post(
        f"/api/v1/payments/{captured}/refund",
        {"amount": "1.00", "reason": "customer asked"},
        key=ADMIN_KEY,
    )
    assert refund.status_code == 201, refund.text

    refused: list[str] = []
    for method, path, body, key in hostile(fresh_order, initiated, captured, authorized):
        response = await work.send(method, path, body, key=key)
        if response.status_code != 422 or response.json().get("code") != "raw_card_data_rejected":
            refused.append(f"{method} {path} {body!r} -> {response.status_code} {response.text}")
    for raw in webhook_bodies():
        for extra in ({}, FORGED):
            response = await work.client.post(
                "/api/v1/webhooks/mock",
                content=raw,
                headers={"content-type": "application/json", **extra},
            )
            work.responses.append(response)
            if not 400 <= response.status_code < 500:
                refused.append(f"webhook {raw!r} -> {response.status_code}")
    assert refused == [], "\n".join(refused)
    # ids a client chose are echoed, logged and stored only when they are no card number
    for card in CARDS[:3]:
        await work.order(**{"X-Request-ID": f"r-{card}", "X-Correlation-ID": f"c-{card}"})
    # a correctly signed webhook is accepted (the provider signed it), but kept redacted
    signed_ids: list[str] = []
    for card in CARDS:
        event = mock_event("payment.succeeded", f"mock_pi_{word()}", holder=f"x {card}", cvc="737")
        event["data"]["card"] = {"number": str(card), "cvv": "123"}
        body, signed = sign_mock(event)
        signed_ids.append(event["id"])
        response = await work.client.post("/api/v1/webhooks/mock", content=body, headers=signed)
        work.responses.append(response)
        assert response.status_code == 200, response.text

    # what the legitimate requests left is still whole, and nothing was added to it
    assert (await api.get(f"/api/v1/orders/{fresh_order}/payments")).json()["data"] == []
    state = await api.payment_state(captured)
    assert state["refunded_amount"] == "1.00"
    assert (await api.payment_state(authorized))["status"] == "AUTHORIZED"

    added = await database_values(engine) - before
    assert {table for table, _, _ in added} >= {
        "orders",
        "order_status_history",
        "payments",
        "outbox",
        "refunds",
        "webhook_events",
    }
    assert findings(added) == []
    said = [card_data(r.text + json.dumps(dict(r.headers))) for r in work.responses]
    assert [found for found in said if found] == []
    assert '"event": "payment.transition"' in logs.text  # the capture saw the service's lines
    assert card_data(logs.text) == [], logs.text[-5000:]
    async with engine.begin() as conn:  # their payments do not exist: set them aside
        await conn.execute(
            sa.update(webhook_events)
            .where(webhook_events.c.provider_event_id.in_(signed_ids))
            .values(status="IGNORED", last_error="set aside by the card-data scan")
        )


async def test_a_signed_webhook_with_card_data_is_kept_redacted_and_still_applied(
    client: httpx.AsyncClient, container: Container
) -> None:
    pay = await new_payment(client)
    assert pay["status"] == "REQUIRES_ACTION"
    event = mock_event(
        "payment.captured", pay["provider_payment_id"], card={"number": "4111111111111111"}
    )
    event["data"]["note"] = "tok_4242424242424242"
    response = await deliver(client, event)
    assert response.status_code == 200, response.text

    [row] = await stored(container, event["id"])
    assert findings({("webhook_events", "body", row.body.decode())}) == []
    assert json.loads(row.body)["data"]["card"] == {"number": "[REDACTED]"}
    await process(container)
    assert (await payment(client, pay["payment_id"]))["status"] == "CAPTURED"


def test_log_lines_mask_card_numbers_anywhere() -> None:
    """The second line of defence: whatever reaches a log line is masked, nested or not."""
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "token": "tok_4242424242424242",
            "note": "tok_4242424242424242 and 5555-5555-5555-4444",
            "body": {
                "card": {"number": "4111111111111111", "cvv": "123"},
                "n": ["378282246310005"],
            },
            "exception": "ValueError: bad 4111 1111 1111 1111",
        },
    )
    assert event["token"] == "[redacted]"
    assert event["body"]["card"] == {"number": "[redacted]", "cvv": "[redacted]"}
    text = json.dumps(event)
    assert find_card_numbers(text) == []
    assert "****4242" in event["note"]
    assert "****4444" in event["note"]
