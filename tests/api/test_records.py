"""Every step leaves matching rows: payment events, ledger, order history and the outbox.

The outbox bodies are the published contract (API.md "Published events"), so their field
sets are compared exactly; `sequence` counts 1, 2, 3… per payment.
"""

from __future__ import annotations

from typing import Any

from tests.api.conftest import Api
from tests.conftest import ADMIN_KEY, SERVICE_KEY
from tillpoint.adapters.db import tables as t

COMMON = {"event_id", "order_id", "payment_id", "sequence"}
BODY_FIELDS = {
    "payment.authorized": COMMON
    | {"amount", "currency", "payment_method", "risk_score", "occurred_at"},
    "payment.succeeded": COMMON | {"transaction_id", "amount", "currency", "processed_at"},
    "payment.failed": COMMON | {"failure_reason", "failure_code", "occurred_at"},
    "payment.canceled": COMMON | {"reason", "occurred_at"},
    "payment.refunded": COMMON | {"refund_id", "amount", "currency", "occurred_at"},
}


def principal_of(key: str, api: Api) -> str:
    principal = api.container.keys.authenticate(key)
    assert principal is not None
    return principal.id


async def check_outbox(
    api: Api, payment: dict[str, Any], expected: list[str]
) -> list[dict[str, Any]]:
    rows = await api.outbox(payment["payment_id"])
    assert [key for key, _, _ in rows] == expected
    assert [seq for _, seq, _ in rows] == list(range(1, len(expected) + 1))
    bodies = []
    for key, seq, body in rows:
        assert set(body) == BODY_FIELDS[key], (key, body)
        assert body["sequence"] == seq
        assert (body["order_id"], body["payment_id"]) == (
            payment["order_id"],
            payment["payment_id"],
        )
        assert body["event_id"].startswith("evt_")
        bodies.append(body)
    # each published event is also in the payment's own log, under the same id
    log = (await api.get(f"/api/v1/payments/{payment['payment_id']}/events")).json()["data"]
    assert {b["event_id"] for b in bodies} <= {e["event_id"] for e in log}
    stored = await api.row(t.payments, payment_id=payment["payment_id"])
    assert stored["sequence"] == len(expected)
    return bodies


def history(order: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(h["from_status"], h["to_status"]) for h in order["history"]]


async def test_automatic_capture_records_the_sale(api: Api) -> None:
    """A sale publishes `payment.succeeded` only: `payment.authorized` announces manual holds."""
    paid = await api.confirmed("25.00", "EUR")
    events = (await api.get(f"/api/v1/payments/{paid['payment_id']}/events")).json()["data"]
    assert [e["event_type"] for e in events] == [
        "PAYMENT_INITIATED",
        "PROVIDER_CONFIRMED",
        "CAPTURE_SUCCEEDED",
    ]
    assert [e["payload"]["status"] for e in events] == ["INITIATED", "CAPTURED", "CAPTURED"]
    [entry] = await api.ledger(paid["order_id"])
    [sale] = entry["transactions"]
    assert (sale["kind"], sale["status"], sale["amount"], sale["currency"]) == (
        "SALE",
        "SUCCEEDED",
        "25.00",
        "EUR",
    )
    assert sale["provider_reference"]
    assert entry["refunds"] == []

    [succeeded] = await check_outbox(api, paid, ["payment.succeeded"])
    assert (succeeded["amount"], succeeded["currency"]) == ("25.00", "EUR")
    assert succeeded["transaction_id"] == sale["transaction_id"]
    assert succeeded["processed_at"].endswith("Z")

    order = await api.order_state(paid["order_id"])
    assert history(order) == [(None, "PAYMENT_PENDING"), ("PAYMENT_PENDING", "PAID")]
    created, became_paid = order["history"]
    assert created["reason"] == "order_created"
    assert became_paid["source"] == "api"
    assert became_paid["actor"] == principal_of(SERVICE_KEY, api)
    assert paid["payment_id"] in became_paid["reason"]

    row = await api.row(t.payments, payment_id=paid["payment_id"])
    assert (row["status"], row["amount_minor"], row["captured_minor"], row["currency"]) == (
        "CAPTURED",
        2500,
        2500,
        "EUR",
    )
    order_row = await api.row(t.orders, order_id=paid["order_id"])
    assert (order_row["status"], order_row["amount_minor"]) == ("PAID", 2500)


