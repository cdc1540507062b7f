"""The janitor (service/janitor.py) against fakes: an operation whose outcome we do not know is
resolved by asking the provider, never by guessing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from tests.unit.fakes import Lost, World
from tests.unit.service.steps import API, initiated
from tillpoint.domain.order import OrderStatus
from tillpoint.domain.payment import OperationStatus, PaymentStatus, ProviderStatus
from tillpoint.domain.reconciliation import RunStatus
from tillpoint.service import reconciliation
from tillpoint.service.janitor import (
    IN_FLIGHT_MARGIN,
    cancel_stale_payments,
    resolve_open_operations,
)
from tillpoint.service.payments import confirm_payment
from tillpoint.service.ports import ProviderTimeout, ProviderUnavailable

S = PaymentStatus
OpS = OperationStatus


async def unknown_sale(w: World, *, provider_acted: bool) -> str:
    """A sale whose call timed out; the provider charged the card only if `provider_acted`."""
    payment = await initiated(w)
    w.provider.will("authorize", Lost() if provider_acted else ProviderTimeout("slow"))
    answered = await confirm_payment(payment.id, None, API, deps=w.deps)
    assert answered.status is S.PROCESSING
    [op] = w.store.operations_of(payment.id)
    assert op.status is OpS.UNKNOWN
    return payment.id


class TestJanitor:
    async def test_an_unknown_sale_the_provider_captured_becomes_captured(self, w: World) -> None:
        payment_id = await unknown_sale(w, provider_acted=True)
        assert await resolve_open_operations(deps=w.deps) == 0  # not due before its check
        w.clock.advance(w.deps.config.next_check(0))

        assert await resolve_open_operations(deps=w.deps) == 1

        payment = w.store.payment(payment_id)
        assert (payment.status, payment.captured_minor) == (S.CAPTURED, 1_000)
        [op] = w.store.operations_of(payment_id)
        assert (op.status, op.check_count, op.next_check_at) == (OpS.SUCCEEDED, 1, None)
        assert w.provider.lookups == [op.idempotency_key]
        assert w.provider.keys("authorize") == [op.idempotency_key]  # asked, never re-sent
        assert w.store.event_types(payment_id)[-2:] == ["CAPTURE_SUCCEEDED", "RECONCILED"]
        [message] = w.store.messages(payment_id)
        assert message.routing_key == "payment.succeeded"
        assert json.loads(message.body)["transaction_id"] == op.id
        assert w.store.orders[payment.order_id].status is OrderStatus.PAID
        assert w.telemetry.counted("janitor_resolved_total", status="CAPTURED") == 1

    async def test_a_sale_the_provider_never_saw_fails(self, w: World) -> None:
        payment_id = await unknown_sale(w, provider_acted=False)
        w.clock.advance(w.deps.config.next_check(0))

        assert await resolve_open_operations(deps=w.deps) == 1

        payment = w.store.payment(payment_id)
        assert (payment.status, payment.failure_code) == (S.FAILED, "provider_timeout")
        [op] = w.store.operations_of(payment_id)
        assert (op.status, op.error_code) == (OpS.FAILED, "not_found")
        [message] = w.store.messages(payment_id)
        assert message.routing_key == "payment.failed"
        assert json.loads(message.body)["failure_code"] == "TIMEOUT"
        assert w.store.orders[payment.order_id].status is OrderStatus.PAYMENT_PENDING
        assert w.telemetry.counted("janitor_resolved_total", status="none") == 1

    async def test_a_provider_still_unreachable_is_asked_again_later(self, w: World) -> None:
        payment_id = await unknown_sale(w, provider_acted=True)
        w.clock.advance(w.deps.config.next_check(0))
        w.provider.will_look_up(ProviderUnavailable("down"))

        assert await resolve_open_operations(deps=w.deps) == 1

        [op] = w.store.operations_of(payment_id)
        assert (op.status, op.check_count) == (OpS.UNKNOWN, 1)
        assert op.next_check_at == w.clock.now() + w.deps.config.next_check(1)
        assert w.store.payment(payment_id).status is S.PROCESSING
        w.clock.advance(w.deps.config.next_check(1))
        assert await resolve_open_operations(deps=w.deps) == 1
        assert w.store.payment(payment_id).status is S.CAPTURED

    async def test_an_operation_that_may_be_with_the_provider_is_left_alone(self, w: World) -> None:
        """A PENDING operation sent moments ago (its process may still be waiting for the
        answer) is not asked about: finding nothing now would fail a charge about to happen."""
        payment = await initiated(w)
        w.provider.will("authorize", RuntimeError("the process died mid-call"))
        with pytest.raises(RuntimeError):
            await confirm_payment(payment.id, None, API, deps=w.deps)
        [op] = w.store.operations_of(payment.id)
        assert op.status is OpS.PENDING
        w.provider.ledger[op.idempotency_key] = w.provider.outcome(
            ProviderStatus.CAPTURED, payment.amount, f"fp_{payment.id}"
        )

        assert await resolve_open_operations(deps=w.deps, everything=True) == 0
        assert w.provider.lookups == []
        grace = timedelta(seconds=w.deps.config.provider_timeout) + IN_FLIGHT_MARGIN
        deferred = w.store.operations[op.id].next_check_at
        assert deferred is not None
        assert deferred >= op.updated_at + grace

        w.clock.advance(grace + timedelta(seconds=1))
        assert await resolve_open_operations(deps=w.deps, everything=True) == 1
        assert w.store.payment(payment.id).status is S.CAPTURED

    async def test_a_reconciliation_asks_about_every_open_operation_now(self, w: World) -> None:
        captured = await unknown_sale(w, provider_acted=True)
        never = await unknown_sale(w, provider_acted=False)

        w.clock.advance(timedelta(seconds=1))  # the window ends now, after the payments
        started = await reconciliation.start_run(deps=w.deps)
        assert started is not None
        run = await reconciliation.run_pass(started.run_id, deps=w.deps)

        assert w.store.payment(captured).status is S.CAPTURED
        assert w.store.payment(never).status is S.FAILED
        assert (run.status, run.resolved) == (RunStatus.FINISHED, 2)
        assert w.store.reconciliations[run.run_id].status is RunStatus.FINISHED

    async def test_a_payment_nobody_confirmed_in_time_is_canceled(self, w: World) -> None:
        payment = await initiated(w)
        assert await cancel_stale_payments(deps=w.deps) == 0
        w.clock.advance(w.deps.config.payment_ttl + timedelta(seconds=1))

        assert await cancel_stale_payments(deps=w.deps) == 1

        assert w.store.payment(payment.id).status is S.CANCELED
        [message] = w.store.messages(payment.id)
        assert json.loads(message.body)["reason"] == "payment_expired"
