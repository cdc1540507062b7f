"""Applying what the outside world says about an operation, whoever heard it: the answer to
our own call, a webhook, or the janitor's lookup. The rule itself is `Payment.apply`; this
loads what it needs, saves what it changed and moves the order to match."""

from __future__ import annotations

import structlog

from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    Change,
    NoAnswer,
    Operation,
    OperationKind,
    Outcome,
    Payment,
    PaymentStatus,
)
from tillpoint.service.context import Deps
from tillpoint.service.ports import UnitOfWork

log = structlog.get_logger("tillpoint.payments")


async def apply_outcome(
    uow: UnitOfWork,
    payment: Payment,
    op: Operation | None,
    outcome: Outcome | NoAnswer,
    ctx: ChangeContext,
    *,
    deps: Deps,
    transaction_id: str | None = None,
) -> Change:
    """`payment.apply` in the caller's transaction, with the refund `op` settles, then save
    everything and let the order follow. The caller commits."""
    now = deps.clock.now()
    refund = None
    if op is not None and op.kind is OperationKind.REFUND and op.refund_id is not None:
        refund = await uow.refunds.get(op.refund_id)
    change = payment.apply(
        outcome,
        op=op,
        now=now,
        source=ctx.source,
        check_at=now + deps.config.next_check(op.check_count if op is not None else 0),
        refund=refund,
        transaction_id=transaction_id,
    )
    if op is not None:
        await uow.operations.save(op)
    if refund is not None:
        await uow.refunds.save(refund)
    await follow_payment(uow, payment, change, ctx, deps=deps)
    await uow.payments.save(payment)
    payment.check_invariants()
    return change


async def follow_payment(
    uow: UnitOfWork, payment: Payment, change: Change, ctx: ChangeContext, *, deps: Deps
) -> None:
    """After a payment changed, log the transition and move its order to match."""
    if not change.moved:
        return
    log.info(
        "payment.transition",
        payment_id=payment.id,
        order_id=payment.order_id,
        provider_payment_id=payment.provider_payment_id,
        transition=f"{change.before}->{change.after}",
        source=ctx.source,
    )
    if change.after is PaymentStatus.AUTHORIZED:
        deps.telemetry.count("payment_authorized_total")
    order = await uow.orders.get(payment.order_id, for_update=True)
    if order is None:
        return
    if order.follow(
        payment.status,
        deps.config.failure_policy,
        deps.clock.now(),
        ctx,
        reason=f"payment {payment.id} {payment.status}",
    ):
        await uow.orders.save(order)
