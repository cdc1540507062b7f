from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Query, Request
from starlette.responses import JSONResponse, Response

from tillpoint.domain.money import Money
from tillpoint.domain.payment import CaptureMethod, PaymentMethod
from tillpoint.entrypoints.api.dependencies import (
    Admin,
    ContainerDep,
    DepsDep,
    Service,
    ServiceOrCustomer,
    buyer_scope,
    change_context,
)
from tillpoint.entrypoints.api.idempotent import Attempt, idempotent
from tillpoint.entrypoints.api.models import (
    EventList,
    PaymentOut,
    PaymentPage,
    ProviderPaymentOut,
    RefundOut,
    RunStarted,
)
from tillpoint.entrypoints.api.openapi import IDEMPOTENT, IDEMPOTENT_OR_BODY_KEY, answers, ok
from tillpoint.entrypoints.api.schemas import (
    CaptureIn,
    ConfirmIn,
    CreatePaymentIn,
    ListPaymentsQuery,
    MockCompleteIn,
    MockDashboardIn,
    ReconcileIn,
    RefundIn,
    VoidIn,
    amount_in,
    event_json,
    payment_json,
    provider_payment_json,
    refund_json,
)
from tillpoint.service import payments, reconciliation
from tillpoint.service.identity import Principal
from tillpoint.service.ports import PaymentFilter

router = APIRouter(prefix="/api/v1/payments", tags=["payments"])
# The mock gateway's own console, beside its `mock/complete` (included by the app).
mock_router = APIRouter(prefix="/api/v1/mock", tags=["mock gateway"])


@router.post(
    "",
    status_code=201,
    summary="Create a payment for an order (INITIATED)",
    responses={**ok(PaymentOut, 201), **answers(400, 401, 404, 409, 413, 422, 503)},
    openapi_extra=IDEMPOTENT_OR_BODY_KEY,
)
async def create_payment(
    body: CreatePaymentIn, request: Request, principal: Service, container: ContainerDep
) -> Response:
    async def action(attempt: Attempt) -> tuple[int, Any]:
        cmd = payments.CreatePayment(
            order_id=body.order_id,
            amount=body.money,
            provider=body.provider,
            capture_method=CaptureMethod(body.capture_method),
            payment_method=body.payment_method.domain() if body.payment_method else PaymentMethod(),
            snapshot_id=body.snapshot_id,
            request_key=attempt.request_key,
        )
        payment = await payments.create_payment(
            cmd, change_context(principal), deps=container.deps, resume=attempt.resumed
        )
        return 201, payment_json(payment)

    return await idempotent(request, principal, container, action, body_key=True)


@router.get(
    "",
    summary="List payments (admin), newest first, with filters and a cursor",
    responses={**ok(PaymentPage), **answers(401, 403, 404, 422)},
)
async def list_payments(
    query: Annotated[ListPaymentsQuery, Query()], principal: Admin, deps: DepsDep
) -> dict[str, Any]:
    filters = PaymentFilter(
        status=query.status,
        order_id=query.order_id,
        provider=query.provider,
        created_from=query.created_from,
        created_to=query.created_to,
    )
    found, cursor = await payments.list_payments(filters, query.limit, query.cursor, deps=deps)
    return {"data": [payment_json(p) for p in found], "next_cursor": cursor}


