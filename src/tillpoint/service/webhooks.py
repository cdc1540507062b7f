"""The webhook inbox: verified provider events are stored first and processed later.

Receiving only verifies the raw bytes and stores the event under its unique
`(provider, provider_event_id)`, so a provider's retries and duplicates are answered without
touching any payment. The worker then applies each stored event's signal forward-only, in one
transaction with its payment events and outbox rows, retrying with exponential backoff and
jitter until the event is `DEAD`. Nothing is ever dropped: an event for a payment we do not know
yet simply waits for its next attempt.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

import structlog

from tillpoint.domain.errors import DomainError, NotFound
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    NOT_YET_AUTHORIZED,
    Operation,
    OperationKind,
    Payment,
    PaymentStatus,
    RefundStatus,
)
from tillpoint.service.context import Deps
from tillpoint.service.payments import apply_result, follow_payment
from tillpoint.service.ports import ProviderResult, ProviderStatus, UnitOfWork

log = structlog.get_logger("tillpoint.webhooks")

BATCH = 50
WEBHOOK = ChangeContext(source="webhook", actor="webhook")


class WebhookStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSED = "PROCESSED"
    IGNORED = "IGNORED"
    FAILED = "FAILED"
    DEAD = "DEAD"


CLAIMABLE = frozenset({WebhookStatus.PENDING, WebhookStatus.FAILED})


# What a provider says happened, whatever its own event names: the same vocabulary as the
# answers to our own calls, so webhooks go through the same `apply_result` rules.
SignalKind = ProviderStatus


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
class Signal:
    kind: SignalKind
    provider_payment_id: str
    amount: Money | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    provider_refund_id: str | None = None
    next_action: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        _checked_text(
            "provider_payment_id", self.provider_payment_id, MAX_PROVIDER_ID, optional=False
        )
        _checked_text("provider_refund_id", self.provider_refund_id, MAX_PROVIDER_ID)
        _checked_text("failure_code", self.failure_code, MAX_FAILURE_CODE)
        _checked_text("failure_message", self.failure_message, MAX_FAILURE_MESSAGE, free=True)
        if self.next_action is not None and not isinstance(self.next_action, Mapping):
            raise MalformedEvent("`next_action` must be an object")


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


class UnknownProvider(NotFound):
    pass


class PaymentNotKnownYet(Exception):
    """The provider announced a payment before our own record of it committed: retry later."""


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


class Gauges(Protocol):
    def gauge(self, name: str, value: float) -> None: ...


@dataclass(frozen=True, slots=True)
class WebhookInbox:
    """Everything the webhook use cases need beyond `Deps`."""

    verifiers: Mapping[str, WebhookVerifier]
    events: Callable[[UnitOfWork], WebhookRepository]  # the repository on that transaction
    max_attempts: int = 10
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(hours=1)
    gauges: Gauges | None = None
    jitter: Callable[[], float] = field(default=random.random)

    def backoff(self, attempt: int) -> timedelta:
        """Exponential with "equal jitter": half the step fixed, half random, so retries of
        many events spread out instead of hitting the database together."""
        step: timedelta = min(self.retry_max, self.retry_base * 2 ** max(attempt - 1, 0))
        fraction: float = self.jitter()
        return step / 2 + step / 2 * fraction


# -- receiving --------------------------------------------------------------------------------


async def receive_webhook(
    provider: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    deps: Deps,
    inbox: WebhookInbox,
) -> bool:
    """Verify and store. Returns True for a duplicate. Applies nothing (the worker does)."""
    verifier = inbox.verifiers.get(provider)
    if verifier is None:
        raise UnknownProvider(f"no webhooks are accepted for provider {provider!r}")
    try:
        parsed = verifier.verify(body, headers)
    except InvalidSignature as exc:
        deps.telemetry.count("payment_webhook_total", provider=provider, status="invalid_signature")
        log.warning("webhook.invalid_signature", provider=provider, reason=str(exc))
        raise
    except MalformedEvent as exc:
        deps.telemetry.count("payment_webhook_total", provider=provider, status="malformed")
        log.warning(
            "webhook.malformed",
            provider=provider,
            reason=exc.reason,
            provider_event_id=exc.provider_event_id,
            stored=exc.provider_event_id is not None,
        )
        if exc.provider_event_id is None or exc.event_type is None:
            raise
        # Signed and identifiable: kept, and its processing fails with the reason until DEAD.
        parsed = ParsedEvent(exc.provider_event_id, exc.event_type, None)
    now = deps.clock.now()
    event = StoredWebhook(
        id=new_id("whe"),
        provider=provider,
        provider_event_id=parsed.provider_event_id,
        event_type=parsed.event_type,
        signature_valid=True,
        status=WebhookStatus.PENDING,
        provider_payment_id=parsed.signal.provider_payment_id if parsed.signal else None,
        headers=verifier.redact(headers),
        body=body,
        received_at=now,
        next_attempt_at=now,
    )
    async with deps.uow() as uow:
        stored = await inbox.events(uow).insert(event)
        await uow.commit()
    status = "received" if stored else "duplicate"
    deps.telemetry.count("payment_webhook_total", provider=provider, status=status)
    log.info(
        "webhook.received",
        provider=provider,
        provider_event_id=parsed.provider_event_id,
        event_type=parsed.event_type,
        provider_payment_id=event.provider_payment_id,
        duplicate=not stored,
    )
    return not stored


# -- processing -------------------------------------------------------------------------------


async def process_due_webhooks(*, deps: Deps, inbox: WebhookInbox, limit: int = BATCH) -> int:
    """Process up to `limit` due events, each in its own transaction. Returns how many."""
    done = 0
    while done < limit:
        outcome = await _process_next(deps=deps, inbox=inbox)
        if outcome is None:
            break
        done += 1
    if inbox.gauges is not None:
        async with deps.uow() as uow:
            inbox.gauges.gauge("webhook_backlog", await inbox.events(uow).backlog())
    return done


async def _process_next(*, deps: Deps, inbox: WebhookInbox) -> WebhookStatus | None:
    failure: Exception | None = None
    async with deps.uow() as uow:
        repo = inbox.events(uow)
        event = await repo.next_due(deps.clock.now())
        if event is None:
            return None
        try:
            status = await _apply(uow, event, deps=deps, inbox=inbox)
        except Exception as exc:
            failure = exc
        else:
            event.status = status
            event.attempt_count += 1
            event.processed_at = deps.clock.now()
            event.next_attempt_at = None
            event.last_error = None
            await repo.save(event)
            await uow.commit()
    if failure is None:
        deps.telemetry.count("payment_webhook_total", provider=event.provider, status=status.value)
        log.info(
            "webhook.processed",
            webhook_event_id=event.id,
            provider_event_id=event.provider_event_id,
            provider_payment_id=event.provider_payment_id,
            status=status.value,
        )
        return status
    return await _record_failure(event, failure, deps=deps, inbox=inbox)


async def _record_failure(
    event: StoredWebhook, failure: Exception, *, deps: Deps, inbox: WebhookInbox
) -> WebhookStatus:
    """The attempt's changes were rolled back; count it and schedule the next one (or give up)."""
    async with deps.uow() as uow:
        repo = inbox.events(uow)
        current = await repo.get(event.id, for_update=True)
        if current is None or current.status not in CLAIMABLE:
            return current.status if current else WebhookStatus.FAILED
        now = deps.clock.now()
        current.attempt_count += 1
        current.last_error = f"{type(failure).__name__}: {failure}"[:1000]
        if current.attempt_count >= inbox.max_attempts:
            current.status = WebhookStatus.DEAD
            current.next_attempt_at = None
        else:
            current.status = WebhookStatus.FAILED
            current.next_attempt_at = now + inbox.backoff(current.attempt_count)
        await repo.save(current)
        await uow.commit()
    deps.telemetry.count("payment_webhook_total", provider=event.provider, status=current.status)
    logger = log.warning if isinstance(failure, PaymentNotKnownYet | DomainError) else log.error
    logger(
        "webhook.attempt_failed",
        webhook_event_id=event.id,
        provider_event_id=event.provider_event_id,
        provider_payment_id=event.provider_payment_id,
        attempt=current.attempt_count,
        status=current.status.value,
        error=current.last_error,
        next_attempt_at=str(current.next_attempt_at) if current.next_attempt_at else None,
    )
    return current.status


