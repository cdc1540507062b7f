"""Provider webhooks: each provider's verifier (signature scheme and event format), what a
verified event reduces to, and the inbox rows they are kept in."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from tillpoint.domain.money import Money
from tillpoint.domain.payment import DisputeStatus, ProviderStatus


class WebhookStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSED = "PROCESSED"
    IGNORED = "IGNORED"
    FAILED = "FAILED"
    DEAD = "DEAD"


CLAIMABLE = frozenset({WebhookStatus.PENDING, WebhookStatus.FAILED})


class MalformedEvent(Exception):
    """Signed correctly, but not an event this provider sends.

    With `provider_event_id` and `event_type` the event could still be identified: it is stored
    like any other and its processing fails with this reason until it is `DEAD`, so the provider
    gets its 2xx and stops retrying, and an operator sees what arrived. Without them there is
    nothing to store it under: the delivery is refused with 400.
    """

    def __init__(
        self, reason: str, *, provider_event_id: str | None = None, event_type: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.provider_event_id = provider_event_id
        self.event_type = event_type

    def of(self, provider_event_id: str, event_type: str) -> MalformedEvent:
        """The same refusal, for an event whose identity is known."""
        return MalformedEvent(
            self.reason, provider_event_id=provider_event_id, event_type=event_type
        )


# Column sizes of what a signal or an event id ends up in (adapters/db/tables.py): longer, or
# holding a control character PostgreSQL cannot store, is malformed rather than a database error.
MAX_EVENT_ID = 255
MAX_EVENT_TYPE = 64
MAX_PROVIDER_ID = 128
MAX_FAILURE_CODE = 64
MAX_FAILURE_MESSAGE = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _checked_text(
    name: str, value: object, limit: int, *, optional: bool = True, free: bool = False
) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or (not value and not optional):
        raise MalformedEvent(f"`{name}` must be a non-empty string")
    if len(value) > limit:
        raise MalformedEvent(f"`{name}` is longer than {limit} characters")
    if (_CONTROL_IN_FREE_TEXT if free else _CONTROL).search(value):
        raise MalformedEvent(f"`{name}` holds a control character")


def event_identity(provider_event_id: object, event_type: object) -> tuple[str, str]:
    """The id and type an event is stored under, or `MalformedEvent` (nothing to store)."""
    _checked_text("id", provider_event_id, MAX_EVENT_ID, optional=False)
    _checked_text("type", event_type, MAX_EVENT_TYPE, optional=False)
    assert isinstance(provider_event_id, str)
    assert isinstance(event_type, str)
    return provider_event_id, event_type


@dataclass(frozen=True, slots=True)
class DisputeNotice:
    """What a dispute event says about the dispute (its amount is the signal's `amount`): the
    same facts reconciliation reads from a provider's `ProviderDispute`, so both go through
    `service/disputes.py` alike."""

    reference: str  # the provider's dispute id
    reason: str
    status: DisputeStatus
    evidence_due_by: datetime | None = None

    def __post_init__(self) -> None:
        _checked_text("dispute id", self.reference, MAX_PROVIDER_ID, optional=False)
        _checked_text("dispute reason", self.reason, MAX_FAILURE_CODE, optional=False)


@dataclass(frozen=True, slots=True)
class Signal:
    """What a provider event says about one of its payments, or about one of its refunds
    (`about_refund`): then `kind` is the refund's state (PROCESSING while the provider still
    works on it, REFUNDED, FAILED), `provider_refund_id` the provider's id of it and
    `idempotency_key` the provider idempotency key we sent it with, when the provider echoes it
    (it finds our refund when our own call never learned the provider's id). A chargeback is
    `DISPUTED` with its `dispute`."""

    kind: ProviderStatus
    provider_payment_id: str
    amount: Money | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    provider_refund_id: str | None = None
    next_action: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    dispute: DisputeNotice | None = None

    def __post_init__(self) -> None:
        _checked_text(
            "provider_payment_id", self.provider_payment_id, MAX_PROVIDER_ID, optional=False
        )
        _checked_text("provider_refund_id", self.provider_refund_id, MAX_PROVIDER_ID)
        _checked_text("idempotency_key", self.idempotency_key, MAX_PROVIDER_ID)
        _checked_text("failure_code", self.failure_code, MAX_FAILURE_CODE)
        _checked_text("failure_message", self.failure_message, MAX_FAILURE_MESSAGE, free=True)
        if self.next_action is not None and not isinstance(self.next_action, Mapping):
            raise MalformedEvent("`next_action` must be an object")

    @property
    def about_refund(self) -> bool:
        return self.kind is ProviderStatus.REFUNDED or self.provider_refund_id is not None


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    """A provider event reduced to what we act on; `signal` is None for types we ignore."""

    provider_event_id: str
    event_type: str
    signal: Signal | None

    def __post_init__(self) -> None:
        event_identity(self.provider_event_id, self.event_type)


class InvalidSignature(Exception):
    """The raw body does not carry a valid, fresh signature of this provider."""


class WebhookVerifier(Protocol):
    """One provider's signature scheme and event format (adapters/webhooks)."""

    provider: str

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ParsedEvent:
        """Check the signature over the raw bytes, then parse. Raises `InvalidSignature`
        (nothing about the body is trusted or parsed before that) or `MalformedEvent`."""
        ...

    def parse(self, body: bytes) -> ParsedEvent:
        """Parse a body that was verified when it was received (processing, replay)."""
        ...

    def redact(self, headers: Mapping[str, str]) -> dict[str, str]:
        """The headers worth keeping, with signatures replaced."""
        ...


@dataclass(slots=True)
class StoredWebhook:
    id: str
    provider: str
    provider_event_id: str
    event_type: str
    signature_valid: bool
    status: WebhookStatus
    provider_payment_id: str | None
    headers: dict[str, str]
    body: bytes
    received_at: datetime
    attempt_count: int = 0
    last_error: str | None = None
    processed_at: datetime | None = None
    next_attempt_at: datetime | None = None

    def processed(self, status: WebhookStatus, now: datetime) -> None:
        """Its signal was applied (PROCESSED) or had nothing to change (IGNORED)."""
        self.status = status
        self.attempt_count += 1
        self.processed_at = now
        self.next_attempt_at = None
        self.last_error = None

    def attempt_failed(self, error: str, retry_at: datetime | None) -> None:
        """One more failed attempt: retried at `retry_at`, or DEAD when there is none."""
        self.attempt_count += 1
        self.last_error = error[:1000]
        self.status = WebhookStatus.FAILED if retry_at is not None else WebhookStatus.DEAD
        self.next_attempt_at = retry_at


class WebhookRepository(Protocol):
    async def insert(self, event: StoredWebhook) -> bool:
        """False when `(provider, provider_event_id)` is already stored (a duplicate)."""
        ...

    async def next_due(self, now: datetime) -> StoredWebhook | None:
        """Lock one claimable event (PENDING, or FAILED and due); other workers skip it."""
        ...

    async def get(
        self, webhook_event_id: str, *, for_update: bool = False
    ) -> StoredWebhook | None: ...

    async def save(self, event: StoredWebhook) -> None: ...

    async def page(
        self, provider: str | None, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[StoredWebhook], str | None]: ...

    async def backlog(self) -> int:
        """Events still to be processed (PENDING or FAILED)."""
        ...
