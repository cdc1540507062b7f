"""Stripe webhooks, verified with the official SDK (`stripe.WebhookSignature.verify_header`).

`Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, HMAC-SHA256 of `"{t}.{body}"` keyed with the whole
`whsec_…` string. Several signing secrets may be configured while one is rotated: a signature
made with any of them passes. The SDK rejects only timestamps too old; API.md asks for ±5
minutes, so one too far ahead is refused here as well. Parsing reads the event's JSON directly:
the SDK's `Event` objects never leave this module.

What each handled type becomes:

* `payment_intent.*`: the PaymentIntent's state; `next_action` reduced to its type (and the
  redirect URL when it carries no secret), a failure's codes mapped to ours (`stripe_codes`).
* `refund.created` / `.updated` / `.failed` and `charge.refund.updated` (a refund object), and
  `charge.refunded` (a charge with its refunds; the signal is about the newest refund listed):
  the refund's state, with Stripe's refund id and the idempotency key we sent in its metadata, so
  the service finds our refund even when our own call never learned Stripe's id. A charge that
  lists no refunds (API versions from 2022-11-15 leave the list out) says nothing to act on.
* `charge.dispute.created` / `.updated` / `.closed` (a dispute object): the chargeback, found by
  its `payment_intent` (or the expanded `charge`'s), with Stripe's dispute id, reason, evidence
  deadline and status mapped to ours (`DISPUTE_STATUSES`).
* Anything else: no signal (stored and IGNORED).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import stripe

from tillpoint.adapters.stripe_codes import our_code, our_next_action
from tillpoint.adapters.webhooks import redact
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money, exponent_of
from tillpoint.domain.payment import DisputeStatus, ProviderStatus
from tillpoint.service.ports import (
    MAX_FAILURE_MESSAGE,
    DisputeNotice,
    InvalidSignature,
    MalformedEvent,
    ParsedEvent,
    Signal,
    event_identity,
)

TOLERANCE: Final = 300
# The metadata entry our Stripe adapter puts on every refund it creates: the refund operation's
# provider idempotency key (`payment_transactions.idempotency_key`).
IDEMPOTENCY_METADATA: Final = "tillpoint_idempotency_key"

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
REFUND_EVENTS: Final = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)
# A refund's `status`: pending ones are still with Stripe (PROCESSING settles nothing).
REFUND_KINDS: Final[Mapping[str, ProviderStatus]] = {
    "pending": ProviderStatus.PROCESSING,
    "requires_action": ProviderStatus.PROCESSING,
    "succeeded": ProviderStatus.REFUNDED,
    "failed": ProviderStatus.FAILED,
    "canceled": ProviderStatus.FAILED,
}
DISPUTE_EVENTS: Final = frozenset(
    {"charge.dispute.created", "charge.dispute.updated", "charge.dispute.closed"}
)
# A dispute's `status`. The `warning_*` ones are inquiries (a retrieval request or an early
# fraud warning): no money has moved yet, but one may become a chargeback, so it is held the
# same way, and an inquiry that closes without one (`warning_closed`) gives it back like a won
# dispute. `charge_refunded` ends a dispute with our refund, which its own `refund.*` events
# count: the dispute itself takes nothing, so it closes as won; likewise `prevented`.
D = DisputeStatus
DISPUTE_STATUSES: Final[Mapping[str, DisputeStatus]] = {
    "warning_needs_response": D.NEEDS_RESPONSE,
    "warning_under_review": D.UNDER_REVIEW,
    "warning_closed": D.WON,
    "needs_response": D.NEEDS_RESPONSE,
    "under_review": D.UNDER_REVIEW,
    "won": D.WON,
    "lost": D.LOST,
    "charge_refunded": D.WON,
    "prevented": D.WON,
}
HANDLED_TYPES: Final = frozenset(
    {*INTENT_KINDS, *REFUND_EVENTS, "charge.refunded", *DISPUTE_EVENTS}
)


class StripeVerifier:
    provider = "stripe"

    def __init__(self, *secrets: str, now: Callable[[], float] = time.time) -> None:
        if not secrets or not all(secret.strip() for secret in secrets):
            raise ValueError("a stripe webhook secret is empty")
        self._secrets = secrets
        self._now = now

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ParsedEvent:
        header = {k.lower(): v for k, v in headers.items()}.get("stripe-signature")
        reason = "no signing secret"
        for secret in self._secrets:
            try:
                stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE)
            except stripe.SignatureVerificationError as exc:
                reason = str(exc.user_message or exc)
            except Exception as exc:  # e.g. a body that is not UTF-8
                raise InvalidSignature(type(exc).__name__) from None
            else:
                break
        else:
            raise InvalidSignature(reason)
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
        if event_type not in HANDLED_TYPES:
            return ParsedEvent(event_id, event_type, None)
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


def _id(value: object) -> str | None:
    """An id field, or the id of an expanded object in its place."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _signal(event_type: str, obj: Mapping[str, Any]) -> Signal | None:
    if event_type in INTENT_KINDS:
        return _intent_signal(INTENT_KINDS[event_type], obj)
    if event_type in REFUND_EVENTS:
        return _refund_signal(obj)
    if event_type == "charge.refunded":
        return _charge_refunded(obj)
    if event_type in DISPUTE_EVENTS:
        return _dispute_signal(obj)
    return None


