"""Runs a mutating request through the idempotency layer and renders its outcome.

Auth and body validation run before this (as FastAPI dependencies), so 401, 403 and
validation 422 never reach the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import Request
from starlette.responses import Response

from tillpoint.bootstrap import Container
from tillpoint.domain.errors import DomainError
from tillpoint.entrypoints.api.dependencies import ApiError
from tillpoint.entrypoints.api.errors import domain_problem
from tillpoint.entrypoints.api.problems import PROBLEM_JSON, problem_body
from tillpoint.service.idempotency import fingerprint
from tillpoint.service.identity import Principal
from tillpoint.service.ports import StoredResponse


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at an idempotent request.

    `request_key` identifies the request across its attempts (a hash of the key's scope and the
    key): the use cases tag what they commit with it, so a retry finds the work again instead of
    doing it twice. `resumed` is True when this attempt took over a key left claimed by an
    attempt that died.
    """

    request_key: str
    resumed: bool = False


Action = Callable[[Attempt], Awaitable[tuple[int, Any]]]
MAX_KEY = 255


def _key(request: Request, body: Any, body_key: bool) -> str:
    key = request.headers.get("idempotency-key")
    if key is None and body_key and isinstance(body, dict):
        candidate = body.get("idempotency_key")
        key = candidate if isinstance(candidate, str) else None
    if key is None or key == "":
        raise ApiError(
            "idempotency_key_missing", "send an `Idempotency-Key` header (1-255 characters)"
        )
    if len(key) > MAX_KEY or not key.isascii() or not key.isprintable():
        raise ApiError(
            "idempotency_key_invalid", "an Idempotency-Key is 1-255 printable ASCII characters"
        )
    return key


def _json(status: int, payload: Any) -> StoredResponse:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return StoredResponse(status, body, {"content-type": "application/json"})


async def idempotent(
    request: Request,
    principal: Principal,
    container: Container,
    action: Action,
    *,
    body_key: bool = False,
) -> Response:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, RecursionError):  # a route without a body model ignores it: as text
        body = raw.decode("utf-8", errors="replace")
    key = _key(request, body, body_key)
    structlog.contextvars.bind_contextvars(idempotency_key=key)  # on every line of this request
    route = request.scope.get("route")
    # A deprecated alias (routes/aliases.py) shares its canonical route's keys: the same key
    # sent to either path is one request.
    canonical = getattr(route, "canonical_path", None)
    template = canonical or getattr(route, "path", request.url.path)
    path = canonical.format_map(request.path_params) if canonical else request.url.path
    scope = f"{principal.id} {request.method} {template}"
    request_key = hashlib.sha256(f"{scope}\x00{key}".encode()).hexdigest()

    async def work(resumed: bool) -> StoredResponse:
        try:
            status, payload = await action(Attempt(request_key, resumed))
        except DomainError as exc:
            status, problem = domain_problem(exc)
            return StoredResponse(
                status,
                problem,
                {"content-type": PROBLEM_JSON},
                storable=exc.stored,
            )
        return _json(status, payload)

    def refusal(code: str, detail: str) -> Callable[[], StoredResponse]:
        def render() -> StoredResponse:
            status, problem = problem_body(code, detail)
            return StoredResponse(status, problem, {"content-type": PROBLEM_JSON})

        return render

    stored = await container.idempotency.run(
        scope,
        key,
        fingerprint(path, body),
        work,
        on_reused=refusal(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request; use a new key",
        ),
        on_in_use=refusal(
            "idempotency_key_in_use",
            "a request with this Idempotency-Key is still running; retry shortly",
        ),
    )
    headers = {"Idempotent-Replayed": "true"} if stored.replayed else {}
    return Response(
        stored.body,
        status_code=stored.status_code,
        media_type=stored.headers.get("content-type", "application/json"),
        headers=headers,
    )
