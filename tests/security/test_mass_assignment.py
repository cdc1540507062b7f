"""Mass assignment: every body a client sends (creates, patches, actions, admin actions) is
strict. A read-only field (`status`, `captured_amount`, `buyer_id`, `payment_id`, `created_at`…)
or an unknown one is a 422 `validation_error` naming it, never silently applied or ignored;
and being a body validation failure it is not stored under the Idempotency-Key, so the
corrected retry with the same key is carried out (API.md, "Idempotency").

Every route a token may change something through needs a case here (the route list comes from
tests/security/roles.py, checked against the app there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pytest

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY, new_key
from tests.security.roles import ACCESS, Route
from tests.support import flows
from tests.support.records import flagged_discrepancy
from tests.webhooks.support import deliver, mock_event

Stage = Literal["pending", "initiated", "authorized", "captured"]


@dataclass(frozen=True, slots=True)
class Ids:
    order_id: str
    payment_id: str
    webhook_event_id: str
    provider_payment_id: str = "mock_none"
    discrepancy_id: str = "dsc_none"

    def url(self, template: str) -> str:
        return template.format(
            order_id=self.order_id,
            payment_id=self.payment_id,
            webhook_event_id=self.webhook_event_id,
            provider_payment_id=self.provider_payment_id,
            action="cancel",
            discrepancy_id=self.discrepancy_id,
        )


Where = tuple[str | int, ...]  # a path into the body; () is its top level


@dataclass(frozen=True, slots=True)
class Case:
    """A well-formed body for a payment at `stage`, and fields that must not get in."""

    body: Callable[[Ids], dict[str, Any]]
    injected: dict[str, Any]
    stage: Stage = "authorized"
    key: str = SERVICE_KEY
    nested: dict[Where, dict[str, Any]] = field(default_factory=dict)


STAMP: Final = "2020-01-01T00:00:00Z"
PAYMENT_FIELDS: Final = {
    "status": "CAPTURED",
    "buyer_id": "someone-else",
    "payment_id": "pay_chosen_by_the_client",
    "payment_number": 999_999,
    "provider_payment_id": "pi_chosen",
    "authorized_amount": "100.00",
    "captured_amount": "100.00",
    "refunded_amount": "100.00",
    "failure_code": "card_declined",
    "client_secret": "pi_secret",
    "risk_score": 0,
    "created_at": STAMP,
    "updated_at": STAMP,
}
PAYMENT_METHOD_FIELDS: Final[dict[Where, dict[str, Any]]] = {
    ("payment_method",): {"fingerprint": "fp_x", "id": "pm_x"}
}
NO_FIELDS: Final = {"status": "FAILED", "captured_amount": "1.00", "amount": "1.00"}
CHECKOUT_FIELDS: Final = {
    "order_id": "ord-another",
    "buyer_id": "someone-else",
    "status": "FAILED",
    "captured_amount": "1.00",
}


def _order(ids: Ids) -> dict[str, Any]:
    return {"order_id": flows.new_order_id(), "buyer_id": "b", "amount": "1.00", "currency": "EUR"}


def _payment(ids: Ids) -> dict[str, Any]:
    return flows.payment_body(ids.order_id)


def _empty(ids: Ids) -> dict[str, Any]:
    return {}


CASES: Final[dict[Route, Case]] = {
    ("POST", "/api/v1/orders"): Case(
        _order,
        {
            "status": "PAID",
            "history": [{"to_status": "PAID"}],
            "payment_id": "pay_x",
            "created_at": STAMP,
        },
    ),
    ("PATCH", "/api/v1/orders/{order_id}"): Case(
        lambda ids: {"amount": "90.00"},
        {"buyer_id": "someone-else", "status": "PAID", "currency": "USD", "order_id": "ord-x"},
        stage="pending",
    ),
    ("POST", "/api/v1/checkout/quote"): Case(
        lambda ids: {
            "order_id": ids.order_id,
            "items": [{"variant_id": "v-1", "quantity": 1, "unit_amount": flows.AMOUNT}],
        },
        {"snapshot_id": "snap_x", "currency": "USD", "expires_at": STAMP, "totals": {}},
        stage="pending",
        nested={("items", 0): {"line_total": "1.00"}},
    ),
    ("POST", "/api/v1/payments"): Case(
        _payment, PAYMENT_FIELDS, stage="pending", nested=PAYMENT_METHOD_FIELDS
    ),
    ("POST", "/api/payments"): Case(
        _payment, PAYMENT_FIELDS, stage="pending", nested=PAYMENT_METHOD_FIELDS
    ),
    ("POST", "/api/v1/payments/{payment_id}/confirm"): Case(
        _empty,
        {**NO_FIELDS, "provider": "stripe", "provider_payment_id": "pi_x"},
        stage="initiated",
        nested=PAYMENT_METHOD_FIELDS,
    ),
    ("POST", "/api/payments/{payment_id}/confirm"): Case(
        _empty, {**NO_FIELDS, "provider_payment_id": "pi_x"}, stage="initiated"
    ),
    ("POST", "/api/v1/payments/{payment_id}/mock/complete"): Case(
        lambda ids: {"result": "SUCCESS"},
        {"status": "FAILED", "captured_amount": "1.00", "provider_payment_id": "pi_x"},
        stage="initiated",
    ),
    ("POST", "/api/v1/payments/{payment_id}/capture"): Case(
        _empty,
        {"captured_amount": "1.00", "status": "REFUNDED", "currency": "USD", "buyer_id": "x"},
    ),
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/capture"): Case(
        _empty, {"captured_amount": "1.00", "status": "REFUNDED", "currency": "USD"}, key=ADMIN_KEY
    ),
    ("POST", "/api/v1/payments/{payment_id}/void"): Case(
        _empty, {"status": "CAPTURED", "failure_code": "x", "canceled_at": STAMP}
    ),
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/void"): Case(
        _empty, {"status": "CAPTURED", "canceled_at": STAMP}, key=ADMIN_KEY
    ),
    ("POST", "/api/v1/payments/{payment_id}/refund"): Case(
        _empty,
        {
            "refund_id": "re_chosen",
            "status": "FAILED",
            "payment_id": "pay_other",
            "currency": "USD",
            "refunded_amount": "1.00",
            "provider_refund_id": "re_x",
            "created_at": STAMP,
        },
        stage="captured",
        key=ADMIN_KEY,
    ),
    ("POST", "/api/payments/{payment_id}/refund"): Case(
        _empty,
        {"refund_id": "re_chosen", "status": "FAILED", "payment_id": "pay_other"},
        stage="captured",
        key=ADMIN_KEY,
    ),
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/refund"): Case(
        _empty,
        {"refund_id": "re_chosen", "status": "FAILED", "currency": "USD"},
        stage="captured",
        key=ADMIN_KEY,
    ),
    ("POST", "/api/v1/checkout/orders/{order_id}/payments/authorize"): Case(
        _empty, CHECKOUT_FIELDS, stage="pending", nested=PAYMENT_METHOD_FIELDS
    ),
    ("POST", "/api/v1/checkout/orders/{order_id}/submit-payment"): Case(
        _empty, CHECKOUT_FIELDS, stage="pending"
    ),
    ("POST", "/api/v1/payments/reconcile"): Case(
        _empty, {"run_id": "recon_x", "status": "FINISHED", "checked": 0}, key=ADMIN_KEY
    ),
    ("POST", "/api/payments/reconcile"): Case(
        _empty, {"run_id": "recon_x", "status": "FINISHED"}, key=ADMIN_KEY
    ),
    ("POST", "/api/v1/mock/dashboard/{provider_payment_id}/{action}"): Case(
        lambda ids: {"webhook": "never"},
        {"status": "REFUNDED", "payment_id": "pay_other", "provider": "stripe"},
        key=ADMIN_KEY,
    ),
    ("POST", "/api/v1/admin/reconciliation/discrepancies/{discrepancy_id}/resolve"): Case(
        lambda ids: {"note": "looked at it"},
        {"resolved_by": "someone-else", "action": "healed", "kind": "stuck"},
        key=ADMIN_KEY,
    ),
    ("POST", "/api/v1/admin/webhooks/events/{webhook_event_id}/replay"): Case(
        _empty, {"status": "DEAD", "attempt_count": 99, "last_error": "chosen"}, key=ADMIN_KEY
    ),
}


def changing_routes() -> list[Route]:
    """Every route a token changes something through (webhooks take signed raw bytes)."""
    return sorted(r for r, a in ACCESS.items() if a.kind == "token" and r[0] != "GET")


async def ids_at(api: Api, stage: Stage) -> Ids:
    order_id = await api.order("100.00", "EUR")
    payment_id = "pay_none"
    if stage != "pending":
        created = await flows.create_payment(api.client, order_id, capture_method="manual")
        payment_id = created["payment_id"]
    provider_payment_id = "mock_none"
    if stage in ("authorized", "captured"):
        confirmed = await flows.confirm(api.client, payment_id, "AUTHORIZED")
        provider_payment_id = confirmed["provider_payment_id"]
    if stage == "captured":
        captured = await api.post(f"/api/v1/payments/{payment_id}/capture")
        assert captured.status_code == 200, captured.text
    stored = await deliver(api.client, mock_event("payment.authorized", "mock_unknown"))
    assert stored.status_code == 200, stored.text
    events = await api.get("/api/v1/admin/webhooks/events", key=ADMIN_KEY)
    return Ids(
        order_id,
        payment_id,
        events.json()["data"][0]["webhook_event_id"],
        provider_payment_id,
        (await flagged_discrepancy(api.container))[1],
    )


def with_field(body: dict[str, Any], where: Where, name: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with `name` added at `where` (an absent object on the way is made)."""
    copy: Any = json_copy(body)
    node = copy
    for step in where:
        if isinstance(step, str) and step not in node:
            node[step] = {"type": "card", "token": "pm_card_visa"}
        node = node[step]
    node[name] = value
    result: dict[str, Any] = copy
    return result


