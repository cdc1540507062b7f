from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tillpoint.domain.payment import DisputeStatus
from tillpoint.domain.timestamps import rfc3339
from tillpoint.entrypoints.api.dependencies import Admin, DepsDep
from tillpoint.entrypoints.api.models import DisputePage, LedgerOut, ProviderCallList
from tillpoint.entrypoints.api.openapi import answers, ok
from tillpoint.entrypoints.api.schemas import (
    dispute_json,
    payment_json,
    refund_json,
    transaction_json,
)
from tillpoint.service import disputes, payments, provider_audit
from tillpoint.service.ports import ProviderCall

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@router.get(
    "/orders/{order_id}/payments",
    summary="The ledger: payments, operations, refunds",
    responses={**ok(LedgerOut), **answers(401, 403, 404, 422)},
)
async def order_ledger(order_id: str, principal: Admin, deps: DepsDep) -> dict[str, Any]:
    ledgers = await payments.order_ledger(order_id, deps=deps)
    return {
        "order_id": order_id,
        "data": [
            {
                **payment_json(entry.payment),
                "transactions": [transaction_json(op) for op in entry.transactions],
                "refunds": [refund_json(r) for r in entry.refunds],
            }
            for entry in ledgers
        ],
    }


@router.get(
    "/payments/{payment_id}/provider-calls",
    summary="The redacted audit of every outbound provider call of a payment, oldest first",
    responses={**ok(ProviderCallList), **answers(401, 403, 404, 422)},
)
async def provider_calls(payment_id: str, principal: Admin, deps: DepsDep) -> dict[str, Any]:
    calls = await provider_audit.list_provider_calls(payment_id, deps=deps)
    return {"data": [_call_json(call) for call in calls]}


@router.get(
    "/disputes",
    summary="Disputes (chargebacks), newest first",
    responses={**ok(DisputePage), **answers(401, 403, 404, 422)},
)
async def list_disputes(
    principal: Admin,
    deps: DepsDep,
    status: DisputeStatus | None = None,
    payment_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    found, next_cursor = await disputes.list_disputes(status, payment_id, limit, cursor, deps=deps)
    return {"data": [dispute_json(d) for d in found], "next_cursor": next_cursor}


def _call_json(call: ProviderCall) -> dict[str, Any]:
    return {
        "call_id": call.id,
        "provider": call.provider,
        "operation": call.operation,
        "payment_id": call.payment_id,
        "idempotency_key": call.idempotency_key,
        "provider_request_id": call.provider_request_id,
        "http_status": call.http_status,
        "outcome": call.outcome,
        "latency_ms": call.latency_ms,
        "correlation_id": call.correlation_id,
        "request": call.request_body,
        "response": call.response_body,
        "created_at": rfc3339(call.created_at),
    }
