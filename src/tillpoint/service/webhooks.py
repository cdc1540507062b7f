"""The webhook inbox: verified provider events are stored first and processed later.

Receiving only verifies the raw bytes and stores the event under its unique
`(provider, provider_event_id)`, so a provider's retries and duplicates are answered without
touching any payment. The worker then applies each stored event's signal forward-only, in one
transaction with its payment events and outbox rows, retrying with exponential backoff and
jitter until the event is `DEAD`. Nothing is ever dropped: an event for a payment we do not know
yet simply waits for its next attempt.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Final

import structlog

from tillpoint.domain.cards import redact_card_data, redact_card_json
from tillpoint.domain.errors import DomainError, NotFound
from tillpoint.domain.ids import new_id
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    NOT_YET_AUTHORIZED,
    PAYMENT_OPERATIONS,
    Change,
    Operation,
    OperationKind,
    Outcome,
    Payment,
    PaymentStatus,
    ProviderStatus,
    Refund,
    RefundStatus,
)
from tillpoint.service.context import Deps
from tillpoint.service.disputes import apply_dispute
from tillpoint.service.outcomes import apply_outcome
from tillpoint.service.ports import (
    CLAIMABLE,
    InvalidSignature,
    MalformedEvent,
    ParsedEvent,
    Signal,
    StoredWebhook,
    UnitOfWork,
    WebhookStatus,
    WebhookVerifier,
)

log = structlog.get_logger("tillpoint.webhooks")

BATCH = 50
# A client secret as Stripe spells them: `pi_…_secret_…`, `seti_…_secret_…`, `src_client_secret_…`.
CLIENT_SECRET: Final = re.compile(rb"\b[a-z]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+")
REDACTED: Final = b"[REDACTED]"
WEBHOOK = ChangeContext(source="webhook", actor="webhook")


class UnknownProvider(NotFound):
    pass


class PaymentNotKnownYet(Exception):
    """The provider announced a payment before our own record of it committed: retry later."""


@dataclass(frozen=True, slots=True)
class WebhookInbox:
    """Everything the webhook use cases need beyond `Deps`."""

    verifiers: Mapping[str, WebhookVerifier]
    max_attempts: int = 10
    retry_base: timedelta = timedelta(seconds=5)
    retry_max: timedelta = timedelta(hours=1)
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
        # Signed or not, card data is never kept: a body or header carrying a card number or a
        # CVC field is stored redacted (processing reads the fields it needs, never these).
        headers=redact_card_data(verifier.redact(headers))[0],
        body=without_client_secrets(redact_card_json(body)[0]),
        received_at=now,
        next_attempt_at=now,
    )
    async with deps.uow() as uow:
        stored = await uow.webhooks.insert(event)
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


def without_client_secrets(body: bytes) -> bytes:
    """The body with every client secret replaced (Stripe sends a PaymentIntent's with each of
    its events, and 3-D Secure URLs may embed one): a client secret is never stored. Processing
    reads other fields only; the body unchanged when it holds none."""
    if not CLIENT_SECRET.search(body) and b'"client_secret"' not in body:
        return body
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return CLIENT_SECRET.sub(REDACTED, body)
    return json.dumps(_scrub(document), separators=(",", ":"), ensure_ascii=False).encode()


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED.decode() if k == "client_secret" and value[k] else _scrub(value[k])
            for k in value
        }
    if isinstance(value, list):
        return [_scrub(item) for item in value]
    if isinstance(value, str):
        return CLIENT_SECRET.sub(REDACTED, value.encode()).decode()
    return value


# -- processing -------------------------------------------------------------------------------


async def process_due_webhooks(*, deps: Deps, inbox: WebhookInbox, limit: int = BATCH) -> int:
    """Process up to `limit` due events, each in its own transaction. Returns how many."""
    done = 0
    while done < limit:
        outcome = await _process_next(deps=deps, inbox=inbox)
        if outcome is None:
            break
        done += 1
    async with deps.uow() as uow:
        deps.telemetry.gauge("webhook_backlog", await uow.webhooks.backlog())
    return done


async def _process_next(*, deps: Deps, inbox: WebhookInbox) -> WebhookStatus | None:
    failure: Exception | None = None
    async with deps.uow() as uow:
        repo = uow.webhooks
        event = await repo.next_due(deps.clock.now())
        if event is None:
            return None
        try:
            status = await _apply(uow, event, deps=deps, inbox=inbox)
        except Exception as exc:
            failure = exc
        else:
            event.processed(status, deps.clock.now())
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
        repo = uow.webhooks
        current = await repo.get(event.id, for_update=True)
        if current is None or current.status not in CLAIMABLE:
            return current.status if current else WebhookStatus.FAILED
        now = deps.clock.now()
        error = f"{type(failure).__name__}: {failure}"
        last = current.attempt_count + 1 >= inbox.max_attempts
        current.attempt_failed(
            error, None if last else now + inbox.backoff(current.attempt_count + 1)
        )
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
    payment.webhook_received(
        deps.clock.now(),
        webhook_event_id=event.id,
        provider_event_id=event.provider_event_id,
        provider_event_type=event.event_type,
        signal=signal.kind.value,
    )
    if signal.dispute is not None:
        changed = await _apply_dispute(uow, payment, signal, deps=deps)
        return WebhookStatus.PROCESSED if changed else WebhookStatus.IGNORED
    if signal.kind is ProviderStatus.DISPUTED:  # a provider that names no dispute: noted only
        log.warning("payment.disputed", payment_id=payment.id, order_id=payment.order_id)
        await uow.payments.save(payment)
        return WebhookStatus.PROCESSED
    if signal.about_refund:
        changed = await _apply_refund(uow, payment, signal, deps=deps)
    else:
        changed = (await _apply_payment_signal(uow, payment, signal, deps=deps)).moved
    return WebhookStatus.PROCESSED if changed else WebhookStatus.IGNORED


async def _apply_dispute(uow: UnitOfWork, payment: Payment, signal: Signal, *, deps: Deps) -> bool:
    """Open, update or close the dispute the signal is about; returns whether anything
    changed (a repeated or stale report changes nothing)."""
    assert signal.dispute is not None
    notice = signal.dispute
    if signal.amount is None:
        raise MalformedEvent(f"dispute {notice.reference} names no amount")
    if signal.amount.currency != payment.amount.currency:
        raise MalformedEvent(
            f"dispute in {signal.amount.currency} for a payment in {payment.amount.currency}"
        )
    if signal.amount.minor <= 0:
        raise MalformedEvent(f"dispute {notice.reference} of {signal.amount.format()}")
    recorded = await apply_dispute(
        uow,
        payment,
        reference=notice.reference,
        amount_minor=signal.amount.minor,
        reason=notice.reason,
        status=notice.status,
        evidence_due_by=notice.evidence_due_by,
        deps=deps,
        source=WEBHOOK.source,
    )
    return recorded.changed


def _outcome(payment: Payment, signal: Signal) -> Outcome:
    amount = signal.amount or payment.amount
    if amount.currency != payment.amount.currency:
        raise MalformedEvent(
            f"signal in {amount.currency} for a payment in {payment.amount.currency}"
        )
    return Outcome(
        status=signal.kind,
        provider_payment_id=signal.provider_payment_id,
        amount_minor=amount.minor,
        currency=amount.currency,
        failure_code=signal.failure_code,
        failure_message=signal.failure_message,
        next_action=signal.next_action,
    )


def _awaiting(payment: Payment, signal: Signal) -> frozenset[OperationKind]:
    """The kinds of open operation this signal answers, given where the payment stands."""
    if payment.status in NOT_YET_AUTHORIZED:
        return PAYMENT_OPERATIONS
    if payment.status is PaymentStatus.AUTHORIZED and signal.kind is ProviderStatus.CAPTURED:
        return frozenset({OperationKind.CAPTURE})
    if payment.status is PaymentStatus.AUTHORIZED and signal.kind is ProviderStatus.CANCELED:
        return frozenset({OperationKind.VOID})
    return frozenset()


async def _apply_payment_signal(
    uow: UnitOfWork, payment: Payment, signal: Signal, *, deps: Deps
) -> Change:
    """The signal settles the open operation waiting for it (so the janitor stops asking), or
    with none waiting, moves the payment alone. Either way a signal for a state already passed
    is a recorded no-op."""
    ops = await uow.operations.for_payment(payment.id)
    wanted = _awaiting(payment, signal)
    open_op = next((op for op in ops if op.open and op.kind in wanted), None)
    return await apply_outcome(
        uow,
        payment,
        open_op,
        _outcome(payment, signal),
        WEBHOOK,
        deps=deps,
        transaction_id=_transaction_id(ops, signal),
    )


def _transaction_id(ops: list[Operation], signal: Signal) -> str:
    """The ledger row the capture belongs to: the newest capture or sale operation."""
    for op in reversed(ops):
        if op.kind in (OperationKind.CAPTURE, OperationKind.SALE, OperationKind.AUTHORIZE):
            return op.id
    return signal.provider_payment_id


async def _apply_refund(uow: UnitOfWork, payment: Payment, signal: Signal, *, deps: Deps) -> bool:
    """Settle the refund of ours the signal is about; returns whether anything changed.

    A refund already settled stays settled (the signal is stale). A refund we have no record of
    (made at the provider, in its dashboard) settles nothing of ours: a REFUNDED signal for it
    goes to `Payment.apply` without an operation, which records it; any other is stale.
    """
    refunds = await uow.refunds.for_payment(payment.id)
    ops = await uow.operations.for_payment(payment.id)
    refund = _our_refund(signal, refunds, ops)
    if refund is None and signal.kind is ProviderStatus.REFUNDED:
        outcome = replace(_outcome(payment, signal), reference=signal.provider_refund_id)
        return (await apply_outcome(uow, payment, None, outcome, WEBHOOK, deps=deps)).moved
    if refund is None or refund.status is not RefundStatus.PENDING:
        stale = "refunded" if signal.kind is ProviderStatus.REFUNDED else "refund_" + signal.kind
        payment.ignore_stale(stale.lower(), deps.clock.now(), WEBHOOK.source)
        await uow.payments.save(payment)
        return False
    op = next((o for o in ops if o.open and o.refund_id == refund.id), None)
    if op is None:
        raise PaymentNotKnownYet(f"refund {refund.id} of payment {payment.id} has no open call")
    outcome = Outcome(
        status=signal.kind,
        provider_payment_id=signal.provider_payment_id,
        amount_minor=refund.amount.minor,
        currency=refund.amount.currency,
        reference=signal.provider_refund_id,
        failure_code=signal.failure_code,
        failure_message=signal.failure_message,
    )
    change = await apply_outcome(uow, payment, op, outcome, WEBHOOK, deps=deps)
    settled = await uow.refunds.get(refund.id)
    return change.moved or (settled is not None and settled.status is not refund.status)


def _our_refund(signal: Signal, refunds: list[Refund], ops: list[Operation]) -> Refund | None:
    """Ours by the provider's refund id; else, when our call never learned that id (it timed
    out), by the idempotency key the provider echoes, which names exactly one refund or none of
    ours; else, from a provider that echoes no key, a pending refund of the signal's amount."""
    known = signal.provider_refund_id
    if known is not None:
        match = next((r for r in refunds if r.provider_refund_id == known), None)
        if match is not None:
            return match
    if signal.idempotency_key is not None:
        refund_id = next(
            (
                o.refund_id
                for o in ops
                if o.kind is OperationKind.REFUND and o.idempotency_key == signal.idempotency_key
            ),
            None,
        )
        return next((r for r in refunds if refund_id is not None and r.id == refund_id), None)
    pending = (
        r
        for r in refunds
        if r.status is RefundStatus.PENDING
        and (known is None or r.provider_refund_id is None)
        and (signal.amount is None or r.amount == signal.amount)
    )
    return next(pending, None)


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
        return await uow.webhooks.page(provider, status, limit, cursor)


async def replay_webhook(
    webhook_event_id: str, *, deps: Deps, inbox: WebhookInbox
) -> StoredWebhook:
    """Queue a stored event again (any status). Processing it again is safe: signals are
    forward-only, so a replay of an event already applied becomes `IGNORED`.

    A replay is an operator's decision to try again, so it gets a fresh retry budget: the
    attempt count starts over, and `last_error` keeps the reason it stopped until the next try.
    """
    async with deps.uow() as uow:
        repo = uow.webhooks
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