_PAYMENT_OPS = (OperationKind.SALE, OperationKind.AUTHORIZE)


async def _apply(
    uow: UnitOfWork, event: StoredWebhook, *, deps: Deps, inbox: WebhookInbox
) -> WebhookStatus:
    """Apply one event's signal in the caller's transaction; returns the event's new status."""
    verifier = inbox.verifiers.get(event.provider)
    if verifier is None:
        raise UnknownProvider(f"provider {event.provider!r} is no longer configured")
    signal = verifier.parse(event.body).signal
    if signal is None:
        return WebhookStatus.IGNORED  # an event type we have nothing to do for
    payment = await uow.payments.by_provider_id(
        event.provider, signal.provider_payment_id, for_update=True
    )
    if payment is None:
        raise PaymentNotKnownYet(f"no {event.provider} payment {signal.provider_payment_id} yet")
    now = deps.clock.now()
    before, refunded_before = payment.status, payment.refunded_minor
    payment.note(
        "WEBHOOK_RECEIVED",
        now,
        webhook_event_id=event.id,
        provider=event.provider,
        provider_event_id=event.provider_event_id,
        provider_event_type=event.event_type,
        signal=signal.kind.value,
    )
    saved = False
    if signal.kind is SignalKind.DISPUTED:
        log.warning("payment.disputed", payment_id=payment.id, order_id=payment.order_id)
    elif signal.kind is SignalKind.REFUNDED:
        saved = await _apply_refund(uow, payment, signal, now, deps=deps)
    else:
        saved = await _apply_payment_signal(uow, payment, signal, now, deps=deps)
    changed = (
        signal.kind is SignalKind.DISPUTED
        or payment.status is not before
        or payment.refunded_minor != refunded_before
    )
    if not saved:
        await follow_payment(uow, payment, WEBHOOK, before, deps=deps)
        await uow.payments.save(payment)
        payment.check_invariants()
    return WebhookStatus.PROCESSED if changed else WebhookStatus.IGNORED