def json_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def test_every_changing_route_has_a_case() -> None:
    assert set(changing_routes()) - set(CASES) == set()
    assert set(CASES) - set(changing_routes()) == set()


@pytest.mark.parametrize("route", changing_routes(), ids=[f"{m} {p}" for m, p in changing_routes()])
async def test_read_only_and_unknown_fields_are_refused_and_never_stored(
    api: Api, route: Route
) -> None:
    assert route in CASES, f"{route} has no mass-assignment case"
    case = CASES[route]
    method, template = route
    ids = await ids_at(api, case.stage)
    before = await api.payment_state(ids.payment_id) if ids.payment_id != "pay_none" else None
    order_before = await api.order_state(ids.order_id)
    path = ids.url(template)
    valid = case.body(ids)
    key = new_key()  # one key for every refused attempt and the corrected retry
    sent = {(): case.injected, **case.nested}
    for where, fields in sent.items():
        for name, value in fields.items():
            body = with_field(valid, where, name, value)
            response = await api.client.request(
                method, path, json=body, headers={**auth(case.key), "Idempotency-Key": key}
            )
            problem = assert_problem(response, 422, "validation_error")
            located = [
                e for e in problem["errors"] if e["loc"][: len(where) + 1] == ["body", *where]
            ]
            assert located, (name, problem)
            assert any(name in e["loc"] or name in e["msg"] for e in located), (name, problem)

    # Nothing of it was applied: the records are as they were.
    if before is not None:
        assert await api.payment_state(ids.payment_id) == before
    assert await api.order_state(ids.order_id) == order_before

    corrected = await api.client.request(
        method, path, json=valid, headers={**auth(case.key), "Idempotency-Key": key}
    )
    assert corrected.status_code in (200, 201, 202), corrected.text
    assert "idempotent-replayed" not in corrected.headers
    answer = corrected.json()
    for name, value in case.injected.items():
        if name in answer:
            assert answer[name] != value, (name, answer)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_buyer_id_is_the_orders_not_the_callers(api: Api) -> None:
    """The payment's buyer is its order's: it cannot be named at create, confirm or capture."""
    order_id = await api.order("100.00", "EUR", buyer_id="buyer-real")
    stranger = {**flows.payment_body(order_id), "buyer_id": "buyer-stranger"}
    refused = await api.post("/api/v1/payments", stranger)
    assert_problem(refused, 422, "validation_error")
    created = await flows.create_payment(api.client, order_id)
    assert created["buyer_id"] == "buyer-real"
    confirmed = await flows.confirm(api.client, created["payment_id"], "CAPTURED")
    assert confirmed["buyer_id"] == "buyer-real"
