"""The janitor: resolves provider operations whose outcome we do not know by asking the
provider (never by guessing), and cancels payments nobody confirmed in time.

Work is claimed by pushing `next_check_at` forward (a lease) in a short transaction, so
several workers never ask about the same operation at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    NoAnswer,
    Operation,
    OperationStatus,
    Outcome,
    Payment,
    PaymentStatus,
    Silence,
)
from tillpoint.service.context import Deps
from tillpoint.service.outcomes import apply_outcome, follow_payment
from tillpoint.service.ports import Lookup

log = structlog.get_logger("tillpoint.janitor")

LEASE = timedelta(minutes=2)
IN_FLIGHT_MARGIN = timedelta(seconds=30)
BATCH = 50
JANITOR = ChangeContext(source="janitor", actor="janitor")


def in_flight(op: Operation, now: datetime, deps: Deps) -> bool:
    """A PENDING operation touched within the provider timeout (plus a margin) may be with the
    provider right now: asking about it could find nothing and wrongly fail a charge that is
    about to happen. Sending an operation (`Operation.send`) touches `updated_at`."""
    grace = timedelta(seconds=deps.config.provider_timeout) + IN_FLIGHT_MARGIN
    return op.status is OperationStatus.PENDING and op.updated_at > now - grace


async def _claim(deps: Deps, *, everything: bool, seen: set[str]) -> list[Operation]:
    """Lease due operations by pushing `next_check_at` forward, under `FOR UPDATE SKIP LOCKED`
    on PostgreSQL, so parallel workers never pick the same row."""
    now = deps.clock.now()
    grace = timedelta(seconds=deps.config.provider_timeout) + IN_FLIGHT_MARGIN
    claimed: list[Operation] = []
    async with deps.uow() as uow:
        # "everything": a reconciliation pass asks about every open operation now.
        horizon = now + timedelta(days=3650) if everything else now
        for op in await uow.operations.due_for_check(horizon, BATCH + len(seen)):
            if op.id in seen:
                continue
            seen.add(op.id)
            if in_flight(op, now, deps):
                op.defer(op.updated_at + grace)
                await uow.operations.save(op)
                continue
            op.lease(now + LEASE)
            await uow.operations.save(op)
            claimed.append(op)
        await uow.commit()
    return claimed


async def resolve_open_operations(
    *, deps: Deps, everything: bool = False, counts: Callable[[int, int], int] | None = None
) -> int:
    """Resolve due operations; with `everything`, every open one, batch after batch.

    Returns how many operations were checked (or what `counts(checked, settled)` makes of it).
    """
    seen: set[str] = set()
    checked = settled = 0
    while True:
        looked_at = len(seen)
        ops = await _claim(deps, everything=everything, seen=seen)
        for op in ops:
            try:
                settled += await resolve_operation(op, deps=deps)
            except Exception:
                log.exception("janitor.resolve_failed", transaction_id=op.id)
        checked += len(ops)
        if not everything or len(seen) == looked_at:
            return checked if counts is None else counts(checked, settled)


async def resolve_operation(op: Operation, *, deps: Deps) -> bool:
    """Ask the provider about one operation; True when its outcome is now settled."""
    async with deps.uow() as uow:
        payment = await uow.payments.get(op.payment_id)
    if payment is None:
        return False
    provider = deps.providers[payment.provider]
    try:
        async with asyncio.timeout(deps.config.provider_timeout):
            truth = await provider.get_transaction(lookup_of(op, payment))
    except Exception as exc:  # the provider is still unreachable: ask again later
        await _reschedule(op, deps=deps, reason=f"lookup failed: {exc!r}")
        return False

    async with deps.uow() as uow:
        payment = await uow.payments.get(op.payment_id, for_update=True)
        current = await uow.operations.get(op.id)
        if payment is None or current is None or not current.open:
            return False
        if current.updated_at != op.updated_at:
            return False  # sent again (a retry) or answered while we asked: that path records it
        now = deps.clock.now()
        current.checked()
        answer = truth or NoAnswer(Silence.NOT_FOUND, "the provider has no record of it")
        change = await apply_outcome(uow, payment, current, answer, JANITOR, deps=deps)
        payment.reconciled(now, current, _status(truth))
        await uow.payments.save(payment)
        await uow.commit()
    deps.telemetry.count("janitor_resolved_total", status=truth.status.value if truth else "none")
    log.info(
        "janitor.resolved",
        transaction_id=op.id,
        payment_id=op.payment_id,
        provider_status=_status(truth),
        transition=f"{change.before}->{change.after}",
    )
    return not current.open


def lookup_of(op: Operation, payment: Payment) -> Lookup:
    return Lookup(
        idempotency_key=op.idempotency_key,
        kind=op.kind,
        payment_id=payment.id,
        provider_payment_id=payment.provider_payment_id,
        amount=op.amount,
        created_at=op.created_at,
    )


def _status(truth: Outcome | None) -> str:
    return truth.status.value if truth else "NOT_FOUND"


async def _reschedule(op: Operation, *, deps: Deps, reason: str) -> None:
    async with deps.uow() as uow:
        current = await uow.operations.get(op.id)
        if current is None or not current.open:
            return
        now = deps.clock.now()
        current.checked()
        current.reschedule(now, reason, now + deps.config.next_check(current.check_count))
        await uow.operations.save(current)
        await uow.commit()


async def cancel_stale_payments(*, deps: Deps) -> int:
    """`INITIATED` payments older than the payment TTL are canceled; their orders follow the
    failure policy."""
    now = deps.clock.now()
    async with deps.uow() as uow:
        stale = await uow.payments.stale_initiated(now - deps.config.payment_ttl, BATCH)
    canceled = 0
    for payment_id in stale:
        async with deps.uow() as uow:
            payment = await uow.payments.get(payment_id, for_update=True)
            if payment is None or payment.status is not PaymentStatus.INITIATED:
                continue
            if any(
                op.status is OperationStatus.PENDING
                for op in await uow.operations.open_for(payment_id)
            ):
                continue  # a confirmation is with the provider: let it finish
            change = payment.expire(now, JANITOR.source)
            await follow_payment(uow, payment, change, JANITOR, deps=deps)
            await uow.payments.save(payment)
            await uow.commit()
            canceled += 1
        log.info("janitor.payment_expired", payment_id=payment_id, transition="INITIATED->CANCELED")
    return canceled
