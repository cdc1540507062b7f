"""Stripe webhooks, verified with the official SDK (`stripe.WebhookSignature.verify_header`).

`Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 of `"{t}.{body}"` keyed with the whole
`whsec_…` string. The SDK rejects only timestamps too old; API.md asks for ±5 minutes, so one
too far ahead is refused here as well. Parsing reads the event's JSON directly: the SDK's
`Event` objects never leave this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import stripe

from tillpoint.adapters.webhooks import redact
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money, exponent_of
from tillpoint.domain.payment import ProviderStatus
from tillpoint.service.ports import (
    InvalidSignature,
    MalformedEvent,
    ParsedEvent,
    Signal,
    event_identity,
)

TOLERANCE: Final = 300

INTENT_KINDS: Final[Mapping[str, ProviderStatus]] = {
    "payment_intent.succeeded": ProviderStatus.CAPTURED,
    "payment_intent.payment_failed": ProviderStatus.FAILED,
    "payment_intent.amount_capturable_updated": ProviderStatus.AUTHORIZED,
    "payment_intent.canceled": ProviderStatus.CANCELED,
    "payment_intent.processing": ProviderStatus.PROCESSING,
    "payment_intent.requires_action": ProviderStatus.REQUIRES_ACTION,
}
# Which amount of a PaymentIntent the signal is about.
INTENT_AMOUNT: Final[Mapping[ProviderStatus, str]] = {
    ProviderStatus.CAPTURED: "amount_received",
    ProviderStatus.AUTHORIZED: "amount_capturable",
}


class StripeVerifier:
    provider = "stripe"

    def __init__(self, secret: str, *, now: Callable[[], float] = time.time) -> None:
        if not secret.strip():
            raise ValueError("the stripe webhook secret is empty")
        self._secret = secret
        self._now = now

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ParsedEvent:
        header = {k.lower(): v for k, v in headers.items()}.get("stripe-signature")
        try:
            stripe.WebhookSignature.verify_header(body, header, self._secret, TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            raise InvalidSignature(str(exc.user_message or exc)) from None
        except Exception as exc:  # e.g. a body that is not UTF-8
            raise InvalidSignature(type(exc).__name__) from None
        assert header is not None
        if _timestamp(header) > self._now() + TOLERANCE:
            raise InvalidSignature("timestamp is too far in the future")
        return self.parse(body)

    def parse(self, body: bytes) -> ParsedEvent:
        try:
            event = json.loads(body)
            event_id, event_type = event["id"], event["type"]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise MalformedEvent(f"not a Stripe event: {exc!r}") from None
        event_id, event_type = event_identity(event_id, event_type)
        try:  # identified: from here on a malformed event is stored, and failed when processed
            obj = event["data"]["object"]
            if not isinstance(obj, Mapping):
                raise TypeError("`data.object` must be an object")
            signal = _signal(event_type, obj)
        except MalformedEvent as exc:
            raise exc.of(event_id, event_type) from None
        except (KeyError, TypeError, ValueError, AttributeError, ValidationFailed) as exc:
            raise MalformedEvent(
                f"{event_type}: {exc!r}", provider_event_id=event_id, event_type=event_type
            ) from None
        return ParsedEvent(event_id, event_type, signal)

    def redact(self, headers: Mapping[str, str]) -> dict[str, str]:
        return redact(headers)


def _timestamp(header: str) -> int:
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            return int(value)
    raise InvalidSignature("no timestamp")  # unreachable: the SDK checked it


def _money(minor: object, currency: object) -> Money | None:
    if not isinstance(minor, int) or not isinstance(currency, str):
        return None
    exponent_of(currency.upper())  # an unknown currency is a malformed event
    return Money(minor, currency.upper())


def _signal(event_type: str, obj: Mapping[str, Any]) -> Signal | None:
    if event_type in INTENT_KINDS:
        kind = INTENT_KINDS[event_type]
        error = obj.get("last_payment_error") or {}
        amount_field = INTENT_AMOUNT.get(kind, "amount")
        return Signal(
            kind=kind,
            provider_payment_id=str(obj["id"]),
            amount=_money(obj.get(amount_field) or obj.get("amount"), obj.get("currency")),
            failure_code=(error.get("decline_code") or error.get("code")) if error else None,
            failure_message=error.get("message") if error else None,
            next_action=obj.get("next_action") if kind is ProviderStatus.REQUIRES_ACTION else None,
        )
    if event_type == "charge.refunded":
        refunds = (obj.get("refunds") or {}).get("data") or []
        latest = refunds[0] if refunds else {}
        return Signal(
            kind=ProviderStatus.REFUNDED,
            provider_payment_id=str(obj["payment_intent"]),
            amount=_money(latest.get("amount"), obj.get("currency")) if latest else None,
            provider_refund_id=latest.get("id") if latest else None,
        )
    if event_type == "charge.dispute.created":
        return Signal(
            kind=ProviderStatus.DISPUTED,
            provider_payment_id=str(obj["payment_intent"]),
            amount=_money(obj.get("amount"), obj.get("currency")),
            failure_code=obj.get("reason"),
        )
    return None
