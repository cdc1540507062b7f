"""Object-level authorization: two buyers, each with orders, payments, refunds and events, and
customer tokens (OIDC, `sub` = buyer_id) for both.

On every route a customer may call, buyer B asking for A's records gets 404 `not_found`: never
403, never any of A's data, and the same answer as for a record that does not exist. Lists
hold only the caller's own records. The routes come from the role table
(tests/security/roles.py), so a route opened to customers is checked here too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest

from tests.api.conftest import assert_problem
from tests.conftest import ADMIN_KEY, API_KEYS, SERVICE_KEY, headers, new_key
from tests.security.roles import ACCESS, Route, customer_readable
from tests.support import flows
from tests.support.oidc import FakeIssuer, oidc_client, serve
from tillpoint.config import ApiKey

NO_SUBJECT_KEY: Final = "test-customer-without-subject-0123"
PARAMS: Final = ("order_id", "payment_id")


@dataclass
class Buyer:
    """A buyer's records: a paid order (captured, partly refunded) and one whose payment waits."""

    buyer_id: str
    orders: list[str] = field(default_factory=list)
    payments: dict[str, str] = field(default_factory=dict)  # payment id -> its order id
    refunds: list[str] = field(default_factory=list)

    def records(self) -> list[dict[str, str]]:
        """Path parameters naming each of its records: each payment with its own order (the
        seed paths name both)."""
        return [{"order_id": o, "payment_id": p} for p, o in self.payments.items()]

    def ids(self) -> set[str]:
        return {self.buyer_id, *self.orders, *self.payments, *self.refunds}


@dataclass(frozen=True, slots=True)
class Shop:
    http: httpx.AsyncClient
    issuer: FakeIssuer
    a: Buyer
    b: Buyer

    def customer(self, buyer: Buyer) -> dict[str, str]:
        token = self.issuer.token_for("customer", subject=buyer.buyer_id)
        return {"Authorization": f"Bearer {token}", "Idempotency-Key": new_key()}


async def _records(http: httpx.AsyncClient, buyer: Buyer) -> None:
    paid = await flows.new_payment(http, buyer_id=buyer.buyer_id)
    assert paid["status"] == "CAPTURED"
    refund = await http.post(
        f"/api/v1/payments/{paid['payment_id']}/refund",
        json={"amount": "10.00"},
        headers=headers(ADMIN_KEY, new_key()),
    )
    assert refund.status_code == 201, refund.text
    waiting = await flows.new_payment(http, buyer_id=buyer.buyer_id, confirmed=False)
    for payment in (paid, waiting):
        buyer.orders.append(payment["order_id"])
        buyer.payments[payment["payment_id"]] = payment["order_id"]
    buyer.refunds.append(refund.json()["refund_id"])


@pytest.fixture(scope="module")
async def shop(database_url: str) -> AsyncIterator[Shop]:
    keys = [
        *(ApiKey.model_validate(k) for k in API_KEYS),
        ApiKey.model_validate({"key": NO_SUBJECT_KEY, "role": "customer"}),
    ]
    async with (
        serve(FakeIssuer()) as issuer,
        oidc_client(database_url, issuer, api_keys=keys) as (http, _),
    ):
        a, b = Buyer(f"buyer-a-{uuid.uuid4()}"), Buyer(f"buyer-b-{uuid.uuid4()}")
        for buyer in (a, b):
            await _records(http, buyer)
        yield Shop(http, issuer, a, b)


def url(route: Route, values: dict[str, str]) -> str:
    return route[1].format(**values)


def named_records() -> list[Route]:
    """Every route (but a webhook's) whose path names an order or a payment."""
    return sorted(
        route
        for route, access in ACCESS.items()
        if access.kind == "token" and any(f"{{{p}}}" in route[1] for p in PARAMS)
    )


def anonymous(response: httpx.Response, requested: dict[str, str]) -> dict[str, Any]:
    """The problem document with the ids the caller sent and the request id blanked out: what
    is left must not depend on whose (or whether any) record the ids name."""
    text = response.text
    for value in requested.values():
        text = text.replace(value, "<id>")
    body: dict[str, Any] = json.loads(text)
    body.pop("request_id")
    return body


def missing() -> dict[str, str]:
    """Path parameters that name no record at all."""
    return {"order_id": f"ord-missing-{uuid.uuid4().hex[:8]}", "payment_id": "pay_missing"}


