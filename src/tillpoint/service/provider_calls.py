"""The phases every payment command shares, around one provider call.

Phase 1 (`send`, inside the command's own transaction) commits the operation as PENDING with
its provider idempotency key; `ask` calls the provider with a timeout and says why when there
is no answer; phase 2 (`record`) applies the answer through `Payment.apply`. A retry of the same
request resumes the operation its first attempt left (`resumable`), and capture, void and
refund answer their failures through one path (`provider_error`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tillpoint.domain.errors import InvalidStateTransition, NotFound, ProviderFailure
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    PAYMENT_OPERATIONS,
    NoAnswer,
    Operation,
    OperationKind,
    OperationStatus,
    Outcome,
    Payment,
    Silence,
)
from tillpoint.service.context import Deps
from tillpoint.service.outcomes import apply_outcome
from tillpoint.service.ports import (
    AuthorizeRequest,
    PaymentProvider,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    UnitOfWork,
)

# Error codes of an operation whose provider call itself failed (no answer about the money).
UNREACHED = (Silence.UNREACHABLE.value, Silence.ERROR.value)


def ensure_available(provider: PaymentProvider) -> None:
    """Fail fast, before anything is written, while the provider's circuit is open: nothing
    is sent, the payment does not move, and the 503 is not stored under the request's key."""
    if not provider.available():
        raise ProviderFailure(
            Silence.UNREACHABLE.value,
            f"provider {provider.name!r} is unavailable (its circuit is open); retry later",
        )


async def get_for_update(uow: UnitOfWork, payment_id: str) -> Payment:
    payment = await uow.payments.get(payment_id, for_update=True)
    if payment is None:
        raise NotFound(f"payment {payment_id} not found")
    return payment


async def send(uow: UnitOfWork, payment: Payment, op: Operation, *, new: bool, deps: Deps) -> None:
    """Phase 1's commit: the operation is with the provider from now on (the janitor leaves it
    alone while the call may be running, and asks about it should this process die)."""
    now = deps.clock.now()
    op.send(now, check_by=now + deps.config.next_check(0))
    await (uow.operations.add(op) if new else uow.operations.save(op))
    await uow.payments.save(payment)
    await uow.commit()


async def ask(
    deps: Deps, provider: PaymentProvider, op: Operation, call: Callable[[], Awaitable[Outcome]]
) -> Outcome | NoAnswer:
    """The provider call, bounded by the provider timeout. A call that gives no answer says
    why: a timeout (it may have acted), or the provider unreachable or refusing the call.
    Each attempt is timed and audited by the resilient call layer around the adapter."""
    try:
        async with asyncio.timeout(deps.config.provider_timeout):
            return await call()
    except (TimeoutError, ProviderTimeout) as exc:
        return NoAnswer(Silence.TIMEOUT, str(exc) or f"{provider.name} {op.kind} timed out")
    except ProviderUnavailable as exc:
        return NoAnswer(Silence.UNREACHABLE, str(exc))
    except ProviderError as exc:
        return NoAnswer(Silence.ERROR, str(exc))


async def record(
    payment_id: str, op: Operation, answer: Outcome | NoAnswer, ctx: ChangeContext, *, deps: Deps
) -> tuple[Payment, Operation | None]:
    """Phase 2: apply the answer, unless a webhook or the janitor settled the operation while
    we were asking (then theirs is the answer)."""
    async with deps.uow() as uow:
        payment = await get_for_update(uow, payment_id)
        current = await uow.operations.get(op.id)
        if current is None or not current.open:
            return payment, current
        await apply_outcome(uow, payment, current, answer, ctx, deps=deps)
        await uow.commit()
    return payment, current


async def resumable(
    uow: UnitOfWork, payment: Payment, request_key: str | None, *, deps: Deps
) -> Operation | None:
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
    if op.status is OperationStatus.FAILED and op.error_code in UNREACHED:
        return None  # it never reached the provider: the retry sends a new operation
    if op.open:
        op.resend_for(request_key, now)
    return op


def provider_error(op: Operation | None, *, refused_is_error: bool) -> ProviderFailure | None:
    """The error a command answers with once its operation ended (the one error path of
    capture, void and refund): a call that timed out, a provider that could not be reached or
    refused the call, and — for a capture or a void, which have no declined state of their
    own — a provider that said no. None: the payment as it stands is the answer."""
    if op is None:
        return None
    if op.status is OperationStatus.UNKNOWN and op.kind not in PAYMENT_OPERATIONS:
        return ProviderFailure(Silence.TIMEOUT.value, op.error_message or "the provider timed out")
    if op.status is not OperationStatus.FAILED:
        return None
    if op.error_code in UNREACHED:
        return ProviderFailure(op.error_code or "provider_error", op.error_message or "failed")
    if refused_is_error:
        what = f"the {op.kind.value.lower()} failed"
        return ProviderFailure("provider_error", op.error_message or what)
    return None


async def open_confirmation(
    uow: UnitOfWork, payment: Payment, *, pending_only: bool
) -> Operation | None:
    """A SALE or AUTHORIZE left open (by a process that died, or a confirm now completed)."""
    for op in await uow.operations.open_for(payment.id):
        if op.kind in PAYMENT_OPERATIONS and (
            not pending_only or op.status is OperationStatus.PENDING
        ):
            return op
    return None


async def no_operation_in_flight(uow: UnitOfWork, payment: Payment, verb: str) -> None:
    """One capture or void at a time: a second request while one is with the provider is 409."""
    for op in await uow.operations.open_for(payment.id):
        if op.kind in (OperationKind.CAPTURE, OperationKind.VOID):
            raise InvalidStateTransition(
                f"payment {payment.id} cannot be {verb}: a {op.kind.value.lower()} is in progress",
                payment_id=payment.id,
            )


def authorize_request(payment: Payment, op: Operation) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=payment.id,
        order_id=payment.order_id,
        amount=payment.amount,
        capture=op.kind is OperationKind.SALE,
        payment_method=payment.payment_method,
    )
