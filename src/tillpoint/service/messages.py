"""Domain event → published message: the one place that knows each dialect's body.

The domain records every published fact as an API.md body (`snake_case`, string ids, a
per-payment `sequence`). `default` publishes that body as it is. `foodies` publishes what seed
004's ordering service reads (`OrderPaymentSucceededEvent`, `OrderPaymentFailedEvent`):
camelCase, `orderId` a JSON number when the order id is numeric, `paymentId` the payment's
numeric `payment_number`. Events seed 004 does not define keep the default body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class EventDialect(StrEnum):
    DEFAULT = "default"
    FOODIES = "foodies"


# A Kotlin `Long`: no sign, no leading zero (that would change the id), at most 2**63 - 1.
_NUMERIC = re.compile(r"0|[1-9][0-9]{0,18}")
_LONG_MAX = 2**63 - 1


def order_id_value(order_id: str) -> int | str:
    """The order id as a JSON number when it is one, else the string it is."""
    if _NUMERIC.fullmatch(order_id) and int(order_id) <= _LONG_MAX:
        return int(order_id)
    return order_id


def _succeeded(body: Mapping[str, Any], payment_number: int | None) -> dict[str, Any]:
    return {
        "eventId": body["event_id"],
        "orderId": order_id_value(body["order_id"]),
        "paymentId": payment_number,
        "transactionId": body["transaction_id"],
        "amount": body["amount"],
        "currency": body["currency"],
        "processedAt": body["processed_at"],
    }


def _failed(body: Mapping[str, Any], _payment_number: int | None) -> dict[str, Any]:
    return {
        "eventId": body["event_id"],
        "orderId": order_id_value(body["order_id"]),
        "failureReason": body["failure_reason"],
        "failureCode": body["failure_code"],
        "occurredAt": body["occurred_at"],
    }


_FOODIES = {"payment.succeeded": _succeeded, "payment.failed": _failed}


def published_body(
    routing_key: str,
    body: Mapping[str, Any],
    *,
    dialect: EventDialect,
    payment_number: int | None,
) -> dict[str, Any]:
    """The body published for a domain event's API.md `body` under `dialect`."""
    if dialect is EventDialect.FOODIES and (mapper := _FOODIES.get(routing_key)) is not None:
        return mapper(body, payment_number)
    return dict(body)


def renumbered(body_json: str, event_id: str, sequence: int) -> str:
    """The same fact as a new message (a consumer asked again): a new event id and, where the
    body carries one, the payment's next sequence. Works for a row of either dialect."""
    body = json.loads(body_json)
    if "eventId" in body:
        body["eventId"] = event_id
    else:
        body["event_id"] = event_id
        body["sequence"] = sequence
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
