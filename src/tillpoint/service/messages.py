"""Domain event → published message: the one place that knows routing keys, `type` headers and
each dialect's body.

Every `Published` domain event becomes one outbox message (`outbox_message`). Its API.md body
is `snake_case` with string ids and the payment's `sequence`; `default` publishes that body as
it is. `foodies` publishes what seed
004's ordering service reads (`OrderPaymentSucceededEvent`, `OrderPaymentFailedEvent`):
camelCase, `orderId` a JSON number when the order id is numeric, `paymentId` the payment's
numeric `payment_number`. Events seed 004 does not define keep the default body.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

from tillpoint.domain.payment import events as ev
from tillpoint.domain.timestamps import rfc3339
from tillpoint.service.ports import OutboxMessage


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


# Failure codes of our API (402 codes) → the upper-case reasons of `payment.failed`.
EVENT_FAILURE_CODES: Final[Mapping[str, str]] = {
    "insufficient_funds": "INSUFFICIENT_FUNDS",
    "card_declined": "CARD_DECLINED",
    "expired_card": "CARD_EXPIRED",
    "invalid_card": "INVALID_CARD",
    "fraud_suspected": "FRAUD_SUSPECTED",
    "provider_error": "GATEWAY_ERROR",
    "provider_timeout": "TIMEOUT",
    "payment_expired": "TIMEOUT",
}


def _facts(event: ev.Published) -> tuple[str, dict[str, Any]]:
    """The routing key and the event-specific fields of an API.md body."""
    match event:
        case ev.PaymentAuthorized():
            return "payment.authorized", {
                "amount": event.amount.format(),
                "currency": event.amount.currency,
                "payment_method": dict(event.payment_method),
                "risk_score": event.risk_score,
            }
        case ev.PaymentCaptured():
            return "payment.succeeded", {
                "transaction_id": event.transaction_id,
                "amount": event.amount.format(),
                "currency": event.amount.currency,
                "processed_at": rfc3339(event.occurred_at),
            }
        case ev.PaymentFailed():
            return "payment.failed", {
                "failure_reason": event.failure_message or event.failure_code,
                "failure_code": EVENT_FAILURE_CODES.get(event.failure_code, "UNKNOWN"),
            }
        case ev.PaymentCanceled():
            return "payment.canceled", {"reason": event.reason}
        case ev.PaymentRefunded():
            return "payment.refunded", {
                "refund_id": event.refund_id,
                "amount": event.amount.format(),
                "currency": event.amount.currency,
            }
        case ev.PaymentDisputed():
            return "payment.disputed", {
                **_dispute(event.dispute),
                "evidence_due_by": rfc3339(event.dispute.evidence_due_by)
                if event.dispute.evidence_due_by
                else None,
                "disputed_amount": event.disputed_amount.format(),
            }
        case ev.PaymentDisputeClosed():
            return "payment.dispute_closed", {
                **_dispute(event.dispute),
                "disputed_amount": event.disputed_amount.format(),
                "refundable_amount": event.refundable_amount.format(),
            }
    raise TypeError(f"no message is defined for {type(event).__name__}")


def _dispute(dispute: ev.DisputeFacts) -> dict[str, Any]:
    return {
        "dispute_id": dispute.dispute_id,
        "provider_dispute_id": dispute.provider_dispute_id,
        "amount": dispute.amount.format(),
        "currency": dispute.amount.currency,
        "reason": dispute.reason,
        "status": dispute.status,
    }


def api_body(event: ev.Published) -> tuple[str, dict[str, Any]]:
    """The routing key and API.md body of a published domain event."""
    routing_key, facts = _facts(event)
    body: dict[str, Any] = {
        "event_id": event.id,
        "order_id": event.order_id,
        "payment_id": event.payment_id,
        **facts,
        "sequence": event.sequence,
    }
    if "processed_at" not in body:
        body["occurred_at"] = rfc3339(event.occurred_at)
    return routing_key, body


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


def outbox_message(
    event: ev.Published, *, dialect: EventDialect, payment_number: int | None
) -> OutboxMessage:
    """The outbox row that announces `event`."""
    if isinstance(event, ev.OutcomeRepublished):
        return OutboxMessage(
            event_id=event.id,
            aggregate_id=event.payment_id,
            routing_key=event.routing_key,
            message_type=event.message_type,
            sequence=event.sequence,
            body=renumbered(event.body, event.id, event.sequence),
            created_at=event.occurred_at,
        )
    routing_key, body = api_body(event)
    published = published_body(routing_key, body, dialect=dialect, payment_number=payment_number)
    return OutboxMessage(
        event_id=event.id,
        aggregate_id=event.payment_id,
        routing_key=routing_key,
        message_type=f"{routing_key}.v1",
        sequence=event.sequence,
        body=dump_json(published),
        created_at=event.occurred_at,
    )


def dump_json(value: Mapping[str, Any]) -> str:
    """Compact JSON, non-ASCII kept as it is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def renumbered(body_json: str, event_id: str, sequence: int) -> str:
    """The same fact as a new message (a consumer asked again): a new event id and, where the
    body carries one, the payment's next sequence. Works for a row of either dialect."""
    body = json.loads(body_json)
    if "eventId" in body:
        body["eventId"] = event_id
    else:
        body["event_id"] = event_id
        body["sequence"] = sequence
    return dump_json(body)