@router.post(
    "/reconcile",
    status_code=202,
    summary="Start a reconciliation run (admin)",
    responses={**ok(RunStarted, 202), **answers(400, 401, 403, 404, 409, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def reconcile(
    request: Request,
    principal: Admin,
    container: ContainerDep,
    background: BackgroundTasks,
    body: ReconcileIn | None = None,
) -> Response:
    """Compares the providers' view with ours over a window, after the answer is sent (the
    run's progress is `GET /api/v1/admin/reconciliation/runs/{run_id}`). Declared before the
    `/{payment_id}` routes so `reconcile` is never read as a payment id."""
    window = body or ReconcileIn()

    async def action(_: Attempt) -> tuple[int, Any]:
        run = await reconciliation.start_run(
            deps=container.deps,
            provider=window.provider,
            created_from=window.created_from,
            created_to=window.created_to,
        )
        assert run is not None  # only a scheduled run (with a slot) can be refused
        background.add_task(reconciliation.run_pass, run.run_id, deps=container.deps)
        return 202, {"run_id": run.run_id}

    return await idempotent(request, principal, container, action)


@router.get(
    "/{payment_id}",
    summary="A payment",
    responses={**ok(PaymentOut), **answers(401, 404, 422)},
)
async def get_payment(
    payment_id: str, principal: ServiceOrCustomer, deps: DepsDep
) -> dict[str, Any]:
    payment = await payments.get_payment(payment_id, deps=deps, buyer_id=buyer_scope(principal))
    return payment_json(payment, await payments.client_secret(payment, principal, deps=deps))


@router.get(
    "/{payment_id}/events",
    summary="The payment's own event log, oldest first",
    responses={**ok(EventList), **answers(401, 404, 422)},
)
async def payment_events(payment_id: str, principal: Service, deps: DepsDep) -> dict[str, Any]:
    events = await payments.payment_events(payment_id, deps=deps)
    return {"data": [event_json(e) for e in events]}


@router.post(
    "/{payment_id}/confirm",
    summary="Send the payment to its provider",
    responses={**ok(PaymentOut), **answers(400, 401, 402, 404, 409, 413, 422, 502, 503, 504)},
    openapi_extra=IDEMPOTENT,
)
async def confirm(
    payment_id: str,
    request: Request,
    principal: Service,
    container: ContainerDep,
    body: ConfirmIn | None = None,
) -> Response:
    method = body.payment_method.domain() if body and body.payment_method else None

    async def action(attempt: Attempt) -> tuple[int, Any]:
        payment = await payments.confirm_payment(
            payment_id,
            method,
            change_context(principal),
            deps=container.deps,
            request_key=attempt.request_key,
        )
        return 200, payment_json(payment)

    response = await idempotent(request, principal, container, action)
    return await with_client_secret(response, principal, container)


@router.post(
    "/{payment_id}/mock/complete",
    summary="Decide a mock payment's outcome",
    responses={**ok(PaymentOut), **answers(400, 401, 404, 409, 413, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def mock_complete(
    payment_id: str,
    body: MockCompleteIn,
    request: Request,
    principal: Service,
    container: ContainerDep,
) -> Response:
    async def action(attempt: Attempt) -> tuple[int, Any]:
        payment = await payments.mock_complete(
            payment_id,
            body.result == "SUCCESS",
            body.failure_code,
            change_context(principal),
            deps=container.deps,
            request_key=attempt.request_key,
        )
        return 200, payment_json(payment)

    return await idempotent(request, principal, container, action)


@mock_router.post(
    "/dashboard/{provider_payment_id}/{action}",
    summary="Act on a mock payment as a support agent in the provider's dashboard would",
    responses={**ok(ProviderPaymentOut), **answers(400, 401, 403, 404, 409, 413, 422)},
    openapi_extra=IDEMPOTENT,
)
async def mock_dashboard(
    provider_payment_id: str,
    action: Literal["refund", "capture", "cancel", "dispute"],
    request: Request,
    principal: Admin,
    container: ContainerDep,
    body: MockDashboardIn | None = None,
) -> Response:
    """The mock's side only (its own ledger), never tillpoint's payment; the answer is the
    mock's view of its payment afterwards."""
    given = body or MockDashboardIn()

    async def action_(attempt: Attempt) -> tuple[int, Any]:
        view = await container.mock.dashboard(
            provider_payment_id,
            action,
            key=attempt.request_key,
            amount=given.amount,
            reason=given.reason,
            webhook=given.webhook,
        )
        return 200, provider_payment_json(view)

    return await idempotent(request, principal, container, action_)


async def with_client_secret(
    response: Response, principal: Principal, container: ContainerDep
) -> Response:
    """Add the client secret to a payment answer (first or replayed) that waits for a customer
    step. The stored answer never holds it: it is asked from the provider for each answer."""
    raw = bytes(response.body)
    if response.status_code != 200 or b'"REQUIRES_ACTION"' not in raw:
        return response
    body = json.loads(raw)
    payment = await payments.get_payment(body["payment_id"], deps=container.deps)
    secret = await payments.client_secret(payment, principal, deps=container.deps)
    if secret is None:
        return response
    body["client_secret"] = secret
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return JSONResponse(body, status_code=response.status_code, headers=headers)


async def _amount(payment_id: str, amount: str | None, container: ContainerDep) -> Money | None:
    """Read before the idempotency layer: a malformed amount is a validation 422, never stored."""
    if amount is None:
        return None
    payment = await payments.get_payment(payment_id, deps=container.deps)
    return amount_in(amount, payment.amount.currency)


@router.post(
    "/{payment_id}/capture",
    summary="Capture an authorized payment, fully or partly",
    responses={**ok(PaymentOut), **answers(400, 401, 404, 409, 413, 422, 502, 503, 504)},
    openapi_extra=IDEMPOTENT,
)
async def capture(
    payment_id: str,
    request: Request,
    principal: Service,
    container: ContainerDep,
    body: CaptureIn | None = None,
) -> Response:
    amount = await _amount(payment_id, body.amount if body else None, container)

    async def action(attempt: Attempt) -> tuple[int, Any]:
        payment = await payments.capture_payment(
            payment_id,
            amount,
            change_context(principal),
            deps=container.deps,
            request_key=attempt.request_key,
        )
        return 200, payment_json(payment)

    return await idempotent(request, principal, container, action)


@router.post(
    "/{payment_id}/void",
    summary="Cancel a payment before capture",
    responses={**ok(PaymentOut), **answers(400, 401, 404, 409, 413, 422, 502, 503, 504)},
    openapi_extra=IDEMPOTENT,
)
async def void(
    payment_id: str,
    request: Request,
    principal: Service,
    container: ContainerDep,
    body: VoidIn | None = None,
) -> Response:
    async def action(attempt: Attempt) -> tuple[int, Any]:
        payment = await payments.void_payment(
            payment_id,
            body.reason if body else None,
            change_context(principal),
            deps=container.deps,
            request_key=attempt.request_key,
        )
        return 200, payment_json(payment)

    return await idempotent(request, principal, container, action)


@router.post(
    "/{payment_id}/refund",
    status_code=201,
    summary="Refund captured money (admin)",
    responses={**ok(RefundOut, 201), **answers(400, 401, 403, 404, 409, 413, 422, 502, 503, 504)},
    openapi_extra=IDEMPOTENT,
)
async def refund(
    payment_id: str,
    request: Request,
    principal: Admin,
    container: ContainerDep,
    body: RefundIn | None = None,
) -> Response:
    amount = await _amount(payment_id, body.amount if body else None, container)

    async def action(attempt: Attempt) -> tuple[int, Any]:
        result = await payments.refund_payment(
            payment_id,
            amount,
            body.reason if body else None,
            change_context(principal),
            deps=container.deps,
            request_key=attempt.request_key,
        )
        return 201, refund_json(result)

    return await idempotent(request, principal, container, action)
