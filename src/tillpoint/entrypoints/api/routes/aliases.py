"""The seeds' own paths, as deprecated aliases of the canonical routes (docs/api.md, "Aliases").

An alias is the canonical route's handler mounted at another path: the same authentication,
body, answers and idempotency scope (a key sent to the alias and to the canonical path is one
request). Three seed paths have no single canonical twin and get a thin handler here that calls
the canonical use cases: seed 003's authorize and submit-payment (create, then confirm) and seed
004's payment of an order. No rule lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute, APIRouter
from pydantic import Field, StrictStr
from starlette.responses import Response

from tillpoint.domain.errors import NotFound
from tillpoint.domain.payment import CaptureMethod, PaymentMethod
from tillpoint.entrypoints.api.dependencies import (
    Admin,
    ContainerDep,
    DepsDep,
    Service,
    change_context,
)
from tillpoint.entrypoints.api.idempotent import Attempt, idempotent
from tillpoint.entrypoints.api.models import PaymentOut
from tillpoint.entrypoints.api.openapi import IDEMPOTENT, answers, ok
from tillpoint.entrypoints.api.routes import health, webhooks
from tillpoint.entrypoints.api.routes import orders as orders_routes
from tillpoint.entrypoints.api.routes import payments as payments_routes
from tillpoint.entrypoints.api.schemas import Body, PaymentMethodIn, amount_in, payment_json
from tillpoint.service import orders, payments
from tillpoint.service.identity import Principal

TAG: Final = "deprecated aliases (seed paths)"
CAPTURE: Final = "/api/v1/payments/{payment_id}/capture"
VOID: Final = "/api/v1/payments/{payment_id}/void"
REFUND: Final = "/api/v1/payments/{payment_id}/refund"
WEBHOOK: Final = "/api/v1/webhooks/{provider}"


class AliasRoute(APIRoute):
    """A route whose idempotency scope is its canonical route's (read by `idempotent`)."""

    canonical_path: str | None = None


async def _payment_of_order(order_id: str, payment_id: str, deps: DepsDep) -> None:
    """Seed 003 names the order in the path: a payment of another order is not found there."""
    payment = await payments.get_payment(payment_id, deps=deps)
    if payment.order_id != order_id:
        raise NotFound(f"payment {payment_id} is not a payment of order {order_id}")


# Seed 003's paths sit under /api/v1/admin/, so they are admin only (the canonical capture and
# void also serve the service role). The role is checked before the payment is looked up, so a
# caller the route refuses learns nothing, not even whether a payment belongs to an order (a
# customer gets the one 404 it gets on every route outside its own).
async def _admin_payment_of_order(order_id: str, payment_id: str, _: Admin, deps: DepsDep) -> None:
    await _payment_of_order(order_id, payment_id, deps)


# (method, seed path, canonical path, seed, extra dependencies)
ALIASES: Final[Sequence[tuple[str, str, str, str, Sequence[DependsParam]]]] = (
    ("POST", "/api/v1/payments/webhook/{provider}", WEBHOOK, "000", ()),
    ("POST", "/api/payments", "/api/v1/payments", "001", ()),
    ("GET", "/api/payments", "/api/v1/payments", "001", ()),
    ("POST", "/api/payments/reconcile", "/api/v1/payments/reconcile", "001", ()),
    ("POST", "/api/payments/webhooks/{provider}", WEBHOOK, "001", ()),
    ("GET", "/api/payments/{payment_id}", "/api/v1/payments/{payment_id}", "001", ()),
    (
        "POST",
        "/api/payments/{payment_id}/confirm",
        "/api/v1/payments/{payment_id}/confirm",
        "001",
        (),
    ),
    ("POST", "/api/payments/{payment_id}/refund", REFUND, "001", ()),
    ("GET", "/health/ready", "/healthz/ready", "001", ()),
    (
        "POST",
        "/api/v1/admin/orders/{order_id}/payments/{payment_id}/capture",
        CAPTURE,
        "003",
        (Depends(_admin_payment_of_order),),
    ),
    (
        "POST",
        "/api/v1/admin/orders/{order_id}/payments/{payment_id}/void",
        VOID,
        "003",
        (Depends(_admin_payment_of_order),),
    ),
    (
        "POST",
        "/api/v1/admin/orders/{order_id}/payments/{payment_id}/refund",
        REFUND,
        "003",
        (Depends(_admin_payment_of_order),),
    ),
)


class CheckoutPaymentIn(Body):
    """Seed 003's one-call payment: the order comes from the path, its amount is the default."""

    amount: StrictStr | None = Field(None, description="default: the order's amount")
    currency: StrictStr | None = Field(None, pattern=r"^[A-Z]{3}$")
    provider: StrictStr | None = Field(None, max_length=32)
    capture_method: Literal["automatic", "manual"] | None = None
    payment_method: PaymentMethodIn | None = None
    snapshot_id: StrictStr | None = Field(None, max_length=40)


