"""RFC 9457 problem documents, and the one table mapping error codes to HTTP statuses."""

from __future__ import annotations

import json
from typing import Any, Final

from starlette.responses import Response

from tillpoint.entrypoints.api.context import request_id_var

PROBLEM_JSON: Final = "application/problem+json"
REFERENCE: Final = "/docs/reference"
"""Where the service serves docs/api.md; each error code is an anchor in its error table."""

STATUS: Final[dict[str, int]] = {
    "idempotency_key_missing": 400,
    "idempotency_key_invalid": 400,
    "malformed_json": 400,
    "unauthenticated": 401,
    "invalid_signature": 401,
    "card_declined": 402,
    "insufficient_funds": 402,
    "expired_card": 402,
    "fraud_suspected": 402,
    "invalid_card": 402,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "invalid_state_transition": 409,
    "active_payment_exists": 409,
    "order_exists": 409,
    "order_not_payable": 409,
    "amount_exceeds_capturable": 409,
    "amount_exceeds_refundable": 409,
    "snapshot_mismatch": 409,
    "provider_mismatch": 409,
    "idempotency_key_in_use": 409,
    "concurrent_update": 409,
    "payload_too_large": 413,
    "validation_error": 422,
    "amount_mismatch": 422,
    "raw_card_data_rejected": 422,
    "snapshot_expired": 422,
    "idempotency_key_reused": 422,
    "rate_limited": 429,
    "headers_too_large": 431,
    "internal_error": 500,
    "provider_error": 502,
    "provider_unavailable": 503,
    "database_unavailable": 503,
    "provider_timeout": 504,
}

TITLES: Final[dict[int, str]] = {
    400: "Bad request",
    401: "Unauthenticated",
    402: "Payment declined",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "Unprocessable content",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}


def status_of(code: str) -> int:
    return STATUS.get(code, 402 if code.endswith(("_declined", "_card", "_funds")) else 400)


def problem_type(code: str) -> str:
    """A URI reference to the code's row in the API reference this service serves."""
    return f"{REFERENCE}#{code}"


def problem_body(
    code: str,
    detail: str,
    *,
    status: int | None = None,
    title: str | None = None,
    **extra: Any,
) -> tuple[int, bytes]:
    status = status or status_of(code)
    doc = {
        "type": problem_type(code),
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": request_id_var.get(),
        **extra,
    }
    return status, json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def problem(
    code: str,
    detail: str,
    *,
    status: int | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    status, body = problem_body(code, detail, status=status, title=title, **extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
