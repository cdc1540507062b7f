"""Use cases behind the consumed order events (`order.stock-confirmed`, `order.created.v1`).

Exactly-once *effects* over at-least-once delivery:

- The inbox (`inbox(consumer, message_id)`) remembers every message handled; a message seen
  again changes nothing and re-publishes the outcome of the payment it led to.
- An order is paid at most once whatever the message id: the payment is created with a
  request key derived from the order id (a unique column), at most one payment per order is
  active (a partial unique index), and the provider call carries the operation's derived
  idempotency key. A second request for an order that already has a payment re-publishes
  that payment's outcome instead of charging.
- Re-publishing writes a *fresh* outbox row: a copy of the payment's newest
  `payment.succeeded`/`payment.failed` message with a new `event_id` and the payment's next
  `sequence`, taken under the payment's row lock. The facts (`processed_at`, `occurred_at`,
  amounts) are the original ones; consumers that track `sequence` see it still count up.
- The inbox row is written last, after the payment committed: a crash in between redelivers
  the message, which then finds the payment and re-publishes its outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from tillpoint.domain.errors import (
    ActivePaymentExists,
    AmountMismatch,
    NotFound,
    OrderExists,
    OrderNotPayable,
    PaymentDeclined,
    RawCardDataRejected,
    SnapshotMismatch,
    ValidationFailed,
)
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import Payment, PaymentMethod, PaymentStatus
from tillpoint.service.context import Deps
from tillpoint.service.orders import CreateOrder, create_order
from tillpoint.service.payments import CreatePayment, confirm_payment, create_payment
from tillpoint.service.ports import InboxEntry

log = structlog.get_logger("tillpoint.consumers")

OUTCOME_ROUTING_KEYS = ("payment.succeeded", "payment.failed")
# Domain errors that no retry can fix: the message goes to the dead-letter queue.
PERMANENT = (
    ValidationFailed,
    AmountMismatch,
    NotFound,
    OrderNotPayable,
    RawCardDataRejected,
    SnapshotMismatch,
)


RAW_CARD_REASON = "raw_card_data_rejected: raw card numbers and CVCs are never accepted"


class RejectedMessage(Exception):
    """The message can never be handled (unparseable, invalid, contradicts what we know)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """An order message, validated: record the order and, when `pay`, pay it."""

    consumer: str
    message_id: str
    order_id: str
    buyer_id: str
    amount: Money
    pay: bool
    payment_method: PaymentMethod = field(default_factory=PaymentMethod)


@dataclass(frozen=True, slots=True)
class Subscription:
    """What one consumer reads: its inbox name, the durable queue bound to the events exchange
    by `binding`, and how a message body becomes an `OrderEvent` (raises `RejectedMessage`).
    Declared by `entrypoints/consumers.py`, consumed by `adapters/brokers/consumers.py`."""

    consumer: str  # the inbox's consumer name
    queue: str
    binding: str
    parse: Callable[[bytes, str], OrderEvent]

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dlq"


class Outcome(StrEnum):
    PAID = "paid"  # this message's payment was confirmed now (succeeded, failed or pending)
    REPUBLISHED = "republished"  # the order already had an outcome: published again
    PENDING = "pending"  # the order's payment has no outcome yet; it is published when it does
    RECORDED = "recorded"  # the order was recorded, nothing to pay
    DUPLICATE = "duplicate"  # a message already handled that led to no payment


@dataclass(frozen=True, slots=True)
class Handled:
    outcome: Outcome
    order_id: str
    payment_id: str | None = None
    status: str | None = None