@pytest.mark.parametrize(
    "route", customer_readable(), ids=[f"{m} {p}" for m, p in customer_readable()]
)
async def test_another_buyers_records_are_not_found(shop: Shop, route: Route) -> None:
    for values in shop.a.records():
        response = await shop.http.request(
            route[0], url(route, values), headers=shop.customer(shop.b)
        )
        assert_problem(response, 404, "not_found")
        leaked = {i for i in shop.a.ids() - set(values.values()) if i in response.text}
        assert not leaked, (route, leaked, response.text)
        nothing = missing()
        absent = await shop.http.request(
            route[0], url(route, nothing), headers=shop.customer(shop.b)
        )
        assert_problem(absent, 404, "not_found")
        assert anonymous(response, values) == anonymous(absent, nothing)


@pytest.mark.parametrize(
    "route", customer_readable(), ids=[f"{m} {p}" for m, p in customer_readable()]
)
async def test_a_buyer_reads_its_own_records_and_nothing_of_the_other(
    shop: Shop, route: Route
) -> None:
    for buyer, other in ((shop.a, shop.b), (shop.b, shop.a)):
        for values in buyer.records():
            response = await shop.http.request(
                route[0], url(route, values), headers=shop.customer(buyer)
            )
            assert response.status_code == 200, response.text
            assert not {i for i in other.ids() if i in response.text}, response.text
            body = response.json()
            for item in body.get("data", [body]):
                assert item["buyer_id"] == buyer.buyer_id, item


async def test_an_orders_payment_list_holds_only_its_buyers_payments(shop: Shop) -> None:
    for buyer in (shop.a, shop.b):
        for order_id in buyer.orders:
            listed = await shop.http.get(
                f"/api/v1/orders/{order_id}/payments", headers=shop.customer(buyer)
            )
            assert listed.status_code == 200, listed.text
            expected = [p for p, o in buyer.payments.items() if o == order_id]
            assert [p["payment_id"] for p in listed.json()["data"]] == expected


@pytest.mark.parametrize("route", named_records(), ids=[f"{m} {p}" for m, p in named_records()])
async def test_a_customers_404_says_nothing_about_the_ids_it_names(
    shop: Shop, route: Route
) -> None:
    """On every route naming an order or a payment — the customer's own or not — a customer
    gets nothing of A's, and no answer that tells A's records from ids that name nothing."""
    for values in shop.a.records():
        nothing = missing()
        for caller in (shop.a, shop.b):
            if caller is shop.a and ACCESS[route].allows("customer"):
                continue  # its own records: read above
            response = await shop.http.request(
                route[0], url(route, values), headers=shop.customer(caller)
            )
            assert_problem(response, 404, "not_found")
            absent = await shop.http.request(
                route[0], url(route, nothing), headers=shop.customer(caller)
            )
            assert anonymous(response, values) == anonymous(absent, nothing), route


async def test_customers_list_nothing_of_the_payment_list(shop: Shop) -> None:
    """The payments list is the admin's: a customer's filters open nothing."""
    for params in ({}, {"order_id": shop.a.orders[0]}, {"status": "CAPTURED"}):
        response = await shop.http.get(
            "/api/v1/payments", params=params, headers=shop.customer(shop.b)
        )
        assert_problem(response, 404, "not_found")
        assert not {i for i in shop.a.ids() if i in response.text}


async def test_a_subject_that_only_resembles_the_buyers_is_another_buyer(shop: Shop) -> None:
    values = shop.a.records()[0]
    for subject in (shop.a.buyer_id.upper(), f"{shop.a.buyer_id} ", shop.a.buyer_id[:-1]):
        token = shop.issuer.token_for("customer", subject=subject)
        for route in customer_readable():
            response = await shop.http.request(route[0], url(route, values), headers=headers(token))
            assert_problem(response, 404, "not_found")


async def test_a_customer_without_a_subject_sees_nothing(shop: Shop) -> None:
    """An OIDC customer token without `sub` is refused outright; a customer API key configured
    without a subject is nobody's buyer: every record is not found."""
    claims = shop.issuer.claims(["customer"])
    del claims["sub"]
    no_sub = shop.issuer.token(claims)
    for route in customer_readable():
        for buyer in (shop.a, shop.b):
            for values in buyer.records():
                path = url(route, values)
                refused = await shop.http.request(route[0], path, headers=headers(no_sub))
                assert_problem(refused, 401, "unauthenticated")
                unseen = await shop.http.request(route[0], path, headers=headers(NO_SUBJECT_KEY))
                assert_problem(unseen, 404, "not_found")
                assert buyer.buyer_id not in unseen.text


async def test_the_service_role_still_reads_every_buyers_records(shop: Shop) -> None:
    """The filter is the customer's only: the order backend reads both buyers (so the 404s
    above are the scope's, not missing records)."""
    for buyer in (shop.a, shop.b):
        for route in customer_readable():
            for values in buyer.records():
                response = await shop.http.request(
                    route[0], url(route, values), headers=headers(SERVICE_KEY)
                )
                assert response.status_code == 200, response.text
