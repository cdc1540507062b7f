"""Exception handlers: every error leaves as an RFC 9457 problem document."""

from __future__ import annotations

import re

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from tillpoint.domain.cards import mask_card_numbers
from tillpoint.domain.errors import DomainError, PaymentDeclined, ValidationFailed
from tillpoint.entrypoints.api.dependencies import ApiError
from tillpoint.entrypoints.api.problems import STATUS, problem, problem_body
from tillpoint.entrypoints.api.schemas import RAW_CARD_MESSAGE, payment_json
from tillpoint.service.ports import StorageUnavailable

log = structlog.get_logger("tillpoint.api")

HTTP_CODES = {
    400: "malformed_json",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    422: "validation_error",
}


def domain_problem(exc: DomainError) -> tuple[int, bytes]:
    if isinstance(exc, PaymentDeclined):
        return problem_body(exc.code, exc.detail, payment=payment_json(exc.payment))
    if isinstance(exc, ValidationFailed):
        return problem_body(
            "validation_error", exc.detail, errors=[{"loc": ["body", exc.field], "msg": exc.detail}]
        )
    return problem_body(exc.code, exc.detail, title=exc.title)


def _allowed_methods(request: Request) -> str:
    """Every method the API serves at this path, read from its OpenAPI document. Starlette's own
    `Allow` names only the first route whose path matched, though several routes may share a
    path (GET and PATCH of an order). A literal path (`/payments/reconcile`) wins over a
    template that also matches it (`/payments/{payment_id}`)."""
    matches: dict[int, set[str]] = {}
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods = matches.setdefault(template.count("{"), set())
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    allowed = matches[min(matches)] if matches else set()
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


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
        if any(err.get("type") == "json_invalid" for err in exc.errors()):
            return problem(
                "malformed_json", "the request body is not valid JSON", status=400, errors=errors
            )
        if any(err.get("type") == "raw_card_data" for err in exc.errors()):
            return problem("raw_card_data_rejected", RAW_CARD_MESSAGE, errors=errors)
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        return problem("validation_error", detail or "invalid request", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        """Starlette's and FastAPI's own refusals: 404 and 405 from routing (405 keeps its
        `Allow` header), 400 when a body cannot even be decoded."""
        status = exc.status_code
        code = HTTP_CODES.get(status) or next(
            (c for c, s in STATUS.items() if s == status), "internal_error"
        )
        detail = "the request body is not valid JSON" if code == "malformed_json" else exc.detail
        headers = dict(exc.headers or {})
        if status == 405:
            headers["Allow"] = _allowed_methods(request)
        return problem(code, str(detail), status=status, headers=headers)

    @app.exception_handler(StorageUnavailable)
    async def _storage(_: Request, exc: StorageUnavailable) -> Response:
        # Retryable and never stored under an Idempotency-Key: the retry resumes what this
        # attempt committed (operations and orders carry their request key).
        log.warning("request.database_unavailable", error=str(exc))
        return problem(
            "database_unavailable",
            "the database connection was lost; retry the request with the same Idempotency-Key",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> Response:
        log.exception("request.failed", error=type(exc).__name__)
        return problem("internal_error", "an unexpected error occurred; it has been logged")
