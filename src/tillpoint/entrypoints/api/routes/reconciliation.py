"""Reconciliation runs and their discrepancies (admin): list them, resolve a flagged one.

Runs start with `POST /api/v1/payments/reconcile` (routes/payments.py) or on the worker's
schedule; the comparison itself is `service/reconciliation.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from tillpoint.entrypoints.api.dependencies import Admin, ContainerDep, DepsDep
from tillpoint.entrypoints.api.idempotent import Attempt, idempotent
from tillpoint.entrypoints.api.models import DiscrepancyOut, DiscrepancyPage, RunOut, RunPage
from tillpoint.entrypoints.api.openapi import IDEMPOTENT, answers, ok
from tillpoint.entrypoints.api.routes.exports import CSV_MEDIA_TYPE, CsvResponse, csv_response
from tillpoint.entrypoints.api.schemas import ResolveIn, discrepancy_json, run_json
from tillpoint.service import reconciliation
from tillpoint.service.exports import csv_chunks
from tillpoint.service.ports import DiscrepancyFilter

router = APIRouter(prefix="/api/v1/admin/reconciliation", tags=["reconciliation"])

KindQuery = Literal[
    "missing_at_provider",
    "missing_locally",
    "status_mismatch",
    "amount_mismatch",
    "refund_mismatch",
    "dispute_opened",
    "stuck",
]


@router.get(
    "/runs",
    summary="Reconciliation runs, newest first",
    responses={**ok(RunPage), **answers(401, 403, 404, 422)},
)
async def list_runs(
    principal: Admin,
    deps: DepsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    runs, next_cursor = await reconciliation.list_runs(deps=deps, limit=limit, cursor=cursor)
    return {"data": [run_json(r) for r in runs], "next_cursor": next_cursor}


@router.get(
    "/runs/{run_id}",
    summary="A reconciliation run and its counts",
    responses={**ok(RunOut), **answers(401, 403, 404, 422)},
)
async def get_run(run_id: str, principal: Admin, deps: DepsDep) -> dict[str, Any]:
    return run_json(await reconciliation.get_run(run_id, deps=deps))


@router.get(
    "/runs/{run_id}/discrepancies",
    summary="What a run found, oldest first",
    responses={**ok(DiscrepancyPage), **answers(401, 403, 404, 422)},
)
async def list_discrepancies(
    run_id: str,
    principal: Admin,
    deps: DepsDep,
    kind: KindQuery | None = None,
    action: Literal["healed", "flagged"] | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    found, next_cursor = await reconciliation.list_discrepancies(
        run_id, DiscrepancyFilter(kind, action), deps=deps, limit=limit, cursor=cursor
    )
    return {"data": [discrepancy_json(d) for d in found], "next_cursor": next_cursor}


@router.get(
    "/runs/{run_id}/discrepancies.csv",
    summary="What a run found, as a streamed CSV file (admin)",
    response_class=CsvResponse,
    responses={
        200: {
            "description": "the CSV file (UTF-8); its header is in docs/api.md (Reconciliation)",
            "content": {CSV_MEDIA_TYPE: {"schema": {"type": "string"}}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="discrepancies_<run_id>.csv"',
                    "required": True,
                    "schema": {"type": "string", "pattern": "^attachment; filename="},
                }
            },
        },
        **answers(401, 403, 404, 422),
    },
)
async def discrepancies_csv(run_id: str, principal: Admin, deps: DepsDep) -> CsvResponse:
    run = await reconciliation.get_run(run_id, deps=deps)  # 404 before the file starts
    records = reconciliation.discrepancy_records(run.run_id, deps=deps)
    chunks = csv_chunks(reconciliation.DISCREPANCY_HEADER, records)
    return await csv_response(chunks, f"discrepancies_{run.run_id}.csv")


@router.post(
    "/discrepancies/{discrepancy_id}/resolve",
    summary="Mark a flagged discrepancy handled, with a note (idempotent)",
    responses={**ok(DiscrepancyOut), **answers(400, 401, 403, 404, 409, 422, 503)},
    openapi_extra=IDEMPOTENT,
)
async def resolve(
    discrepancy_id: str,
    body: ResolveIn,
    request: Request,
    principal: Admin,
    container: ContainerDep,
) -> Response:
    async def action(_: Attempt) -> tuple[int, Any]:
        found = await reconciliation.resolve_discrepancy(
            discrepancy_id, body.note, principal.id, deps=container.deps
        )
        return 200, discrepancy_json(found)

    return await idempotent(request, principal, container, action)
