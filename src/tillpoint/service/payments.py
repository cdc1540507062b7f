"""Payment use cases.

Every provider call sits between two short transactions (ARCHITECTURE.md rule 4). Each command
reads top to bottom as its phases: phase 1 commits the operation as PENDING with its provider
idempotency key; then the provider is asked (`provider_calls.ask`, with a timeout); phase 2
(`provider_calls.record`) applies the answer through `Payment.apply`. A timeout leaves the
operation UNKNOWN for the janitor, which asks the provider instead of guessing. A retry of the
same request (same request key) resumes the operation its first attempt left behind
(`provider_calls.resumable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog

from tillpoint.domain.errors import (
    ActivePaymentExists,
    AmountMismatch,
    InvalidStateTransition,
    NotFound,
    OrderNotPayable,
    PaymentDeclined,
    ProviderMismatch,
    SnapshotMismatch,
    ValidationFailed,
)
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext, OrderStatus
from tillpoint.domain.payment import (
    NOT_YET_AUTHORIZED,
    CaptureMethod,
    OperationKind,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
)
from tillpoint.service import provider_calls as calls
from tillpoint.service.context import Deps
from tillpoint.service.identity import Principal
from tillpoint.service.outcomes import follow_payment
from tillpoint.service.ports import (
    Ledger,
    MockControl,
    PaymentFilter,
    StoredEvent,
    UnitOfWork,
)

log = structlog.get_logger("tillpoint.payments")


@dataclass(frozen=True, slots=True)
class CreatePayment:
    order_id: str
    amount: Money
    provider: str | None = None
    capture_method: CaptureMethod = CaptureMethod.AUTOMATIC
    payment_method: PaymentMethod = field(default_factory=PaymentMethod)
    snapshot_id: str | None = None
    request_key: str | None = None


# -- reading -----------------------------------------------------------------------------------


async def _get(uow: UnitOfWork, payment_id: str, *, for_update: bool = False) -> Payment:
    payment = await uow.payments.get(payment_id, for_update=for_update)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found")
    return payment


async def get_payment(payment_id: str, *, deps: Deps, buyer_id: str | None = None) -> Payment:
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id)
    if buyer_id is not None and payment.buyer_id != buyer_id:
        raise NotFound(f"payment {payment_id} not found")
    return payment


async def client_secret(payment: Payment, viewer: Principal, *, deps: Deps) -> str | None:
    """The provider's client secret, for a storefront to finish a customer step (3-D Secure
    with Stripe.js): only while the payment waits for that step, and only for the `service`
    role or the customer who owns the payment. Asked from the provider each time, never kept."""
    owner = viewer.role == "customer" and viewer.subject == payment.buyer_id
    if viewer.role != "service" and not owner:
        return None
    if payment.status is not PaymentStatus.REQUIRES_ACTION or payment.provider_payment_id is None:
        return None
    provider = deps.providers[payment.provider]
    try:
        return await provider.client_secret(payment.provider_payment_id, payment_id=payment.id)
    except Exception as exc:  # the payment is the answer; the secret can be fetched again
        log.warning("payment.client_secret_unavailable", payment_id=payment.id, error=repr(exc))
        return None


async def list_payments(
    filters: PaymentFilter, limit: int, cursor: str | None, *, deps: Deps
) -> tuple[list[Payment], str | None]:
    async with deps.uow() as uow:
        return await uow.payments.page(filters, limit, cursor)


async def payment_events(payment_id: str, *, deps: Deps) -> list[StoredEvent]:
    async with deps.uow() as uow:
        await _get(uow, payment_id)
        return await uow.payments.events(payment_id)


async def order_ledger(order_id: str, *, deps: Deps) -> list[Ledger]:
    async with deps.uow() as uow:
        if await uow.orders.get(order_id) is None:
            raise NotFound(f"order {order_id} not found")
        return [
            Ledger(p, await uow.operations.for_payment(p.id), await uow.refunds.for_payment(p.id))
            for p in await uow.payments.for_order(order_id)
        ]


# -- creating ----------------------------------------------------------------------------------


async def create_payment(
    cmd: CreatePayment, ctx: ChangeContext, *, deps: Deps, resume: bool = False
) -> Payment:
    """Record an INITIATED payment for a payable order.

    One active payment per order is the partial unique index's job (the repository maps its
    violation to `ActivePaymentExists`), so the hot path reads nothing it does not need. A retry
    of the same request (same `request_key`) gets the payment its first attempt committed
    instead of a conflict or a second payment: looked up first when the idempotency layer says
    the request is resumed, and on a conflict otherwise (the first attempt's answer may have
    been lost with a database connection, which releases the key).
    """
    try:
        return await _create_payment(cmd, deps=deps, resume=resume)
    except (ActivePaymentExists, OrderNotPayable):
        if cmd.request_key is None:
            raise
        async with deps.uow() as uow:
            existing = await uow.payments.by_request_key(cmd.request_key)
        if (
            existing is None
            or existing.order_id != cmd.order_id
            or existing.created_at <= deps.clock.now() - deps.config.idempotency_ttl
        ):
            raise
        return existing


async def _create_payment(cmd: CreatePayment, *, deps: Deps, resume: bool) -> Payment:
    now = deps.clock.now()
    provider = cmd.provider or deps.config.default_provider
    if provider not in deps.providers:
        raise ValidationFailed("provider", f"unknown provider {provider!r}")
    capabilities = deps.providers[provider].capabilities
    capabilities.check(provider, cmd.amount, cmd.capture_method)
    capabilities.check_token(provider, cmd.payment_method.token, confirming=False)
    async with deps.uow() as uow:
        if resume and cmd.request_key is not None:
            existing = await uow.payments.by_request_key(cmd.request_key)
            if existing is not None:
                return existing
        order = await uow.orders.get(cmd.order_id, for_update=True)
        if order is None:
            raise NotFound(f"order {cmd.order_id} not found")
        if order.status is not OrderStatus.PAYMENT_PENDING:
            raise OrderNotPayable(f"order {order.order_id} is {order.status}")
        if cmd.amount != order.amount:
            raise AmountMismatch(
                f"payment of {cmd.amount} does not match the order amount {order.amount}"
            )
        if cmd.snapshot_id is not None:
            snapshot = await uow.snapshots.get(cmd.snapshot_id)
            if snapshot is None:
                raise SnapshotMismatch(f"snapshot {cmd.snapshot_id} does not exist")
            snapshot.bind(order.order_id, order.amount, now)
        payment = Payment.initiate(
            order_id=order.order_id,
            buyer_id=order.buyer_id,
            amount=cmd.amount,
            capture_method=cmd.capture_method,
            provider=provider,
            payment_method=cmd.payment_method,
            snapshot_id=cmd.snapshot_id,
            request_key=cmd.request_key,
            now=now,
        )
        await uow.payments.add(payment)
        await uow.commit()
    deps.telemetry.count("payment_create_total", status="created")
    log.info(
        "payment.created",
        payment_id=payment.id,
        order_id=payment.order_id,
        amount=payment.amount.format(),
        currency=payment.amount.currency,
        provider=provider,
        transition="->INITIATED",
    )
    return payment


# -- lifecycle commands --------------------------------------------------------------------------


async def confirm_payment(
    payment_id: str,
    method: PaymentMethod | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Payment:
    """Send an INITIATED payment to its provider.

    An operation left PENDING by a process that died is sent again with the same provider
    idempotency key, so the provider answers with what it already did instead of charging twice.
    A retry of a request whose operation finished answers with the payment as it stands.
    """
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        op = await calls.resumable(uow, payment, request_key, deps=deps)
        new = False
        # A payment that never had an operation has none to resume: skip the lookup.
        unsent = payment.status is PaymentStatus.INITIATED and payment.operation_count > 0
        if op is None and unsent:
            op = await calls.open_confirmation(uow, payment, pending_only=True)
            if op is not None:
                op.resend_for(request_key, deps.clock.now())
        if op is None:
            token = (method or payment.payment_method).token
            capabilities = deps.providers[payment.provider].capabilities
            capabilities.check_token(payment.provider, token, confirming=True)
            op, new = payment.begin_confirmation(deps.clock.now(), method, request_key), True
        if op.open:
            calls.ensure_available(deps.providers[payment.provider])
            await calls.send(uow, payment, op, new=new, deps=deps)

    if op.open:
        provider = deps.providers[payment.provider]
        request = calls.authorize_request(payment, op)
        key = op.idempotency_key
        answer = await calls.ask(
            deps, provider, op, lambda: provider.authorize(request, idempotency_key=key)
        )
        payment, op = await calls.record(payment_id, op, answer, ctx, deps=deps)

    deps.telemetry.count("payment_confirm_total", status=payment.status.value)
    if (error := calls.provider_error(op, refused_is_error=False)) is not None:
        raise error
    if payment.status is PaymentStatus.FAILED:
        raise PaymentDeclined(
            payment.failure_code or "card_declined",
            payment.failure_message or "the payment was declined",
            payment,
        )
    return payment


async def mock_complete(
    payment_id: str,
    success: bool,
    failure_code: str | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Payment:
    """Decide a mock payment's outcome, as a customer finishing 3-D Secure would."""
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        mock = deps.providers[payment.provider]
        if not isinstance(mock, MockControl):
            raise ProviderMismatch(f"payment {payment.id} is not a mock payment")
        op = await calls.resumable(uow, payment, request_key, deps=deps)
        new = False
        if op is None:
            if payment.status not in NOT_YET_AUTHORIZED:
                raise InvalidStateTransition(
                    f"payment {payment.id} is {payment.status}; mock completion is only "
                    "possible before authorization",
                    payment_id=payment.id,
                )
            if (op := await calls.open_confirmation(uow, payment, pending_only=False)) is not None:
                op.resend_for(request_key, deps.clock.now())
            else:
                op, new = payment.begin_confirmation(deps.clock.now(), None, request_key), True
        if op.open:
            calls.ensure_available(deps.providers[payment.provider])
            await calls.send(uow, payment, op, new=new, deps=deps)

    if op.open:
        sent = op
        answer = await calls.ask(
            deps,
            mock,
            op,
            lambda: mock.complete(
                idempotency_key=sent.idempotency_key,
                payment_id=payment.id,
                amount=payment.amount,
                capture=sent.kind is OperationKind.SALE,
                success=success,
                failure_code=failure_code,
            ),
        )
        payment, _ = await calls.record(payment_id, op, answer, ctx, deps=deps)
    return payment