async def _create_and_confirm(
    order_id: str,
    body: CheckoutPaymentIn,
    default_capture: CaptureMethod,
    request: Request,
    principal: Principal,
    container: ContainerDep,
) -> Response:
    order, _ = await orders.get_order(order_id, deps=container.deps)
    money = (
        amount_in(body.amount, body.currency or order.amount.currency)
        if body.amount is not None
        else order.amount
    )
    method = body.payment_method.domain() if body.payment_method else PaymentMethod()

    async def action(attempt: Attempt) -> tuple[int, Any]:
        ctx = change_context(principal)
        cmd = payments.CreatePayment(
            order_id=order_id,
            amount=money,
            provider=body.provider,
            capture_method=CaptureMethod(body.capture_method or default_capture),
            payment_method=method,
            snapshot_id=body.snapshot_id,
            # this route's own scope: the same key sent to POST /api/v1/payments is another request
            request_key=attempt.request_key,
        )
        created = await payments.create_payment(
            cmd, ctx, deps=container.deps, resume=attempt.resumed
        )
        confirmed = await payments.confirm_payment(
            created.id, None, ctx, deps=container.deps, request_key=attempt.request_key
        )
        return 200, payment_json(confirmed)

    return await idempotent(request, principal, container, action)


CHECKOUT_ANSWERS: Final = {
    **ok(PaymentOut, 200, "the confirmed payment, as `POST …/confirm` answers"),
    **answers(400, 401, 402, 404, 409, 413, 422, 502, 503, 504),
}


async def authorize(
    order_id: str,
    request: Request,
    principal: Service,
    container: ContainerDep,
    body: CheckoutPaymentIn,
) -> Response:
    """Create and confirm a payment that holds the funds (`capture_method` manual by default)."""
    return await _create_and_confirm(
        order_id, body, CaptureMethod.MANUAL, request, principal, container
    )


async def submit_payment(
    order_id: str,
    request: Request,
    principal: Service,
    container: ContainerDep,
    body: CheckoutPaymentIn,
) -> Response:
    """Create and confirm a payment (`capture_method` automatic by default)."""
    return await _create_and_confirm(
        order_id, body, CaptureMethod.AUTOMATIC, request, principal, container
    )


async def payment_of_order(order_id: str, principal: Admin, deps: DepsDep) -> dict[str, Any]:
    """Seed 004's admin view: the order's newest payment (404 when it has none)."""
    found = await orders.order_payments(order_id, deps=deps)
    if not found:
        raise NotFound(f"order {order_id} has no payment")
    return payment_json(found[0])


def _canonical(method: str, path: str) -> APIRoute:
    for module in (health, orders_routes, payments_routes, webhooks):
        for route in module.router.routes:
            if (
                isinstance(route, APIRoute)
                and route.path == path
                and method in (route.methods or ())
            ):
                return route
    raise LookupError(f"no canonical route {method} {path}")


def _mount(
    router: APIRouter,
    method: str,
    path: str,
    endpoint: Callable[..., Any],
    *,
    summary: str,
    seed: str,
    canonical: APIRoute | None = None,
    dependencies: Sequence[DependsParam] = (),
    status_code: int | None = None,
    responses: dict[int | str, dict[str, Any]] | None = None,
    openapi_extra: dict[str, Any] | None = None,
) -> None:
    kwargs: dict[str, Any] = {}
    if canonical is not None:
        kwargs["response_class"] = canonical.response_class
        status_code = canonical.status_code
        responses = canonical.responses
        openapi_extra = canonical.openapi_extra
        dependencies = [*canonical.dependencies, *dependencies]
    router.add_api_route(
        path,
        endpoint,
        methods=[method],
        status_code=status_code,
        responses=responses,
        openapi_extra=openapi_extra,
        dependencies=list(dependencies),
        summary=f"{summary} (seed {seed}; deprecated alias)",
        description=(
            f"Deprecated alias of `{method} {canonical.path}`: same auth, body, answers and "
            "idempotency keys."
            if canonical is not None
            else "Deprecated seed path; see docs/api.md, Aliases."
        ),
        tags=[TAG],
        deprecated=True,
        response_model=None,
        name=f"alias {method} {path}",
        route_class_override=AliasRoute,
        **kwargs,
    )
    route = router.routes[-1]
    assert isinstance(route, AliasRoute)
    route.canonical_path = canonical.path if canonical is not None else None


def build() -> APIRouter:
    """Every alias, in a router of its own (include it after the canonical routers)."""
    router = APIRouter()
    for method, path, target, seed, extra in ALIASES:
        canonical = _canonical(method, target)
        _mount(
            router,
            method,
            path,
            canonical.endpoint,
            summary=canonical.summary or target,
            seed=seed,
            canonical=canonical,
            dependencies=extra,
        )
    for path, endpoint, summary in (
        (
            "/api/v1/checkout/orders/{order_id}/payments/authorize",
            authorize,
            "Create and confirm a payment that holds the funds",
        ),
        (
            "/api/v1/checkout/orders/{order_id}/submit-payment",
            submit_payment,
            "Create and confirm a payment (temporary compatibility wrapper)",
        ),
    ):
        _mount(
            router,
            "POST",
            path,
            endpoint,
            summary=summary,
            seed="003",
            responses=CHECKOUT_ANSWERS,
            openapi_extra=IDEMPOTENT,
        )
    _mount(
        router,
        "GET",
        "/payments/{order_id}",
        payment_of_order,
        summary="The newest payment of an order (admin)",
        seed="004",
        responses={**ok(PaymentOut), **answers(401, 403, 404, 422)},
    )
    return router


def install(app: FastAPI) -> None:
    app.include_router(build())
