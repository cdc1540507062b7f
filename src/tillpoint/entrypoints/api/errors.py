"""Exception handlers: every error leaves as an RFC 9457 problem document."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from tillpoint.domain.cards import mask_card_numbers
from tillpoint.domain.errors import DomainError, PaymentDeclined, ValidationFailed
from tillpoint.entrypoints.api.dependencies import ApiError
from tillpoint.entrypoints.api.problems import problem, problem_body
from tillpoint.entrypoints.api.schemas import RAW_CARD_MESSAGE, payment_json

log = structlog.get_logger("tillpoint.api")


def domain_problem(exc: DomainError) -> tuple[int, bytes]:
    if isinstance(exc, PaymentDeclined):
        return problem_body(exc.code, exc.detail, payment=payment_json(exc.payment))
    if isinstance(exc, ValidationFailed):
        return problem_body(
            "validation_error", exc.detail, errors=[{"loc": ["body", exc.field], "msg": exc.detail}]
        )
    return problem_body(exc.code, exc.detail, title=exc.title)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return problem(exc.code, exc.detail, headers=exc.headers)

    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> Response:
        status, body = domain_problem(exc)
        return Response(body, status_code=status, media_type="application/problem+json")

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> Response:
        # Locations name the client's keys: a card number sent as a key is never echoed.
        errors = [
            {
                "loc": [
                    mask_card_numbers(p) if isinstance(p, str) else p for p in err.get("loc", ())
                ],
                "msg": mask_card_numbers(str(err.get("msg", "invalid"))),
            }
            for err in exc.errors()
        ]
        if any(err.get("type") == "raw_card_data" for err in exc.errors()):
            return problem("raw_card_data_rejected", RAW_CARD_MESSAGE, errors=errors)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem("validation_error", detail or "invalid request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 401: "unauthenticated", 403: "forbidden"}.get(
            exc.status_code, "validation_error" if exc.status_code == 422 else "http_error"
        )
        return problem(code, str(exc.detail), status=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("request.failed", error=type(exc).__name__)
        return problem("internal_error", "an unexpected error occurred; it has been logged")