async def test_manual_capture_and_refunds_record_every_step(api: Api) -> None:
    held = await api.confirmed(capture_method="manual")
    pid, order_id = held["payment_id"], held["order_id"]
    assert (await api.post(f"/api/v1/payments/{pid}/capture", {"amount": "80.00"})).is_success
    first = await api.post(f"/api/v1/payments/{pid}/refund", {"amount": "30.00"}, key=ADMIN_KEY)
    assert (await api.post(f"/api/v1/payments/{pid}/refund", {}, key=ADMIN_KEY)).is_success
    refused = await api.post(f"/api/v1/payments/{pid}/refund", {"amount": "1.00"}, key=ADMIN_KEY)
    assert refused.status_code == 409

    assert await api.event_types(pid) == [
        "PAYMENT_INITIATED",
        "AUTHORIZATION_SUCCEEDED",
        "CAPTURE_SUCCEEDED",
        "REFUND_SUCCEEDED",
        "REFUND_SUCCEEDED",
    ]
    [entry] = await api.ledger(order_id)
    assert [(x["kind"], x["status"], x["amount"]) for x in entry["transactions"]] == [
        ("AUTHORIZE", "SUCCEEDED", "100.00"),
        ("CAPTURE", "SUCCEEDED", "80.00"),
        ("REFUND", "SUCCEEDED", "30.00"),
        ("REFUND", "SUCCEEDED", "50.00"),
    ]
    assert [x["provider_idempotency_key"] for x in entry["transactions"]] == [
        f"{pid}:authorize:1",
        f"{pid}:capture:2",
        f"{pid}:refund:3",
        f"{pid}:refund:4",
    ]
    assert [(r["amount"], r["status"]) for r in entry["refunds"]] == [
        ("30.00", "SUCCEEDED"),
        ("50.00", "SUCCEEDED"),
    ]
    assert entry["refunds"][0]["refund_id"] == first.json()["refund_id"]
    assert entry["transactions"][2]["refund_id"] == first.json()["refund_id"]
    assert (entry["status"], entry["captured_amount"], entry["refunded_amount"]) == (
        "REFUNDED",
        "80.00",
        "80.00",
    )

    bodies = await check_outbox(
        api,
        held,
        ["payment.authorized", "payment.succeeded", "payment.refunded", "payment.refunded"],
    )
    assert (bodies[0]["amount"], bodies[0]["currency"]) == ("100.00", "USD")
    assert bodies[0]["payment_method"]["type"] == "card"
    assert bodies[1]["amount"] == "80.00"
    assert bodies[1]["transaction_id"] == entry["transactions"][1]["transaction_id"]
    assert [(b["refund_id"], b["amount"]) for b in bodies[2:]] == [
        (r["refund_id"], r["amount"]) for r in entry["refunds"]
    ]

    order = await api.order_state(order_id)
    assert history(order) == [
        (None, "PAYMENT_PENDING"),
        ("PAYMENT_PENDING", "PAID"),
        ("PAID", "PARTIALLY_REFUNDED"),
        ("PARTIALLY_REFUNDED", "REFUNDED"),
    ]
    assert [h["actor"] for h in order["history"][1:]] == [
        principal_of(SERVICE_KEY, api),
        principal_of(ADMIN_KEY, api),
        principal_of(ADMIN_KEY, api),
    ]
    assert {h["source"] for h in order["history"]} == {"api"}
    row = await api.row(t.payments, payment_id=pid)
    assert (row["authorized_minor"], row["captured_minor"], row["refunded_minor"]) == (
        10000,
        8000,
        8000,
    )
    assert row["refund_pending_minor"] == 0


async def test_a_decline_records_the_failure(api: Api) -> None:
    order_id = await api.order()
    created = await api.payment(order_id, method={"token": "pm_card_insufficientFunds"})
    assert (await api.confirm(created["payment_id"])).status_code == 402
    assert await api.event_types(created["payment_id"]) == [
        "PAYMENT_INITIATED",
        "AUTHORIZATION_FAILED",
    ]
    [failed] = await check_outbox(api, created, ["payment.failed"])
    assert failed["failure_code"] == "INSUFFICIENT_FUNDS"
    assert failed["failure_reason"]
    [entry] = await api.ledger(order_id)
    [sale] = entry["transactions"]
    assert (sale["kind"], sale["status"], sale["error_code"]) == (
        "SALE",
        "FAILED",
        "insufficient_funds",
    )
    # keep_pending: the order did not move, so its history holds only its creation
    assert history(await api.order_state(order_id)) == [(None, "PAYMENT_PENDING")]


async def test_a_void_records_the_cancellation(api: Api) -> None:
    held = await api.confirmed(capture_method="manual")
    voided = await api.post(f"/api/v1/payments/{held['payment_id']}/void", {"reason": "no stock"})
    assert voided.status_code == 200, voided.text
    assert await api.event_types(held["payment_id"]) == [
        "PAYMENT_INITIATED",
        "AUTHORIZATION_SUCCEEDED",
        "VOIDED",
    ]
    _, canceled = await check_outbox(api, held, ["payment.authorized", "payment.canceled"])
    assert "reason" in canceled
    [entry] = await api.ledger(held["order_id"])
    assert [(x["kind"], x["status"]) for x in entry["transactions"]] == [
        ("AUTHORIZE", "SUCCEEDED"),
        ("VOID", "SUCCEEDED"),
    ]
    assert history(await api.order_state(held["order_id"])) == [(None, "PAYMENT_PENDING")]


async def test_three_d_secure_records_the_action_then_the_capture(api: Api) -> None:
    waiting = await api.confirmed(method={"token": "pm_card_threeDSecure"})
    pid = waiting["payment_id"]
    assert await api.event_types(pid) == ["PAYMENT_INITIATED", "ACTION_REQUIRED"]
    assert await api.outbox(pid) == []
    done = await api.post(f"/api/v1/payments/{pid}/mock/complete", {"result": "SUCCESS"})
    assert done.status_code == 200, done.text
    assert await api.event_types(pid) == [
        "PAYMENT_INITIATED",
        "ACTION_REQUIRED",
        "PROVIDER_CONFIRMED",
        "CAPTURE_SUCCEEDED",
    ]
    await check_outbox(api, waiting, ["payment.succeeded"])
    [entry] = await api.ledger(waiting["order_id"])
    [sale] = entry["transactions"]
    assert (sale["kind"], sale["status"]) == ("SALE", "SUCCEEDED")


async def test_a_timeout_records_processing_and_publishes_nothing(api: Api) -> None:
    pending = await api.confirmed(method={"last4": "9999"})
    pid = pending["payment_id"]
    types = await api.event_types(pid)
    assert types == ["PAYMENT_INITIATED", "PROVIDER_CONFIRMED"]
    events = (await api.get(f"/api/v1/payments/{pid}/events")).json()["data"]
    assert events[1]["payload"]["status"] == "PROCESSING"
    assert await api.outbox(pid) == []
    stored = await api.row(t.payment_transactions, payment_id=pid)
    assert (stored["kind"], stored["status"], stored["amount_minor"]) == ("SALE", "UNKNOWN", 10000)
