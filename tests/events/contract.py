"""The message contract: every body is checked against its JSON Schema in docs/schemas/."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
PUBLISHED = frozenset(
    {
        "payment.authorized",
        "payment.succeeded",
        "payment.failed",
        "payment.canceled",
        "payment.refunded",
        "payment.disputed",
        "payment.dispute_closed",
    }
)
CONSUMED = frozenset({"order.stock-confirmed", "order.created.v1"})


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def schema_name(routing_key: str, body: Any) -> str | None:
    """The schema of a message: seed 004's (`foodies`) dialect is told by its camelCase id."""
    if routing_key in PUBLISHED:
        foodies = isinstance(body, dict) and "eventId" in body
        return f"foodies.{routing_key}" if foodies else routing_key
    if routing_key in CONSUMED:
        return routing_key
    return None


def violations(routing_key: str, body: Any) -> list[str]:
    name = schema_name(routing_key, body)
    if name is None:
        return [f"{routing_key}: no schema in docs/schemas for this routing key"]
    return [
        f"{routing_key} ({name}.json) {list(error.absolute_path)}: {error.message}"
        for error in validator(name).iter_errors(body)
    ]