def _dispute_signal(dispute: Mapping[str, Any]) -> Signal:
    charge = dispute.get("charge")
    provider_payment_id = _id(dispute.get("payment_intent")) or (
        _id(charge.get("payment_intent")) if isinstance(charge, Mapping) else None
    )
    if provider_payment_id is None:  # a charge made without a PaymentIntent: none of ours
        raise MalformedEvent("the dispute names no `payment_intent`")
    reference = _id(dispute.get("id"))
    if reference is None:
        raise MalformedEvent("the dispute has no `id`")
    status = dispute.get("status")
    ours = DISPUTE_STATUSES.get(status) if isinstance(status, str) else None
    if ours is None:
        raise MalformedEvent(f"unknown dispute status {status!r}")
    amount = _money(dispute.get("amount"), dispute.get("currency"))
    if amount is None or amount.minor <= 0:
        raise MalformedEvent("the dispute has no positive `amount` and `currency`")
    due_by = (dispute.get("evidence_details") or {}).get("due_by")
    return Signal(
        kind=ProviderStatus.DISPUTED,
        provider_payment_id=provider_payment_id,
        amount=amount,
        dispute=DisputeNotice(
            reference=reference,
            reason=_text(dispute.get("reason")) or "general",
            status=ours,
            # 0 or null: the card network takes no evidence for this dispute.
            evidence_due_by=datetime.fromtimestamp(due_by, UTC)
            if isinstance(due_by, int) and due_by > 0
            else None,
        ),
    )


def _intent_signal(kind: ProviderStatus, intent: Mapping[str, Any]) -> Signal:
    minor = intent.get(INTENT_AMOUNT.get(kind, "amount"))
    if minor is None:  # localstripe, for one, sends neither amount_received nor _capturable
        minor = intent.get("amount")
    failed = kind is ProviderStatus.FAILED
    error: Mapping[str, Any] = (intent.get("last_payment_error") or {}) if failed else {}
    message = _text(error.get("message"))
    return Signal(
        kind=kind,
        provider_payment_id=str(intent["id"]),
        amount=_money(minor, intent.get("currency")),
        failure_code=our_code(_text(error.get("code")), _text(error.get("decline_code")))
        if failed
        else None,
        failure_message=message[:MAX_FAILURE_MESSAGE] if message else None,
        next_action=our_next_action(intent.get("next_action"))
        if kind is ProviderStatus.REQUIRES_ACTION
        else None,
    )


def _refund_signal(
    refund: Mapping[str, Any], *, payment_intent: object = None, currency: object = None
) -> Signal | None:
    """A refund object's state. One that belongs to no PaymentIntent is none of ours."""
    provider_payment_id = _id(refund.get("payment_intent")) or _id(payment_intent)
    if provider_payment_id is None:
        return None
    status = refund.get("status")
    kind = REFUND_KINDS.get(status) if isinstance(status, str) else None
    if kind is None:
        raise MalformedEvent(f"unknown refund status {status!r}")
    refund_id = _id(refund.get("id"))
    if refund_id is None:
        raise MalformedEvent("the refund has no `id`")
    metadata = refund.get("metadata") or {}
    failed = kind is ProviderStatus.FAILED
    return Signal(
        kind=kind,
        provider_payment_id=provider_payment_id,
        amount=_money(refund.get("amount"), refund.get("currency") or currency),
        provider_refund_id=refund_id,
        idempotency_key=_text(metadata.get(IDEMPOTENCY_METADATA)),
        failure_code=(_text(refund.get("failure_reason")) or status) if failed else None,
    )


def _charge_refunded(charge: Mapping[str, Any]) -> Signal | None:
    """About the newest refund the charge lists (Stripe lists the newest first; `created`
    decides should it not). Each of our refunds is also announced by its own `refund.*`
    events, which is what finds a refund this choice passes over."""
    listed = (charge.get("refunds") or {}).get("data") or []
    refunds = [r for r in listed if isinstance(r, Mapping)]
    if not refunds:
        return None
    newest = max(refunds, key=lambda r: r.get("created") or 0)
    return _refund_signal(
        newest, payment_intent=charge.get("payment_intent"), currency=charge.get("currency")
    )
