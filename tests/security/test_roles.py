"""The role matrix: every route of the app, called with an OIDC token of each role and with none.

Tokens come from a fake Keycloak realm (tests/support/oidc.py) and reach our roles through
`TILLPOINT_OIDC_ROLE_MAP`. The expectation of each route is API.md's (tests/security/roles.py):
an allowed role gets the route's answer (never 401, 403 or 404), the service role outside its
routes 403 `forbidden`, a customer outside its routes 404 `not_found`, no token 401
`unauthenticated`. The routes are read from the app, so a new route without an entry fails.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
import pytest

from tests.api.conftest import assert_problem
from tests.conftest import ADMIN_KEY, headers, new_key
from tests.security.roles import ACCESS, CALLERS, Access, Caller, Route, app_routes
from tests.support import flows
from tests.support.oidc import FakeIssuer, oidc_client, serve
from tests.support.records import flagged_discrepancy
from tests.webhooks.support import deliver, mock_event
from tillpoint.entrypoints.api.app import create_app

ROUTES: Final = app_routes(create_app())


Stage = Literal["pending", "initiated", "authorized", "captured"]


@dataclass(frozen=True, slots=True)
class World:
    """What a route's path names: an order of the customer's, its payment (none while the order
    is `pending`) and a stored webhook event."""

    order_id: str
    payment_id: str
    webhook_event_id: str
    run_id: str = ""
    discrepancy_id: str = ""
    provider_payment_id: str = "mock_none"
    provider: str = "mock"


@dataclass(frozen=True, slots=True)
class Oidc:
    http: httpx.AsyncClient
    issuer: FakeIssuer
    buyer: str
    webhook_event_id: str
    run_id: str
    discrepancy_id: str

    def headers(self, caller: Caller) -> dict[str, str]:
        sent = {"Idempotency-Key": new_key()}
        if caller is not None:
            subject = self.buyer if caller == "customer" else None
            sent["Authorization"] = f"Bearer {self.issuer.token_for(caller, subject=subject)}"
        return sent

    async def world(self, stage: Stage = "authorized") -> World:
        order_id = await flows.create_order(self.http, buyer_id=self.buyer)
        payment_id = "pay_none"
        if stage != "pending":
            created = await flows.create_payment(self.http, order_id, capture_method="manual")
            payment_id = created["payment_id"]
        provider_payment_id = "mock_none"
        if stage in ("authorized", "captured"):
            confirmed = await flows.confirm(self.http, payment_id, "AUTHORIZED")
            provider_payment_id = confirmed["provider_payment_id"]
        if stage == "captured":
            captured = await self.http.post(
                f"/api/v1/payments/{payment_id}/capture", headers=self.headers("service")
            )
            assert captured.status_code == 200, captured.text
        return World(
            order_id,
            payment_id,
            self.webhook_event_id,
            self.run_id,
            self.discrepancy_id,
            provider_payment_id,
        )


@pytest.fixture(scope="module")
async def oidc(database_url: str) -> AsyncIterator[Oidc]:
    async with (
        serve(FakeIssuer()) as issuer,
        oidc_client(database_url, issuer) as (http, container),
    ):
        stored = await deliver(http, mock_event("payment.authorized", "mock_unknown"))
        assert stored.status_code == 200, stored.text
        events = await http.get("/api/v1/admin/webhooks/events", headers=headers(ADMIN_KEY))
        assert events.status_code == 200, events.text
        event_id = events.json()["data"][0]["webhook_event_id"]
        run_id, discrepancy_id = await flagged_discrepancy(container)
        yield Oidc(http, issuer, f"buyer-{uuid.uuid4()}", event_id, run_id, discrepancy_id)


def _order_body(world: World) -> dict[str, Any]:
    return {"order_id": flows.new_order_id(), "buyer_id": "b", "amount": "1.00", "currency": "EUR"}


# A body an allowed caller's request is well-formed with (routes not named here send none).
BODIES: Final[dict[Route, Callable[[World], Any]]] = {
    ("POST", "/api/v1/orders"): _order_body,
    ("PATCH", "/api/v1/orders/{order_id}"): lambda w: {"amount": flows.AMOUNT},
    ("POST", "/api/v1/checkout/quote"): lambda w: {
        "order_id": w.order_id,
        "items": [{"variant_id": "v-1", "quantity": 1, "unit_amount": flows.AMOUNT}],
    },
    ("POST", "/api/v1/payments"): lambda w: flows.payment_body(w.order_id),
    ("POST", "/api/payments"): lambda w: flows.payment_body(w.order_id),
    ("POST", "/api/v1/payments/{payment_id}/mock/complete"): lambda w: {"result": "SUCCESS"},
    ("POST", "/api/v1/checkout/orders/{order_id}/payments/authorize"): lambda w: {},
    ("POST", "/api/v1/checkout/orders/{order_id}/submit-payment"): lambda w: {},
    ("POST", "/api/v1/mock/dashboard/{provider_payment_id}/{action}"): lambda w: {
        "webhook": "never"
    },
    ("POST", "/api/v1/admin/reconciliation/discrepancies/{discrepancy_id}/resolve"): lambda w: {
        "note": "looked at it"
    },
}
# The state a changing route's allowed caller finds (a fresh world each), `authorized` unless
# named here: the state in which the request is one the route carries out.
STAGES: Final[dict[Route, Stage]] = {
    ("PATCH", "/api/v1/orders/{order_id}"): "pending",
    ("POST", "/api/v1/checkout/quote"): "pending",
    ("POST", "/api/v1/payments"): "pending",
    ("POST", "/api/payments"): "pending",
    ("POST", "/api/v1/checkout/orders/{order_id}/payments/authorize"): "pending",
    ("POST", "/api/v1/checkout/orders/{order_id}/submit-payment"): "pending",
    ("POST", "/api/v1/payments/{payment_id}/confirm"): "initiated",
    ("POST", "/api/payments/{payment_id}/confirm"): "initiated",
    ("POST", "/api/v1/payments/{payment_id}/mock/complete"): "initiated",
    ("POST", "/api/v1/payments/{payment_id}/refund"): "captured",
    ("POST", "/api/payments/{payment_id}/refund"): "captured",
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/refund"): "captured",
}
# Where a route without path parameters of its own is called.
URLS: Final[dict[Route, str]] = {
    ("GET", "/docs/assets"): "/docs/assets/swagger-ui.css",
    ("GET", "/api/v1/admin/exports/ledger.csv"): "/api/v1/admin/exports/ledger.csv"
    "?created_from=2026-11-01T00:00:00Z&created_to=2026-12-01T00:00:00Z",
}


async def call(oidc: Oidc, route: Route, world: World, caller: Caller) -> httpx.Response:
    method, template = route
    url = URLS.get(route) or template.format(
        order_id=world.order_id,
        payment_id=world.payment_id,
        webhook_event_id=world.webhook_event_id,
        run_id=world.run_id,
        provider_payment_id=world.provider_payment_id,
        action="cancel",
        discrepancy_id=world.discrepancy_id,
        provider=world.provider,
    )
    body = BODIES[route](world) if route in BODIES else None
    return await oidc.http.request(method, url, json=body, headers=oidc.headers(caller))


def check(access: Access, caller: Caller, response: httpx.Response) -> None:
    seen = f"{caller or 'no token'}: {response.status_code} {response.text[:300]}"
    if access.kind == "public":
        assert response.status_code == 200, seen
    elif access.kind == "signature":
        # A bearer token, even an admin's, never stands in for a webhook's signature.
        assert_problem(response, 401, "invalid_signature")
    elif caller is None:
        assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
    elif access.allows(caller):
        assert response.status_code in (200, 201, 202), seen
    elif caller == "customer":
        assert_problem(response, 404, "not_found")
    else:
        assert_problem(response, 403, "forbidden")


def test_every_route_of_the_app_has_an_entry_in_the_role_table() -> None:
    assert set(ROUTES) - set(ACCESS) == set(), "routes without an entry in roles.ACCESS"
    assert set(ACCESS) - set(ROUTES) == set(), "entries of roles.ACCESS the app has no route for"


@pytest.mark.parametrize("route", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
async def test_each_role_gets_what_api_md_says(oidc: Oidc, route: Route) -> None:
    assert route in ACCESS, f"{route} has no entry in tests/security/roles.py"
    access = ACCESS[route]
    stage = STAGES.get(route, "authorized")
    refused = await oidc.world(stage)  # a refused call changes nothing: one world for them all
    for caller in CALLERS:
        changes = caller is not None and access.allows(caller) and route[0] != "GET"
        world = await oidc.world(stage) if changes else refused
        check(access, caller, await call(oidc, route, world, caller))


async def test_a_customer_reads_its_own_records(oidc: Oidc) -> None:
    """What a customer may call answers it with its own records (not just "not refused")."""
    world = await oidc.world()
    order = await call(oidc, ("GET", "/api/v1/orders/{order_id}"), world, "customer")
    assert order.status_code == 200, order.text
    assert order.json()["buyer_id"] == oidc.buyer
    listed = await call(oidc, ("GET", "/api/v1/orders/{order_id}/payments"), world, "customer")
    assert listed.status_code == 200, listed.text
    assert [p["payment_id"] for p in listed.json()["data"]] == [world.payment_id]
    for path in ("/api/v1/payments/{payment_id}", "/api/payments/{payment_id}"):
        payment = await call(oidc, ("GET", path), world, "customer")
        assert payment.status_code == 200, payment.text
        assert payment.json()["payment_id"] == world.payment_id
        assert payment.json()["buyer_id"] == oidc.buyer
