from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tillpoint.entrypoints.api.dependencies import Admin, DepsDep
from tillpoint.entrypoints.api.models import LedgerOut
from tillpoint.entrypoints.api.openapi import answers, ok
from tillpoint.entrypoints.api.schemas import payment_json, refund_json, transaction_json
from tillpoint.service import payments

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
