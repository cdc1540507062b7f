from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, PlainTextResponse, Response

from tillpoint.adapters.telemetry import REGISTRY
from tillpoint.entrypoints.api.dependencies import ContainerDep
from tillpoint.entrypoints.api.models import Alive, Readiness
from tillpoint.entrypoints.api.openapi import ok

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Alive", responses=ok(Alive))
async def healthz() -> dict[str, str]:
    return {"status": "UP"}


@router.get(
    "/healthz/ready",
    summary="Database and broker reachable",
    responses={**ok(Readiness), **ok(Readiness, 503, "Not ready: a check is DOWN")},
)
async def ready(container: ContainerDep) -> Response:
    checks: dict[str, str] = {}
    try:
        async with container.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
        checks["database"] = "UP"
    except Exception:  # any failure means not ready
        checks["database"] = "DOWN"
    broker = container.extras.get("broker_health")
    if callable(broker):
        checks["broker"] = "UP" if await broker() else "DOWN"
    else:
        checks["broker"] = "UP"
    up = all(v == "UP" for v in checks.values())
    return JSONResponse(
        {"status": "UP" if up else "DOWN", "checks": checks}, status_code=200 if up else 503
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
