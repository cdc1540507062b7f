"""The mock gateway's webhooks: Standard Webhooks v1 signatures (`standardwebhooks`).

`webhook-signature` is `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` keyed with the
base64-decoded part of the `whsec_…` secret; the timestamp must be within ±5 minutes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from standardwebhooks import Webhook

from tillpoint.adapters.webhooks import redact
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment import DisputeStatus, ProviderStatus
from tillpoint.service.ports import (
    DisputeNotice,
    InvalidSignature,
    MalformedEvent,
    ParsedEvent,
    Signal,
    event_identity,
)

EVENT_KINDS: Final[Mapping[str, ProviderStatus]] = {
    "payment.processing": ProviderStatus.PROCESSING,
    "payment.requires_action": ProviderStatus.REQUIRES_ACTION,
    "payment.authorized": ProviderStatus.AUTHORIZED,
    "payment.captured": ProviderStatus.CAPTURED,
    "payment.failed": ProviderStatus.FAILED,
    "payment.canceled": ProviderStatus.CANCELED,
    "refund.succeeded": ProviderStatus.REFUNDED,
    "payment.disputed": ProviderStatus.DISPUTED,
}


class StandardWebhooksVerifier:
    def __init__(self, provider: str, secret: str) -> None:
        if not secret.strip():
            raise ValueError(f"the {provider} webhook secret is empty")
        self.provider = provider
        self._webhook = Webhook(secret)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ParsedEvent:
        try:
            self._webhook.verify(body, dict(headers), json_parse=False)
        except Exception as exc:  # malformed headers raise ValueError, binascii.Error, …
            raise InvalidSignature(str(exc) or type(exc).__name__) from None
        return self.parse(body)

    def parse(self, body: bytes) -> ParsedEvent:
        try:
            event = json.loads(body)
            event_id, event_type = event["id"], event["type"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedEvent(f"not a webhook event: {exc!r}") from None
        event_id, event_type = event_identity(event_id, event_type)
        try:
            return self._parse(event_id, event_type, event)
        except MalformedEvent as exc:  # identified: stored, and failed when processed
            raise exc.of(event_id, event_type) from None

    def _parse(self, event_id: str, event_type: str, event: Mapping[str, Any]) -> ParsedEvent:
        data = event.get("data")
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise MalformedEvent("`data` must be an object")
        kind = EVENT_KINDS.get(event_type)
        if kind is None:
            return ParsedEvent(event_id, event_type, None)
        payment_id = data.get("provider_payment_id")
        if not isinstance(payment_id, str) or not payment_id:
            raise MalformedEvent("`data.provider_payment_id` is missing")
        return ParsedEvent(
            event_id,
            event_type,
            Signal(
                kind=kind,
                provider_payment_id=payment_id,
                amount=_amount(data),
                failure_code=_text(data, "failure_code"),
                failure_message=_text(data, "failure_message"),
                provider_refund_id=_text(data, "provider_refund_id"),
                dispute=_dispute(data) if kind is ProviderStatus.DISPUTED else None,
            ),
        )

    def redact(self, headers: Mapping[str, str]) -> dict[str, str]:
        return redact(headers)


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and value else None


def _dispute(data: Mapping[str, Any]) -> DisputeNotice:
    """`payment.disputed`: `provider_dispute_id`, `reason`, `status` (needs_response,
    under_review, won, lost) and an optional RFC 3339 `evidence_due_by`."""
    reference, reason = _text(data, "provider_dispute_id"), _text(data, "reason")
    if reference is None or reason is None:
        raise MalformedEvent("`data.provider_dispute_id` and `data.reason` are required")
    try:
        status = DisputeStatus(str(data.get("status")))
    except ValueError:
        raise MalformedEvent(f"`data.status` {data.get('status')!r} is no dispute status") from None
    due = _text(data, "evidence_due_by")
    try:
        evidence_due_by = datetime.fromisoformat(due) if due else None
    except ValueError:
        raise MalformedEvent("`data.evidence_due_by` is not an RFC 3339 time") from None
    return DisputeNotice(reference, reason, status, evidence_due_by)


def _amount(data: Mapping[str, Any]) -> Money | None:
    amount, currency = data.get("amount"), data.get("currency")
    if amount is None:
        return None
    if not isinstance(amount, str) or not isinstance(currency, str):
        raise MalformedEvent("`data.amount` must be a decimal string with `data.currency`")
    try:
        return Money.parse(amount, currency.upper())
    except ValidationFailed as exc:
        raise MalformedEvent(exc.detail) from None
