"""The OpenAPI document as the API behaves: bearer auth, the `Idempotency-Key` header, problem
documents and the status codes each operation really answers.

Routes declare what they answer with `answers(...)` and `IDEMPOTENT` in their decorators; the
bearer scheme follows from `authenticate` (dependencies.py), so it cannot drift from the wiring.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from tillpoint.bootstrap import Container
from tillpoint.entrypoints.api.models import Problem
from tillpoint.entrypoints.api.problems import PROBLEM_JSON
from tillpoint.entrypoints.api.schemas import NO_CONTROL_PATTERN

PROBLEM_REF: Final = {"$ref": "#/components/schemas/Problem"}

IDEMPOTENCY_KEY: Final[dict[str, Any]] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": True,
    "description": (
        "1-255 printable ASCII characters. The first outcome is stored for 24 h and replayed "
        "byte for byte (with `Idempotent-Replayed: true`) to a retry with the same key and "
        "body; scope: (principal, method, route template)."
    ),
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}

REQUEST_ID: Final[dict[str, Any]] = {
    "description": "echoed from the request when it sent a well-formed one, else generated",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
REPLAYED: Final[dict[str, Any]] = {
    "description": "`true` when this is the stored answer of an earlier request with the key",
    "required": False,
    "schema": {"type": "string", "enum": ["true"]},
}

RATE_LIMITED: Final[dict[str, Any]] = {
    "Retry-After": {
        "description": "seconds until the limit admits a request again",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    **{
        f"RateLimit-{name}": {
            "description": what,
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        }
        for name, what in (
            ("Limit", "requests the window admits"),
            ("Remaining", "requests left in the window"),
            ("Reset", "seconds until the window admits a request again"),
        )
    },
}

IDEMPOTENT: Final[dict[str, Any]] = {"parameters": [IDEMPOTENCY_KEY]}
"""`openapi_extra` of every POST that goes through the idempotency layer."""

IDEMPOTENT_OR_BODY_KEY: Final[dict[str, Any]] = {
    "parameters": [
        {
            **IDEMPOTENCY_KEY,
            "required": False,
            "description": IDEMPOTENCY_KEY["description"]
            + " Required here unless the body carries `idempotency_key` (the header wins).",
        }
    ]
}

WHAT: Final[dict[int, str]] = {
    400: "`idempotency_key_missing`, `idempotency_key_invalid` or `malformed_json`",
    401: "`unauthenticated`: no or unknown bearer token",
    402: "declined: `code` is the failure code, `payment` the FAILED payment",
    403: "`forbidden`: the token's role may not do this",
    404: "`not_found` (also what a customer sees outside its own orders and payments)",
    409: "a conflict: see `code` (`idempotency_key_in_use` is retryable)",
    413: "`payload_too_large`: the body is larger than the limit",
    422: "`validation_error` (with `errors`) or a business refusal: see `code`",
    429: "`rate_limited` (with `Retry-After`)",
    502: "`provider_error`",
    503: "`provider_unavailable` or a lost database connection: retry with the same key",
    504: "`provider_timeout`: the outcome is resolved later by reconciliation",
}


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for the problem documents an operation answers with."""
    return {
        status: {
            "description": WHAT[status],
            "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
        }
        for status in statuses
    }


def ok(model: type[BaseModel], status: int = 200, description: str = "") -> dict[int | str, Any]:
    """The success response's model, documented without filtering the body through it."""
    return {status: {"model": model, "description": description or "Success"}}


def _operations(doc: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "responses" in operation:
                yield path, method, operation


def _problem_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {"Problem": schema, **defs}


def _no_control(parameter: dict[str, Any]) -> None:
    """Paths and query strings with a control character are refused (middleware.py): say so
    on every free-form string parameter."""
    if parameter.get("in") not in ("path", "query"):
        return
    schema = parameter.get("schema", {})
    for member in [schema, *schema.get("anyOf", [])]:
        if member.get("type") == "string" and not {"pattern", "enum", "format"} & set(member):
            member["pattern"] = NO_CONTROL_PATTERN


PROVIDER_BODIES: Final = ("CreatePaymentIn", "CheckoutPaymentIn")
"""The request bodies whose `provider` names the provider to call (a filter does not)."""


def _configured_providers(schemas: dict[str, Any], names: Iterable[str]) -> None:
    """A payment names one of the providers this server has configured, or none (the default):
    any other name is refused (422), so the document says which ones there are."""
    for body in PROVIDER_BODIES:
        provider = schemas.get(body, {}).get("properties", {}).get("provider", {})
        for member in provider.get("anyOf", []):
            if member.get("type") == "string":
                member["enum"] = sorted(names)


def document(app: FastAPI) -> dict[str, Any]:
    """The app's document, built once it runs: before startup (no container yet) the providers
    are unknown, and what is built then is not kept."""
    if app.openapi_schema:
        return app.openapi_schema
    container: Container | None = getattr(app.state, "container", None)
    doc = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update(_problem_schemas())
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    if container is not None:
        _configured_providers(schemas, container.providers)
    for _path, _method, operation in _operations(doc):
        if "401" in operation["responses"]:  # it authenticates, so it is rate limited
            operation["responses"]["429"] = {
                **answers(429)[429],
                "headers": dict(RATE_LIMITED),
            }
        for parameter in operation.get("parameters", []):
            _no_control(parameter)
        idempotent = any(
            p.get("name") == "Idempotency-Key" for p in operation.get("parameters", [])
        )
        for response in operation["responses"].values():
            headers = response.setdefault("headers", {})
            headers["X-Request-ID"] = REQUEST_ID
            if idempotent:
                headers["Idempotent-Replayed"] = REPLAYED
        for status, response in operation["responses"].items():
            schema = response.get("content", {}).get("application/json", {}).get("schema", {})
            if status.startswith("2") and "$ref" in schema:  # the model, not `dict[str, Any]`
                response["content"]["application/json"]["schema"] = {"$ref": schema["$ref"]}
        validation = operation["responses"].get("422")
        if validation is not None:  # FastAPI's default 422 is not what the API answers
            validation["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
            validation["description"] = WHAT[422]
    if container is not None:
        app.openapi_schema = doc
    return doc


def install(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        return document(app)

    app.openapi = build  # type: ignore[method-assign]
