"""`X-Request-ID` on every response, correlation ids echoed, both bound to every log line;
and the edge's limits on what a request may carry."""

from __future__ import annotations

import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tillpoint.config import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HEADER_BYTES
from tillpoint.domain.cards import find_card_numbers
from tillpoint.entrypoints.api.context import correlation_id_var, request_id_var
from tillpoint.entrypoints.api.problems import PROBLEM_JSON, problem_body
from tillpoint.entrypoints.api.schemas import CONTROL, CONTROL_MESSAGE

log = structlog.get_logger("tillpoint.api")

_SAFE_ID = re.compile(r"[A-Za-z0-9._:/=+-]{1,128}")


def _safe(sent: str) -> bool:
    """An id we may echo, log and store: its pattern, and never a card number."""
    return _SAFE_ID.fullmatch(sent) is not None and not find_card_numbers(sent)


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        sent = headers.get("x-request-id", "")
        request_id = sent if _safe(sent) else f"req_{uuid.uuid4().hex}"
        sent_correlation = headers.get("x-correlation-id", "")
        correlation_id = sent_correlation if _safe(sent_correlation) else None
        request_token = request_id_var.set(request_id)
        correlation_token = correlation_id_var.set(correlation_id)
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        if correlation_id:
            structlog.contextvars.bind_contextvars(correlation_id=correlation_id)

        started = False
        # API answers hold payment data: never cached by a browser or a proxy.
        private = str(scope.get("path", "")).startswith("/api/")

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(b"x-request-id", request_id.encode())]
                if correlation_id:
                    extra.append((b"x-correlation-id", correlation_id.encode()))
                if b"x-content-type-options" not in present:
                    extra.append((b"x-content-type-options", b"nosniff"))
                if private and b"cache-control" not in present:
                    extra.append((b"cache-control", b"no-store"))
                # A rate-limited route's counts (entrypoints/api/dependencies.py `admit`).
                limited = scope.get("state", {}).get("rate_limit_headers", {})
                extra += [
                    (name.lower().encode(), value.encode())
                    for name, value in limited.items()
                    if name.lower().encode() not in present
                ]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as exc:
            # Answered here, not by Starlette's outermost error handler: that one runs after
            # this middleware, so its 500 would carry neither X-Request-ID nor `request_id`.
            if started:
                raise
            log.exception("request.failed", error=type(exc).__name__)
            status, body = problem_body(
                "internal_error", "an unexpected error occurred; it has been logged"
            )
            await send_with_ids(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", PROBLEM_JSON.encode()),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_ids({"type": "http.response.body", "body": body})
        finally:
            request_id_var.reset(request_token)
            correlation_id_var.reset(correlation_token)
            structlog.contextvars.clear_contextvars()


class PayloadTooLarge(HTTPException):
    """The body grew past the cap while the app was reading it (an HTTP error, so FastAPI's
    body parsing passes it on instead of calling it a 400, and nothing logs it as a crash)."""

    def __init__(self) -> None:
        super().__init__(413, "the request body is too large")


class EdgeGuardMiddleware:
    """Refuses what no route should ever see, before it is read into memory or reaches a column.

    - headers larger than `max_header_bytes` in total → 431 `headers_too_large`;
    - a body larger than `max_body_bytes` → 413 `payload_too_large`: refused up front from
      `Content-Length`, and counted while it streams in (a chunked body, or a lying length), so
      no more than the cap is ever buffered;
    - a control character (NUL…) or lone surrogate in the path → 404 `not_found` (no id holds
      one), in a query parameter → 422 `validation_error`.

    The limits are the container's settings (`TILLPOINT_MAX_BODY_BYTES`,
    `TILLPOINT_MAX_HEADER_BYTES`), read per request from the app's state.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_body, max_headers = _limits(scope)
        header_bytes = sum(len(name) + len(value) for name, value in scope["headers"])
        if header_bytes > max_headers:
            await _refuse(
                send,
                "headers_too_large",
                f"the request headers total {header_bytes} bytes; at most {max_headers} are read",
            )
            return
        if CONTROL.search(scope["path"]):
            await _refuse(send, "not_found", "not found")
            return
        bad = _bad_query_parameters(scope.get("query_string", b""))
        if bad:
            await _refuse(
                send,
                "validation_error",
                "; ".join(f"query.{name}: {CONTROL_MESSAGE}" for name in bad),
                errors=[{"loc": ["query", name], "msg": CONTROL_MESSAGE} for name in bad],
            )
            return
        declared = _content_length(scope)
        if declared is not None and declared > max_body:
            await _refuse(send, "payload_too_large", _too_large(max_body))
            return
        await self._bounded(scope, receive, send, max_body)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send, max_body: int) -> None:
        received = 0
        overflowed = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, overflowed
            if overflowed:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    overflowed = True
                    raise PayloadTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if overflowed and not started:
                return  # the 413 is sent below; whatever the app makes of the failure is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not overflowed or started:
                raise
        if overflowed and not started:
            await _refuse(send, "payload_too_large", _too_large(max_body))


def _limits(scope: Scope) -> tuple[int, int]:
    app = scope.get("app")
    container = getattr(getattr(app, "state", None), "container", None)
    settings = getattr(container, "settings", None)
    return (
        getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        getattr(settings, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES),
    )


def _too_large(max_body: int) -> str:
    return f"the request body is larger than {max_body} bytes"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None
    return None


def _bad_query_parameters(query_string: bytes) -> list[str]:
    """Names of parameters whose name or value holds a control character, as Starlette reads
    them (latin-1, then percent-decoded as UTF-8)."""
    if not query_string:
        return []
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    bad = [name for name, value in pairs if CONTROL.search(name) or CONTROL.search(value)]
    return sorted({CONTROL.sub("?", name) for name in bad})


async def _refuse(send: Send, code: str, detail: str, **extra: Any) -> None:
    status, body = problem_body(code, detail, **extra)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