async def capture_payment(
    payment_id: str,
    amount: Money | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Payment:
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        op = await calls.resumable(uow, payment, request_key, deps=deps)
        new = op is None
        if op is None:
            await calls.no_operation_in_flight(uow, payment, "captured")
            op = payment.begin_capture(amount, deps.clock.now(), request_key)
        if op.open:
            calls.ensure_available(deps.providers[payment.provider])
            await calls.send(uow, payment, op, new=new, deps=deps)

    if op.open:
        provider = deps.providers[payment.provider]
        ref, amount_, key = payment.provider_payment_id or "", op.amount, op.idempotency_key
        answer = await calls.ask(
            deps, provider, op, lambda: provider.capture(ref, amount_, idempotency_key=key)
        )
        payment, op = await calls.record(payment_id, op, answer, ctx, deps=deps)

    error = calls.provider_error(op, refused_is_error=True)
    deps.telemetry.count("payment_capture_total", status="error" if error else payment.status.value)
    if error is not None:
        raise error
    return payment


async def void_payment(
    payment_id: str,
    reason: str | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Payment:
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        op = await calls.resumable(uow, payment, request_key, deps=deps)
        new = op is None
        if op is None:
            await calls.no_operation_in_flight(uow, payment, "voided")
            if payment.status is PaymentStatus.INITIATED:
                # Nothing reached the provider yet: cancel here, no provider call.
                op, change = payment.cancel_unsent(
                    reason, deps.clock.now(), ctx.source, request_key
                )
                await uow.operations.add(op)
                await follow_payment(uow, payment, change, ctx, deps=deps)
                await uow.payments.save(payment)
                await uow.commit()
                return payment
            op = payment.begin_void(deps.clock.now(), request_key, reason)
        if op.open:
            calls.ensure_available(deps.providers[payment.provider])
            await calls.send(uow, payment, op, new=new, deps=deps)

    if op.open:
        provider = deps.providers[payment.provider]
        ref, key = payment.provider_payment_id or op.idempotency_key, op.idempotency_key
        answer = await calls.ask(
            deps, provider, op, lambda: provider.void(ref, idempotency_key=key)
        )
        payment, op = await calls.record(payment_id, op, answer, ctx, deps=deps)

    if (error := calls.provider_error(op, refused_is_error=True)) is not None:
        raise error
    return payment


async def refund_payment(
    payment_id: str,
    amount: Money | None,
    reason: str | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Refund:
    """Refund captured money. The refund row and its operation are committed before the
    provider is asked; a retry of the same request resumes that refund, never a second one.
    A refund the provider declines is answered as a FAILED refund."""
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        op = await calls.resumable(uow, payment, request_key, deps=deps)
        new = op is None
        if op is None:
            refund, op = payment.begin_refund(amount, reason, deps.clock.now(), request_key)
            await uow.refunds.add(refund)
        if op.open:
            calls.ensure_available(deps.providers[payment.provider])
            await calls.send(uow, payment, op, new=new, deps=deps)

    if op.open:
        provider = deps.providers[payment.provider]
        ref, amount_, key = payment.provider_payment_id or "", op.amount, op.idempotency_key
        answer = await calls.ask(
            deps, provider, op, lambda: provider.refund(ref, amount_, idempotency_key=key)
        )
        _, settled = await calls.record(payment_id, op, answer, ctx, deps=deps)
        op = settled or op

    if (error := calls.provider_error(op, refused_is_error=False)) is not None:
        raise error
    assert op.refund_id is not None
    async with deps.uow() as uow:
        found = await uow.refunds.get(op.refund_id)
    assert found is not None
    return found
