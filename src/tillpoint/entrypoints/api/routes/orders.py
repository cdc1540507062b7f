from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from tillpoint.entrypoints.api.dependencies import (
    ContainerDep,
    DepsDep,
    Service,
    ServiceOrCustomer,
    buyer_scope,
    change_context,
)
from tillpoint.entrypoints.api.idempotent import Attempt, idempotent
from tillpoint.entrypoints.api.models import OrderOut, PaymentList, SnapshotOut
from tillpoint.entrypoints.api.openapi import IDEMPOTENT, answers, ok
from tillpoint.entrypoints.api.schemas import (
    CreateOrderIn,
    PatchOrderIn,
    QuoteIn,
    amount_in,
    history_json,
    order_json,
    payment_json,
    snapshot_json,
)
from tillpoint.service import orders

router = APIRouter(prefix="/api/v1", tags=["orders"])


@router.post(
    "/orders",
    status_code=201,
    summary="Register an order awaiting payment",
    responses={**ok(OrderOut, 201), **answers(400, 401, 404, 409, 413, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def create_order(
    body: CreateOrderIn, request: Request, principal: Service, container: ContainerDep
) -> Response:
    async def action(attempt: Attempt) -> tuple[int, Any]:
        cmd = orders.CreateOrder(body.order_id, body.buyer_id, body.money, attempt.request_key)
        order = await orders.create_order(cmd, change_context(principal), deps=container.deps)
        return 201, {**order_json(order), "history": []}

    return await idempotent(request, principal, container, action)


@router.get(
    "/orders/{order_id}",
    summary="An order with its status history, oldest first",
    responses={**ok(OrderOut), **answers(401, 404, 422)},
)
async def get_order(order_id: str, principal: ServiceOrCustomer, deps: DepsDep) -> dict[str, Any]:
    order, history = await orders.get_order(order_id, deps=deps, buyer_id=buyer_scope(principal))
    return {**order_json(order), "history": [history_json(h) for h in history]}


@router.patch(
    "/orders/{order_id}",
    summary="Change the amount of an order awaiting payment",
    responses={**ok(OrderOut), **answers(400, 401, 404, 409, 413, 422, 503)},
)
async def patch_order(
    order_id: str, body: PatchOrderIn, principal: Service, deps: DepsDep
) -> dict[str, Any]:
    current, _ = await orders.get_order(order_id, deps=deps)
    amount = amount_in(body.amount, current.amount.currency)
    order, history = await orders.change_order_amount(order_id, amount, deps=deps)
    return {**order_json(order), "history": [history_json(h) for h in history]}


@router.get(
    "/orders/{order_id}/payments",
    summary="An order's payments, newest first",
    responses={**ok(PaymentList), **answers(401, 404, 422)},
)
async def order_payments(
    order_id: str, principal: ServiceOrCustomer, deps: DepsDep
) -> dict[str, Any]:
    found = await orders.order_payments(order_id, deps=deps, buyer_id=buyer_scope(principal))
    return {"data": [payment_json(p) for p in found]}


@router.post(
    "/checkout/quote",
    status_code=201,
    tags=["checkout"],
    summary="Price an order into an expiring checkout snapshot",
    responses={**ok(SnapshotOut, 201), **answers(400, 401, 404, 409, 413, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def quote(
    body: QuoteIn, request: Request, principal: Service, container: ContainerDep
) -> Response:
    async def action(_: Attempt) -> tuple[int, Any]:
        cmd = orders.Quote(
            order_id=body.order_id,
            items=tuple(
                orders.QuoteItem(i.variant_id, i.quantity, i.unit_amount) for i in body.items
            ),
            shipping=body.shipping_amount,
            tax=body.tax_amount,
            discount=body.discount_amount,
        )
        return 201, snapshot_json(await orders.quote_checkout(cmd, deps=container.deps))

    return await idempotent(request, principal, container, action)
