"""The payment commands (service/payments.py) against fakes: what each phase commits, what the
provider is asked (and with which idempotency key), and the one error path of capture, void and
refund."""

from __future__ import annotations

import json

import pytest

from tests.unit.fakes import FakeProvider, Lost, ProviderCall, World
from tests.unit.service.steps import API, confirmed, eur, initiated
from tillpoint.domain.errors import (
    AmountExceedsCapturable,
    AmountExceedsRefundable,
    InvalidStateTransition,
    PaymentDeclined,
    ProviderFailure,
)
from tillpoint.domain.order import OrderStatus
from tillpoint.domain.payment import (
    OperationKind,
    OperationStatus,
    PaymentStatus,
    ProviderStatus,
    RefundStatus,
)
from tillpoint.service.payments import (
    capture_payment,
    confirm_payment,
    refund_payment,
    void_payment,
)
from tillpoint.service.ports import ProviderError, ProviderTimeout, ProviderUnavailable

S = PaymentStatus
OpS = OperationStatus


def declined(provider: FakeProvider, code: str) -> None:
    """The provider's next answer of every kind is a refusal with `code`."""
    for call in ("authorize", "capture", "void", "refund"):
        provider.will(
            call, provider.outcome(ProviderStatus.FAILED, eur(0), None, failure_code=code)
        )


class TestConfirm:
    async def test_a_sale_is_captured_and_announced_once(self, w: World) -> None:
        payment = await confirmed(w)

        assert payment.status is S.CAPTURED
        assert w.provider.keys("authorize") == [f"{payment.id}:sale:1"]
        [op] = w.store.operations_of(payment.id)
        assert (op.kind, op.status) == (OperationKind.SALE, OpS.SUCCEEDED)
        assert w.store.routing_keys(payment.id) == ["payment.succeeded"]
        assert w.store.orders[payment.order_id].status is OrderStatus.PAID
        assert w.telemetry.counted("payment_confirm_total", status="CAPTURED") == 1

    async def test_a_decline_fails_the_payment_and_answers_with_its_code(self, w: World) -> None:
        payment = await initiated(w)
        declined(w.provider, "insufficient_funds")

        with pytest.raises(PaymentDeclined) as refused:
            await confirm_payment(payment.id, None, API, deps=w.deps)

        assert refused.value.code == "insufficient_funds"
        assert w.store.payment(payment.id).status is S.FAILED
        [message] = w.store.messages(payment.id)
        assert message.routing_key == "payment.failed"
        assert json.loads(message.body)["failure_code"] == "INSUFFICIENT_FUNDS"

    async def test_a_timeout_leaves_the_sale_unknown_for_the_janitor(self, w: World) -> None:
        payment = await initiated(w)
        w.provider.will("authorize", ProviderTimeout("slow"))

        answered = await confirm_payment(payment.id, None, API, deps=w.deps)

        assert answered.status is S.PROCESSING
        [op] = w.store.operations_of(payment.id)
        assert op.status is OpS.UNKNOWN
        assert op.next_check_at == w.clock.now() + w.deps.config.next_check(0)
        assert w.store.messages(payment.id) == []


