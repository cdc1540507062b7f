"""Payment use cases.

Every provider call sits between two short transactions (ARCHITECTURE.md rule 4): the first
records the operation as PENDING with a provider idempotency key and commits; then the provider
is called with a timeout; the second records the result. A timeout leaves the operation UNKNOWN
for the janitor, which asks the provider instead of guessing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from tillpoint.domain.errors import (
    ActivePaymentExists,
    AmountMismatch,
    InvalidStateTransition,
    NotFound,
    OrderNotPayable,
    PaymentDeclined,
    ProviderFailure,
    ProviderMismatch,
    SnapshotMismatch,
    ValidationFailed,
)
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext, OrderStatus
from tillpoint.domain.payment import (
    NOT_YET_AUTHORIZED,
    CaptureMethod,
    Operation,
    OperationKind,
    OperationStatus,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Refund,
)
from tillpoint.service.context import Deps
from tillpoint.service.ports import (
    AuthorizeRequest,
    Ledger,
    MockControl,
    PaymentFilter,
    PaymentProvider,
    ProviderError,
    ProviderResult,
    ProviderStatus,
    ProviderTimeout,
    ProviderUnavailable,
    StoredEvent,
    UnitOfWork,
)

log = structlog.get_logger("tillpoint.payments")


@dataclass(frozen=True, slots=True)
class Begun:
    """What a phase-1 `begin` hands to `_execute`.

    `new`: the operation is to be inserted (else it is one left open earlier, sent again with its
    same provider key). `send`: False for an operation that a previous attempt of the same
    request already finished — nothing is sent, its outcome is the answer.
    """

    op: Operation
    new: bool = True
    send: bool = True


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


# -- applying what the provider says -------------------------------------------------------------


async def apply_result(
    uow: UnitOfWork,
    payment: Payment,
    op: Operation,
    result: ProviderResult,
    ctx: ChangeContext,
    *,
    deps: Deps,
) -> None:
    """Move the payment (and its order) to where the provider says the operation ended.

    Used for answers to our own calls, for webhooks and for reconciliation alike, so the same
    forward-only rules hold whatever the source.
    """
    now = deps.clock.now()
    before = payment.status
    money = payment.money
    source = ctx.source
    if result.provider_payment_id and not payment.provider_payment_id:
        payment.provider_payment_id = result.provider_payment_id
    refund: Refund | None = None
    if op.kind is OperationKind.REFUND and op.refund_id is not None:
        refund = await uow.refunds.get(op.refund_id)

    match (op.kind, result.status):
        case (OperationKind.REFUND, ProviderStatus.REFUNDED) if refund is not None:
            refund.provider_refund_id = result.reference
            payment.refund_succeeded(refund, now, source)
            op.succeed(now, result.reference)
        case (OperationKind.REFUND, ProviderStatus.FAILED) if refund is not None:
            payment.refund_failed(refund, result.failure_code, result.failure_message, now, source)
            op.fail(now, result.failure_code, result.failure_message)
        case (OperationKind.REFUND, _):
            _reschedule(op, now, f"refund is {result.status}", deps=deps)
        case (OperationKind.VOID, ProviderStatus.CANCELED):
            payment.canceled(op.reason, now, source)
            op.succeed(now, result.reference)
        case (OperationKind.VOID, ProviderStatus.FAILED):
            op.fail(now, result.failure_code, result.failure_message)
        case (OperationKind.CAPTURE, ProviderStatus.CAPTURED | ProviderStatus.REFUNDED):
            payment.captured(
                money(result.amount_minor), op.id, result.provider_payment_id, now, source
            )
            op.succeed(now, result.reference)
        case (OperationKind.CAPTURE, ProviderStatus.FAILED):
            op.fail(now, result.failure_code, result.failure_message)
            payment.capture_failed(op, now, source)
        case (_, ProviderStatus.CAPTURED | ProviderStatus.REFUNDED):
            # A sale (or a capture overtaking its authorization): `captured` records the implied
            # authorization as PROVIDER_CONFIRMED; `payment.authorized` is only published for
            # manual-capture holds.
            payment.captured(
                money(result.amount_minor), op.id, result.provider_payment_id, now, source
            )
            op.succeed(now, result.reference)
        case (_, ProviderStatus.AUTHORIZED):
            payment.authorized(
                money(result.amount_minor),
                result.provider_payment_id,
                now,
                source,
                result.risk_score,
            )
            op.succeed(now, result.reference)
        case (_, ProviderStatus.FAILED):
            payment.failed(
                result.failure_code or "card_declined", result.failure_message, now, source
            )
            op.fail(now, result.failure_code, result.failure_message)
        case (_, ProviderStatus.CANCELED):
            payment.canceled("canceled at the provider", now, source)
            op.fail(now, "canceled", "canceled at the provider")
        case (_, ProviderStatus.REQUIRES_ACTION):
            payment.require_action(
                result.next_action or {}, result.provider_payment_id, now, source
            )
            _reschedule(op, now, "waiting for the customer", deps=deps)
        case (_, ProviderStatus.PROCESSING):
            payment.mark_processing(now, source)
            _reschedule(op, now, "provider is processing", deps=deps)

    await uow.operations.save(op)
    if refund is not None:
        await uow.refunds.save(refund)
    await follow_payment(uow, payment, ctx, before, deps=deps)
    await uow.payments.save(payment)
    payment.check_invariants()


async def follow_payment(
    uow: UnitOfWork, payment: Payment, ctx: ChangeContext, before: PaymentStatus, *, deps: Deps
) -> None:
    """After a payment changed (from `before`), log the transition and move its order to match.

    Shared by every source of change: our own calls, webhooks and the janitor.
    """
    refunded = any(e.event_type == "REFUND_SUCCEEDED" for e in payment.events)
    if payment.status is before and not refunded:
        return
    log.info(
        "payment.transition",
        payment_id=payment.id,
        order_id=payment.order_id,
        provider_payment_id=payment.provider_payment_id,
        transition=f"{before}->{payment.status}",
        source=ctx.source,
    )
    if payment.status is PaymentStatus.AUTHORIZED:
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


def _reschedule(op: Operation, now: datetime, reason: str, *, deps: Deps) -> None:
    op.next_check_at = now + deps.config.next_check(op.check_count)
    op.error_message = reason
    op.updated_at = now


async def _call(
    deps: Deps,
    provider: PaymentProvider,
    operation: str,
    call: Callable[[], Awaitable[ProviderResult]],
) -> ProviderResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(deps.config.provider_timeout):
            return await call()
    except TimeoutError as exc:
        raise ProviderTimeout(f"{provider.name} {operation} timed out") from exc
    finally:
        deps.telemetry.observe(
            "payment_attempt_duration_seconds",
            time.perf_counter() - started,
            provider=provider.name,
            operation=operation,
        )


async def _execute(
    payment_id: str,
    name: str,
    begin: Callable[[UnitOfWork, Payment], Awaitable[Begun | None]],
    call: Callable[[PaymentProvider, Payment, Operation], Awaitable[ProviderResult]],
    ctx: ChangeContext,
    *,
    deps: Deps,
) -> tuple[Payment, Operation | None]:
    """Phase 1 (commit a PENDING operation) → provider call → phase 2 (commit the result).

    `begin` returns the operation to send (see `Begun`); None means nothing to send.
    """
    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        begun = await begin(uow, payment)
        if begun is None:
            return payment, None
        op = begun.op
        if not begun.send:
            return payment, op
        # Touching `updated_at` marks the operation as with the provider, so the janitor leaves
        # it alone (also when a retry sends an operation left PENDING again). The check is a
        # safety net: if this process dies before recording the answer, the janitor asks the
        # provider about this operation later.
        now = deps.clock.now()
        op.updated_at = now
        if op.next_check_at is None or op.next_check_at < now + deps.config.next_check(0):
            op.next_check_at = now + deps.config.next_check(0)
        await (uow.operations.add(op) if begun.new else uow.operations.save(op))
        await uow.payments.save(payment)
        await uow.commit()

    provider = deps.providers[payment.provider]
    started: Operation = op
    outcome: ProviderResult | Exception
    try:
        outcome = await _call(
            deps, provider, op.kind.value.lower(), lambda: call(provider, payment, started)
        )
    except (ProviderTimeout, ProviderUnavailable, ProviderError) as exc:
        outcome = exc

    async with deps.uow() as uow:
        payment = await _get(uow, payment_id, for_update=True)
        current = await uow.operations.get(op.id)
        if current is None or not current.open:  # resolved meanwhile (webhook, janitor)
            return payment, current
        op = current
        now = deps.clock.now()
        error: ProviderFailure | None = None
        if isinstance(outcome, ProviderResult):
            await apply_result(uow, payment, op, outcome, ctx, deps=deps)
        elif isinstance(outcome, ProviderTimeout):
            op.unknown(now, str(outcome), now + deps.config.next_check(0))
            if op.kind in (OperationKind.SALE, OperationKind.AUTHORIZE):
                payment.mark_processing(now, ctx.source, reason="provider_timeout")
                await follow_payment(uow, payment, ctx, PaymentStatus.INITIATED, deps=deps)
            else:
                error = ProviderFailure("provider_timeout", str(outcome))
            await uow.operations.save(op)
            await uow.payments.save(payment)
        else:
            code = (
                "provider_unavailable"
                if isinstance(outcome, ProviderUnavailable)
                else "provider_error"
            )
            op.fail(now, code, str(outcome))
            if op.kind is OperationKind.REFUND and op.refund_id is not None:
                refund = await uow.refunds.get(op.refund_id)
                if refund is not None:
                    payment.refund_failed(refund, code, str(outcome), now, ctx.source)
                    await uow.refunds.save(refund)
            await uow.operations.save(op)
            await uow.payments.save(payment)
            error = ProviderFailure(code, str(outcome))
        await uow.commit()
    if error is not None:
        raise error
    return payment, op


async def _resumable(
    uow: UnitOfWork, payment: Payment, request_key: str | None, *, deps: Deps
) -> Begun | None:
    """The operation an earlier attempt of this same request left behind, if any.

    A retry (same Idempotency-Key) after a crash or a lost database connection must not start
    a second operation: an open one is sent again with its saved provider key (the provider
    answers what it already did), a finished one is the answer as it stands.
    """
    if request_key is None or not payment.operation_count:
        return None
    now, ttl = deps.clock.now(), deps.config.idempotency_ttl
    op = await uow.operations.by_request_key(payment.id, request_key)
    if op is None or op.created_at <= now - ttl:  # a key used again after it was reaped
        return None
    if op.open:
        op.resend_for(request_key, now)
        return Begun(op, new=False)
    return Begun(op, new=False, send=False)


# Error codes of an operation whose provider call itself failed (no answer about the money).
UNREACHED = ("provider_error", "provider_unavailable")


def _failed(op: Operation | None, what: str) -> ProviderFailure | None:
    """A capture or void the provider refused is answered as the provider error it was."""
    if op is None or op.status is not OperationStatus.FAILED:
        return None
    code = op.error_code if op.error_code == "provider_unavailable" else "provider_error"
    return ProviderFailure(code, op.error_message or f"the {what} failed")


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

    async def begin(uow: UnitOfWork, payment: Payment) -> Begun | None:
        now = deps.clock.now()
        resumed = await _resumable(uow, payment, request_key, deps=deps)
        if resumed is not None:
            return resumed
        # A payment that never had an operation has none to resume: skip the lookup.
        if payment.status is PaymentStatus.INITIATED and payment.operation_count:
            for open_op in await uow.operations.open_for(payment.id):
                if open_op.kind in (OperationKind.SALE, OperationKind.AUTHORIZE) and (
                    open_op.status is OperationStatus.PENDING
                ):
                    open_op.resend_for(request_key, now)
                    return Begun(open_op, new=False)
        return Begun(payment.begin_confirmation(now, method, request_key))

    async def call(provider: PaymentProvider, payment: Payment, op: Operation) -> ProviderResult:
        req = AuthorizeRequest(
            payment_id=payment.id,
            order_id=payment.order_id,
            amount=payment.amount,
            capture=op.kind is OperationKind.SALE,
            payment_method=payment.payment_method,
        )
        return await provider.authorize(req, idempotency_key=op.idempotency_key)

    payment, _ = await _execute(payment_id, "confirm", begin, call, ctx, deps=deps)
    deps.telemetry.count("payment_confirm_total", status=payment.status.value)
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

    async def begin(uow: UnitOfWork, payment: Payment) -> Begun | None:
        if not isinstance(deps.providers[payment.provider], MockControl):
            raise ProviderMismatch(f"payment {payment.id} is not a mock payment")
        now = deps.clock.now()
        resumed = await _resumable(uow, payment, request_key, deps=deps)
        if resumed is not None:
            return resumed
        if payment.status not in NOT_YET_AUTHORIZED:
            raise InvalidStateTransition(
                f"payment {payment.id} is {payment.status}; mock completion is only possible "
                "before authorization",
                payment_id=payment.id,
            )
        for open_op in await uow.operations.open_for(payment.id):
            if open_op.kind in (OperationKind.SALE, OperationKind.AUTHORIZE):
                open_op.resend_for(request_key, now)
                return Begun(open_op, new=False)
        return Begun(payment.begin_confirmation(now, None, request_key))

    async def call(provider: PaymentProvider, payment: Payment, op: Operation) -> ProviderResult:
        assert isinstance(provider, MockControl)
        return await provider.complete(
            idempotency_key=op.idempotency_key,
            payment_id=payment.id,
            amount=payment.amount,
            capture=op.kind is OperationKind.SALE,
            success=success,
            failure_code=failure_code,
        )

    payment, _ = await _execute(payment_id, "mock_complete", begin, call, ctx, deps=deps)
    return payment


async def capture_payment(
    payment_id: str,
    amount: Money | None,
    ctx: ChangeContext,
    *,
    deps: Deps,
    request_key: str | None = None,
) -> Payment:
    async def begin(uow: UnitOfWork, payment: Payment) -> Begun | None:
        now = deps.clock.now()
        resumed = await _resumable(uow, payment, request_key, deps=deps)
        if resumed is not None:
            return resumed
        await _no_operation_in_flight(uow, payment, "captured")
        return Begun(payment.begin_capture(amount, now, request_key))

    async def call(provider: PaymentProvider, payment: Payment, op: Operation) -> ProviderResult:
        assert payment.provider_payment_id is not None
        return await provider.capture(
            payment.provider_payment_id, op.amount, idempotency_key=op.idempotency_key
        )

    try:
        payment, op = await _execute(payment_id, "capture", begin, call, ctx, deps=deps)
    except ProviderFailure:
        deps.telemetry.count("payment_capture_total", status="error")
        raise
    deps.telemetry.count("payment_capture_total", status=payment.status.value)
    if (error := _failed(op, "capture")) is not None:
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
    async def begin(uow: UnitOfWork, payment: Payment) -> Begun | None:
        now = deps.clock.now()
        resumed = await _resumable(uow, payment, request_key, deps=deps)
        if resumed is not None:
            return resumed
        await _no_operation_in_flight(uow, payment, "voided")
        if payment.status is PaymentStatus.INITIATED:
            # Nothing reached the provider yet: cancel locally, no provider call.
            op = payment.cancel_unsent(reason, now, ctx.source, request_key)
            await uow.operations.add(op)
            await follow_payment(uow, payment, ctx, PaymentStatus.INITIATED, deps=deps)
            await uow.payments.save(payment)
            await uow.commit()
            return None
        return Begun(payment.begin_void(now, request_key, reason))

    async def call(provider: PaymentProvider, payment: Payment, op: Operation) -> ProviderResult:
        ref = payment.provider_payment_id or op.idempotency_key
        return await provider.void(ref, idempotency_key=op.idempotency_key)

    payment, op = await _execute(payment_id, "void", begin, call, ctx, deps=deps)
    if (error := _failed(op, "void")) is not None:
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
    provider is asked; a retry of the same request resumes that refund, never a second one."""

    async def begin(uow: UnitOfWork, payment: Payment) -> Begun | None:
        resumed = await _resumable(uow, payment, request_key, deps=deps)
        if resumed is not None:
            return resumed
        refund, op = payment.begin_refund(amount, reason, deps.clock.now(), request_key)
        await uow.refunds.add(refund)
        return Begun(op)

    async def call(provider: PaymentProvider, payment: Payment, op: Operation) -> ProviderResult:
        assert payment.provider_payment_id is not None
        return await provider.refund(
            payment.provider_payment_id, op.amount, idempotency_key=op.idempotency_key
        )

    _, op = await _execute(payment_id, "refund", begin, call, ctx, deps=deps)
    assert op is not None
    assert op.refund_id is not None
    if op.status is OperationStatus.FAILED and op.error_code in UNREACHED:
        # A retry of a refund whose provider call failed answers as the first attempt did.
        raise ProviderFailure(op.error_code, op.error_message or "the refund failed")
    async with deps.uow() as uow:
        refund = await uow.refunds.get(op.refund_id)
    assert refund is not None
    return refund


async def _no_operation_in_flight(uow: UnitOfWork, payment: Payment, verb: str) -> None:
    """One capture or void at a time: a second request while one is with the provider is 409."""
    for op in await uow.operations.open_for(payment.id):
        if op.kind in (OperationKind.CAPTURE, OperationKind.VOID):
            raise InvalidStateTransition(
                f"payment {payment.id} cannot be {verb}: a {op.kind.value.lower()} is in progress",
                payment_id=payment.id,
            )
