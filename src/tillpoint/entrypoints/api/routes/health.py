from __future__ import annotations

import contextlib
from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tillpoint.entrypoints.api.dependencies import ContainerDep
from tillpoint.entrypoints.api.models import Alive, Readiness
from tillpoint.entrypoints.api.openapi import ok

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Alive", responses=ok(Alive))
async def healthz() -> dict[str, str]:
    return {"status": "UP"}


@router.get(
    "/healthz/ready",
    summary="Database (migrated) and broker reachable; relay progress",
    responses={**ok(Readiness), **ok(Readiness, 503, "Not ready: a check is DOWN")},
)
async def ready(container: ContainerDep) -> Response:
    """`database` and `broker` decide readiness. `relay` (`UP` or `STALLED`) is reported but
    does not take the API out of rotation: requests still commit safely into the outbox, and
    a stalled relay is the worker's problem, alerted on (docs/operations.md)."""
    checks: dict[str, str] = {"database": await container.database_check()}
    checks["broker"] = "UP" if await container.broker_check() else "DOWN"
    up = all(v == "UP" for v in checks.values())
    body: dict[str, Any] = {"status": "UP" if up else "DOWN", "checks": checks}
    if checks["database"] == "UP":
        with contextlib.suppress(Exception):  # the relay's report never decides readiness
            outbox = await container.outbox_health()
            checks["relay"] = "STALLED" if outbox.stalled else "UP"
            body["relay"] = {
                "backlog": outbox.backlog,
                "oldest_unpublished_age_seconds": round(outbox.oldest_age_seconds, 3),
            }
    return JSONResponse(body, status_code=200 if up else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(container: ContainerDep) -> Response:
    with contextlib.suppress(Exception):  # an unreachable database must not hide the rest
        await container.outbox_health()
        await container.reconciliation_age()
    body, content_type = container.telemetry.exposition()
    return Response(body, media_type=content_type)