class TestCapture:
    async def test_a_full_capture(self, w: World) -> None:
        payment = await confirmed(w, manual=True)
        assert payment.status is S.AUTHORIZED

        captured = await capture_payment(payment.id, None, API, deps=w.deps)

        assert (captured.status, captured.captured_minor) == (S.CAPTURED, 1_000)
        [call] = [c for c in w.provider.calls if c.operation == "capture"]
        assert call == ProviderCall(
            "capture", f"{payment.id}:capture:2", eur(1_000), f"fp_{payment.id}"
        )
        stored = w.store.payment(payment.id)
        assert (stored.status, stored.version) == (S.CAPTURED, captured.version)
        assert w.store.routing_keys(payment.id) == ["payment.authorized", "payment.succeeded"]
        assert [m.sequence for m in w.store.messages(payment.id)] == [1, 2]
        assert w.store.orders[payment.order_id].status is OrderStatus.PAID
        assert w.telemetry.counted("payment_capture_total", status="CAPTURED") == 1

    async def test_a_partial_capture_leaves_only_that_amount_refundable(self, w: World) -> None:
        payment = await confirmed(w, manual=True)

        captured = await capture_payment(payment.id, eur(400), API, deps=w.deps)

        assert (captured.status, captured.captured_minor) == (S.CAPTURED, 400)
        assert captured.refundable == eur(400)
        [call] = [c for c in w.provider.calls if c.operation == "capture"]
        assert call.amount == eur(400)
        body = json.loads(w.store.messages(payment.id)[-1].body)
        assert body["amount"] == "4.00"

    async def test_more_than_authorized_is_refused_before_the_provider(self, w: World) -> None:
        payment = await confirmed(w, manual=True)

        with pytest.raises(AmountExceedsCapturable):
            await capture_payment(payment.id, eur(1_001), API, deps=w.deps)

        assert w.provider.keys("capture") == []
        assert len(w.store.operations_of(payment.id)) == 1

    async def test_a_provider_refusal_is_an_error_and_the_hold_stays(self, w: World) -> None:
        payment = await confirmed(w, manual=True)
        declined(w.provider, "capture_declined")

        with pytest.raises(ProviderFailure) as failure:
            await capture_payment(payment.id, None, API, deps=w.deps)

        assert failure.value.code == "provider_error"
        stored = w.store.payment(payment.id)
        assert (stored.status, stored.captured_minor) == (S.AUTHORIZED, 0)
        capture = w.store.operations_of(payment.id)[-1]
        assert (capture.kind, capture.status) == (OperationKind.CAPTURE, OpS.FAILED)
        assert capture.error_code == "capture_declined"
        assert w.store.event_types(payment.id)[-1] == "CAPTURE_FAILED"
        assert w.store.routing_keys(payment.id) == ["payment.authorized"]
        assert w.store.orders[payment.order_id].status is OrderStatus.PAYMENT_PENDING
        assert w.telemetry.counted("payment_capture_total", status="error") == 1

    @pytest.mark.parametrize(
        ("error", "code"),
        [
            (ProviderUnavailable("down"), "provider_unavailable"),
            (ProviderError("400"), "provider_error"),
        ],
    )
    async def test_a_provider_not_reached_fails_the_operation_only(
        self, w: World, error: Exception, code: str
    ) -> None:
        payment = await confirmed(w, manual=True)
        w.provider.will("capture", error)

        with pytest.raises(ProviderFailure) as failure:
            await capture_payment(payment.id, None, API, deps=w.deps)

        assert failure.value.code == code
        assert w.store.payment(payment.id).status is S.AUTHORIZED
        assert w.store.operations_of(payment.id)[-1].status is OpS.FAILED
        # Nothing happened there: the next capture is a new operation with a new key.
        captured = await capture_payment(payment.id, None, API, deps=w.deps)
        assert captured.status is S.CAPTURED
        assert w.provider.keys("capture") == [f"{payment.id}:capture:2", f"{payment.id}:capture:3"]

    async def test_a_second_capture_while_one_is_unknown_is_refused(self, w: World) -> None:
        payment = await confirmed(w, manual=True)
        w.provider.will("capture", ProviderTimeout("slow"))
        with pytest.raises(ProviderFailure, match="slow"):
            await capture_payment(payment.id, None, API, deps=w.deps)

        with pytest.raises(InvalidStateTransition, match="a capture is in progress"):
            await capture_payment(payment.id, None, API, deps=w.deps)
        assert len(w.provider.keys("capture")) == 1


class TestVoid:
    async def test_an_unsent_payment_is_canceled_without_a_call(self, w: World) -> None:
        payment = await initiated(w)

        voided = await void_payment(payment.id, "changed_mind", API, deps=w.deps)

        assert voided.status is S.CANCELED
        assert w.provider.calls == []
        [op] = w.store.operations_of(payment.id)
        assert (op.kind, op.status) == (OperationKind.VOID, OpS.SUCCEEDED)
        body = json.loads(w.store.messages(payment.id)[0].body)
        assert body["reason"] == "changed_mind"

    async def test_a_hold_is_released_at_the_provider(self, w: World) -> None:
        payment = await confirmed(w, manual=True)

        voided = await void_payment(payment.id, None, API, deps=w.deps)

        assert voided.status is S.CANCELED
        assert w.provider.keys("void") == [f"{payment.id}:void:2"]
        assert w.store.routing_keys(payment.id) == ["payment.authorized", "payment.canceled"]