class KeyedLocks:
    """Serializes messages about the same order inside one process; across processes the
    database constraints decide (and a loser is redelivered)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def request_key(order_id: str) -> str:
    """The payment request key of an order paid from an event: one payment per order."""
    return "order-event:" + hashlib.sha256(order_id.encode()).hexdigest()[:40]


async def handle_order_event(
    event: OrderEvent,
    *,
    deps: Deps,
    locks: KeyedLocks | None = None,
) -> Handled:
    """Raises `RejectedMessage` for a message no retry can fix; anything else is transient."""
    if locks is None:
        return await _handle(event, deps=deps)
    async with locks.hold(event.order_id):
        return await _handle(event, deps=deps)


async def _handle(event: OrderEvent, *, deps: Deps) -> Handled:
    bound = log.bind(consumer=event.consumer, message_id=event.message_id, order_id=event.order_id)
    async with deps.uow() as uow:
        seen = await uow.inbox.get(event.consumer, event.message_id)
    if seen is not None:
        bound.info("consumer.duplicate_message", payment_id=seen.payment_id)
        if seen.payment_id is None:
            return Handled(Outcome.DUPLICATE, event.order_id)
        return await _republish(seen.payment_id, event, deps=deps)
    ctx = ChangeContext("consumer", actor=event.consumer, correlation_id=event.message_id)
    try:
        await _ensure_order(event, ctx, deps=deps)
        if not event.pay:
            await _remember(event, None, deps=deps)
            return Handled(Outcome.RECORDED, event.order_id)
        payment, confirmed_now = await _pay(event, ctx, deps=deps)
    except PERMANENT as exc:
        raise RejectedMessage(f"{exc.code}: {exc.detail}") from exc
    if not confirmed_now:
        return await _republish(payment.id, event, deps=deps)
    await _remember(event, payment.id, deps=deps)
    bound.info("consumer.paid", payment_id=payment.id, status=payment.status.value)
    return Handled(Outcome.PAID, event.order_id, payment.id, payment.status.value)


async def _ensure_order(event: OrderEvent, ctx: ChangeContext, *, deps: Deps) -> None:
    # An order recorded earlier (by a message or the API) stays; the payment checks the amount.
    with contextlib.suppress(OrderExists):
        await create_order(
            CreateOrder(event.order_id, event.buyer_id, event.amount), ctx, deps=deps
        )


async def _pay(event: OrderEvent, ctx: ChangeContext, *, deps: Deps) -> tuple[Payment, bool]:
    """The order's payment and whether this call confirmed it (else it existed already)."""
    key = request_key(event.order_id)
    payment = await _newest_payment(event.order_id, deps=deps)
    if payment is None:
        try:
            payment = await create_payment(
                CreatePayment(
                    order_id=event.order_id,
                    amount=event.amount,
                    payment_method=event.payment_method,
                    request_key=key,
                ),
                ctx,
                deps=deps,
            )
        except ActivePaymentExists:  # another process won the race for this order
            payment = await _newest_payment(event.order_id, deps=deps)
            assert payment is not None
    if payment.status is not PaymentStatus.INITIATED or payment.request_key != key:
        return payment, False
    try:
        payment = await confirm_payment(payment.id, None, ctx, deps=deps, request_key=key)
    except PaymentDeclined as exc:
        payment = exc.payment
    return payment, True


async def _newest_payment(order_id: str, *, deps: Deps) -> Payment | None:
    async with deps.uow() as uow:
        payments = await uow.payments.for_order(order_id)
    return payments[0] if payments else None


async def _remember(event: OrderEvent, payment_id: str | None, *, deps: Deps) -> None:
    async with deps.uow() as uow:
        await uow.inbox.add(_entry(event, payment_id, deps))
        await uow.commit()


def _entry(event: OrderEvent, payment_id: str | None, deps: Deps) -> InboxEntry:
    return InboxEntry(
        event.consumer, event.message_id, event.order_id, payment_id, deps.clock.now()
    )


async def _republish(payment_id: str, event: OrderEvent, *, deps: Deps) -> Handled:
    async with deps.uow() as uow:
        payment = await uow.payments.get(payment_id, for_update=True)
        if payment is None:
            raise RejectedMessage(f"not_found: payment {payment_id} not found")
        latest = await uow.outbox.latest(payment.id, OUTCOME_ROUTING_KEYS)
        if latest is None:
            await uow.inbox.add(_entry(event, payment.id, deps))
            await uow.commit()
            log.info(
                "consumer.outcome_pending",
                order_id=event.order_id,
                payment_id=payment.id,
                status=payment.status.value,
            )
            return Handled(Outcome.PENDING, event.order_id, payment.id, payment.status.value)
        # A new message about the same fact: the payment records it as its next message.
        payment.republish(latest.routing_key, latest.message_type, latest.body, deps.clock.now())
        event_id = payment.events[-1].id
        await uow.payments.save(payment)
        await uow.inbox.add(_entry(event, payment.id, deps))
        await uow.commit()
    log.info(
        "consumer.outcome_republished",
        order_id=event.order_id,
        payment_id=payment.id,
        routing_key=latest.routing_key,
        event_id=event_id,
    )
    return Handled(Outcome.REPUBLISHED, event.order_id, payment.id, payment.status.value)