def _result(payment: Payment, signal: Signal, reference: str | None = None) -> ProviderResult:
    amount = signal.amount or payment.amount
    if amount.currency != payment.amount.currency:
        raise MalformedEvent(
            f"signal in {amount.currency} for a payment in {payment.amount.currency}"
        )
    return ProviderResult(
        status=signal.kind,
        provider_payment_id=signal.provider_payment_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        reference=reference,
        failure_code=signal.failure_code,
        failure_message=signal.failure_message,
        next_action=signal.next_action,
    )


async def _apply_payment_signal(
    uow: UnitOfWork, payment: Payment, signal: Signal, now: datetime, *, deps: Deps
) -> bool:
    """Through `apply_result` when the signal resolves an open provider operation (so the
    janitor stops asking about it), else straight through the aggregate's signal methods.
    Either way a signal for a state already passed is a recorded no-op. Returns True when
    `apply_result` already followed the order and saved the payment."""
    ops = await uow.operations.for_payment(payment.id)
    wanted: tuple[OperationKind, ...] = ()
    if payment.status in NOT_YET_AUTHORIZED:
        wanted = _PAYMENT_OPS
    elif payment.status is PaymentStatus.AUTHORIZED and signal.kind is SignalKind.CAPTURED:
        wanted = (OperationKind.CAPTURE,)
    elif payment.status is PaymentStatus.AUTHORIZED and signal.kind is SignalKind.CANCELED:
        wanted = (OperationKind.VOID,)
    open_op = next((op for op in ops if op.open and op.kind in wanted), None)
    result = _result(payment, signal)
    if open_op is not None:
        await apply_result(uow, payment, open_op, result, WEBHOOK, deps=deps)
        return True
    amount = payment.money(result.amount_minor)
    source = WEBHOOK.source
    match signal.kind:
        case SignalKind.AUTHORIZED:
            payment.authorized(amount, signal.provider_payment_id, now, source)
        case SignalKind.CAPTURED:
            payment.captured(
                amount, _transaction_id(ops, signal), signal.provider_payment_id, now, source
            )
        case SignalKind.FAILED:
            payment.failed(
                signal.failure_code or "card_declined", signal.failure_message, now, source
            )
        case SignalKind.CANCELED:
            payment.canceled("canceled at the provider", now, source)
        case SignalKind.PROCESSING:
            payment.mark_processing(now, source)
        case SignalKind.REQUIRES_ACTION:
            payment.require_action(
                signal.next_action or {}, signal.provider_payment_id, now, source
            )
    return False