class TestRefund:
    async def test_a_refund_is_pending_while_asked_then_succeeds(self, w: World) -> None:
        payment = await confirmed(w)
        seen: list[tuple[RefundStatus, OperationStatus]] = []

        def committed_before_the_call(call: ProviderCall) -> None:
            [refund] = w.store.refunds_of(payment.id)
            op = w.store.operations_of(payment.id)[-1]
            seen.append((refund.status, op.status))

        w.provider.on_call = committed_before_the_call
        refund = await refund_payment(payment.id, eur(300), "damaged", API, deps=w.deps)

        assert seen == [(RefundStatus.PENDING, OpS.PENDING)]
        assert (refund.status, refund.amount, refund.reason) == (
            RefundStatus.SUCCEEDED,
            eur(300),
            "damaged",
        )
        assert refund.provider_refund_id is not None
        [call] = w.provider.calls[1:]
        assert (call.operation, call.idempotency_key) == ("refund", f"{payment.id}:refund:2")
        assert call.amount == eur(300)
        stored = w.store.payment(payment.id)
        assert (stored.status, stored.refunded_minor, stored.refund_pending_minor) == (
            S.PARTIALLY_REFUNDED,
            300,
            0,
        )
        assert w.store.routing_keys(payment.id) == ["payment.succeeded", "payment.refunded"]
        assert w.store.orders[payment.order_id].status is OrderStatus.PARTIALLY_REFUNDED

    async def test_a_retry_after_the_answer_does_not_ask_again(self, w: World) -> None:
        payment = await confirmed(w)
        first = await refund_payment(
            payment.id, eur(300), None, API, deps=w.deps, request_key="rk-1"
        )

        again = await refund_payment(
            payment.id, eur(300), None, API, deps=w.deps, request_key="rk-1"
        )

        assert again.id == first.id
        assert again.status is RefundStatus.SUCCEEDED
        assert w.provider.keys("refund") == [f"{payment.id}:refund:2"]
        assert len(w.store.refunds_of(payment.id)) == 1
        assert w.store.payment(payment.id).refunded_minor == 300

    async def test_a_retry_after_a_lost_answer_resends_the_same_key(self, w: World) -> None:
        """The provider acted but its answer was lost: the retry sends the same operation,
        and the provider answers with what it already did."""
        payment = await confirmed(w)
        w.provider.will("refund", Lost())
        with pytest.raises(ProviderFailure):
            await refund_payment(payment.id, None, None, API, deps=w.deps, request_key="rk-1")

        refund = await refund_payment(payment.id, None, None, API, deps=w.deps, request_key="rk-1")

        assert refund.status is RefundStatus.SUCCEEDED
        key = f"{payment.id}:refund:2"
        assert w.provider.keys("refund") == [key, key]
        assert w.store.payment(payment.id).status is S.REFUNDED
        assert w.store.routing_keys(payment.id).count("payment.refunded") == 1

    async def test_a_timeout_answers_provider_timeout_and_leaves_it_unknown(self, w: World) -> None:
        payment = await confirmed(w)
        w.provider.will("refund", ProviderTimeout("the provider timed out"))

        with pytest.raises(ProviderFailure) as failure:
            await refund_payment(payment.id, eur(300), None, API, deps=w.deps)

        assert failure.value.code == "provider_timeout"
        op = w.store.operations_of(payment.id)[-1]
        assert (op.kind, op.status) == (OperationKind.REFUND, OpS.UNKNOWN)
        assert op.next_check_at is not None
        [refund] = w.store.refunds_of(payment.id)
        assert refund.status is RefundStatus.PENDING
        stored = w.store.payment(payment.id)
        assert (stored.status, stored.refund_pending_minor) == (S.CAPTURED, 300)
        assert stored.refundable == eur(700)
        assert w.store.routing_keys(payment.id) == ["payment.succeeded"]

    async def test_a_declined_refund_is_answered_as_a_failed_refund(self, w: World) -> None:
        payment = await confirmed(w)
        declined(w.provider, "refund_declined")

        refund = await refund_payment(payment.id, None, None, API, deps=w.deps)

        assert refund.status is RefundStatus.FAILED
        stored = w.store.payment(payment.id)
        assert (stored.status, stored.refundable) == (S.CAPTURED, eur(1_000))
        assert w.store.event_types(payment.id)[-1] == "REFUND_FAILED"

    async def test_nothing_is_kept_of_a_transaction_that_did_not_commit(self, w: World) -> None:
        """A use case that raises inside its unit of work leaves the store as it was."""
        payment = await confirmed(w)
        commits = w.store.commits

        with pytest.raises(AmountExceedsRefundable):
            await refund_payment(payment.id, eur(5_000), None, API, deps=w.deps)

        assert w.store.commits == commits
        assert w.store.refunds_of(payment.id) == []
        assert w.store.payment(payment.id).refund_pending_minor == 0
