"""`X-Request-ID` on every response, correlation ids echoed, both bound to every log line."""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tillpoint.domain.cards import find_card_numbers
from tillpoint.entrypoints.api.context import correlation_id_var, request_id_var
from tillpoint.entrypoints.api.problems import PROBLEM_JSON, problem_body

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

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [(b"x-request-id", request_id.encode())]
                if correlation_id:
                    extra.append((b"x-correlation-id", correlation_id.encode()))
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