def _transaction_id(ops: list[Operation], signal: Signal) -> str:
    """The ledger row the capture belongs to: the newest capture or sale operation."""
    for op in reversed(ops):
        if op.kind in (OperationKind.CAPTURE, OperationKind.SALE, OperationKind.AUTHORIZE):
            return op.id
    return signal.provider_payment_id


async def _apply_refund(
    uow: UnitOfWork, payment: Payment, signal: Signal, now: datetime, *, deps: Deps
) -> bool:
    """Settle the pending refund the signal is about. A refund we already recorded as
    succeeded is stale; one we have no record of yet (our own call has not committed) waits."""
    refunds = await uow.refunds.for_payment(payment.id)
    known = signal.provider_refund_id
    if known and any(
        r.provider_refund_id == known and r.status is RefundStatus.SUCCEEDED for r in refunds
    ):
        payment.note("STALE_SIGNAL_IGNORED", now, signal="refunded", source=WEBHOOK.source)
        return False
    pending = [r for r in refunds if r.status is RefundStatus.PENDING]
    by_ref = [r for r in pending if known and r.provider_refund_id == known]
    by_amount = [r for r in pending if signal.amount is None or r.amount == signal.amount]
    candidates = by_ref or by_amount
    refund = candidates[0] if candidates else None
    op = None
    if refund is not None:
        op = next(
            (
                o
                for o in await uow.operations.open_for(payment.id)
                if o.kind is OperationKind.REFUND and o.refund_id == refund.id
            ),
            None,
        )
    if refund is None or op is None:
        if not pending and any(r.status is RefundStatus.SUCCEEDED for r in refunds):
            payment.note("STALE_SIGNAL_IGNORED", now, signal="refunded", source=WEBHOOK.source)
            return False
        raise PaymentNotKnownYet(f"no pending refund of payment {payment.id} matches")
    result = ProviderResult(
        status=ProviderStatus.REFUNDED,
        provider_payment_id=signal.provider_payment_id,
        amount_minor=refund.amount.minor,
        currency=refund.amount.currency,
        reference=known,
    )
    await apply_result(uow, payment, op, result, WEBHOOK, deps=deps)
    return True


# -- administration ---------------------------------------------------------------------------


async def list_webhook_events(
    provider: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    *,
    deps: Deps,
    inbox: WebhookInbox,
) -> tuple[list[StoredWebhook], str | None]:
    async with deps.uow() as uow:
        return await inbox.events(uow).page(provider, status, limit, cursor)


async def replay_webhook(
    webhook_event_id: str, *, deps: Deps, inbox: WebhookInbox
) -> StoredWebhook:
    """Queue a stored event again (any status). Processing it again is safe: signals are
    forward-only, so a replay of an event already applied becomes `IGNORED`.

    A replay is an operator's decision to try again, so it gets a fresh retry budget: the
    attempt count starts over, and `last_error` keeps the reason it stopped until the next try.
    """
    async with deps.uow() as uow:
        repo = inbox.events(uow)
        event = await repo.get(webhook_event_id, for_update=True)
        if event is None:
            raise NotFound(f"webhook event {webhook_event_id} not found")
        event = replace(
            event,
            status=WebhookStatus.PENDING,
            next_attempt_at=deps.clock.now(),
            attempt_count=0,
        )
        await repo.save(event)
        await uow.commit()
    log.info(
        "webhook.replayed", webhook_event_id=event.id, provider_event_id=event.provider_event_id
    )
    return event
