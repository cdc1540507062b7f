"""Who may call which route: API.md's role table and per-route "role" columns, as data.

`ACCESS` has one entry per route of the app (method and path template, aliases included);
`app_routes` reads the app's actual route list, so a route added without an entry here fails
tests/security/test_roles.py. `admin` may do everything (API.md, "Authentication and roles"),
so a route's roles never list it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

Caller = Literal["admin", "service", "customer"] | None
CALLERS: Final[tuple[Caller, ...]] = (None, "customer", "service", "admin")


@dataclass(frozen=True, slots=True)
class Access:
    """`public`: no token needed; `signature`: a webhook, its signature authenticates (a token
    changes nothing); `token`: admin, and the roles listed."""

    kind: Literal["public", "signature", "token"]
    roles: frozenset[str] = frozenset()

    def allows(self, role: str) -> bool:
        return role == "admin" or role in self.roles


PUBLIC: Final = Access("public")
SIGNATURE: Final = Access("signature")
ADMIN: Final = Access("token")
SERVICE: Final = Access("token", frozenset({"service"}))
SERVICE_OR_CUSTOMER: Final = Access("token", frozenset({"service", "customer"}))

Route = tuple[str, str]

ACCESS: Final[dict[Route, Access]] = {
    # Health and operations, the documents the service serves itself
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/healthz/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/reference"): PUBLIC,
    ("GET", "/docs/assets"): PUBLIC,
    # Orders and checkout snapshots
    ("POST", "/api/v1/orders"): SERVICE,
    ("GET", "/api/v1/orders/{order_id}"): SERVICE_OR_CUSTOMER,
    ("PATCH", "/api/v1/orders/{order_id}"): SERVICE,
    ("GET", "/api/v1/orders/{order_id}/payments"): SERVICE_OR_CUSTOMER,
    ("GET", "/api/v1/admin/orders/{order_id}/payments"): ADMIN,
    ("POST", "/api/v1/checkout/quote"): SERVICE,
    # Payments
    ("POST", "/api/v1/payments"): SERVICE,
    ("GET", "/api/v1/payments"): ADMIN,
    ("POST", "/api/v1/payments/reconcile"): ADMIN,
    ("GET", "/api/v1/admin/reconciliation/runs"): ADMIN,
    ("GET", "/api/v1/admin/reconciliation/runs/{run_id}"): ADMIN,
    ("GET", "/api/v1/admin/reconciliation/runs/{run_id}/discrepancies"): ADMIN,
    ("GET", "/api/v1/admin/reconciliation/runs/{run_id}/discrepancies.csv"): ADMIN,
    ("POST", "/api/v1/admin/reconciliation/discrepancies/{discrepancy_id}/resolve"): ADMIN,
    ("GET", "/api/v1/payments/{payment_id}"): SERVICE_OR_CUSTOMER,
    ("GET", "/api/v1/payments/{payment_id}/events"): SERVICE,
    ("POST", "/api/v1/payments/{payment_id}/confirm"): SERVICE,
    ("POST", "/api/v1/payments/{payment_id}/mock/complete"): SERVICE,
    ("POST", "/api/v1/payments/{payment_id}/capture"): SERVICE,
    ("POST", "/api/v1/payments/{payment_id}/void"): SERVICE,
    ("POST", "/api/v1/payments/{payment_id}/refund"): ADMIN,
    ("GET", "/api/v1/admin/payments/{payment_id}/provider-calls"): ADMIN,
    ("GET", "/api/v1/admin/disputes"): ADMIN,
    ("POST", "/api/v1/mock/dashboard/{provider_payment_id}/{action}"): ADMIN,
    ("GET", "/api/v1/admin/exports/ledger.csv"): ADMIN,
    # Provider webhooks and their admin views
    ("POST", "/api/v1/webhooks/{provider}"): SIGNATURE,
    ("GET", "/api/v1/admin/webhooks/events"): ADMIN,
    ("POST", "/api/v1/admin/webhooks/events/{webhook_event_id}/replay"): ADMIN,
    # Deprecated aliases (docs/api.md, "Aliases"): the canonical route's role
    ("POST", "/api/v1/payments/webhook/{provider}"): SIGNATURE,
    ("POST", "/api/payments"): SERVICE,
    ("GET", "/api/payments"): ADMIN,
    ("POST", "/api/payments/reconcile"): ADMIN,
    ("POST", "/api/payments/webhooks/{provider}"): SIGNATURE,
    ("GET", "/api/payments/{payment_id}"): SERVICE_OR_CUSTOMER,
    ("POST", "/api/payments/{payment_id}/confirm"): SERVICE,
    ("POST", "/api/payments/{payment_id}/refund"): ADMIN,
    ("GET", "/health/ready"): PUBLIC,
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/capture"): ADMIN,
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/void"): ADMIN,
    ("POST", "/api/v1/admin/orders/{order_id}/payments/{payment_id}/refund"): ADMIN,
    ("POST", "/api/v1/checkout/orders/{order_id}/payments/authorize"): SERVICE,
    ("POST", "/api/v1/checkout/orders/{order_id}/submit-payment"): SERVICE,
    ("GET", "/payments/{order_id}"): ADMIN,
}


def app_routes(app: FastAPI) -> list[Route]:
    """Every (method, path template) the app answers, HEAD aside; a mount is its GET."""
    found: set[Route] = set()
    for context in iter_route_contexts(app.routes):
        methods: set[str] = getattr(context, "methods", None) or {"GET"}
        path = context.path
        assert path is not None, context
        found.update((method, path) for method in methods if method != "HEAD")
    return sorted(found)


def customer_readable() -> list[Route]:
    """The routes a customer may call (each for its own records only)."""
    return sorted(route for route, access in ACCESS.items() if access.allows("customer"))
