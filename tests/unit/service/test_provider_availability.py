"""What the use cases do around a provider that cannot be reached or would refuse a payment:
fail fast while its circuit is open (nothing written, nothing sent), send a new operation when a
retry follows one that never reached the provider, refuse (422) before anything is stored what
the provider's capabilities exclude, and hand out the client secret only to those who may see it.
"""

from __future__ import annotations

import pytest

from tests.unit.fakes import World
from tests.unit.service.steps import API, confirmed, eur, initiated
from tillpoint.domain.errors import ProviderFailure, ValidationFailed
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    CaptureMethod,
    OperationStatus,
    PaymentMethod,
    PaymentStatus,
    ProviderStatus,
)
from tillpoint.service.identity import Principal
from tillpoint.service.orders import CreateOrder, create_order
from tillpoint.service.payments import (
    CreatePayment,
    capture_payment,
    client_secret,
    confirm_payment,
    create_payment,
    refund_payment,
)
from tillpoint.service.ports import Capabilities, Limits, ProviderTimeout, ProviderUnavailable

S = PaymentStatus


class TestCircuitOpen:
    async def test_a_confirm_fails_fast_and_leaves_nothing_behind(self, w: World) -> None:
        payment = await initiated(w)
        w.provider.open_circuit = True

        with pytest.raises(ProviderFailure) as refused:
            await confirm_payment(payment.id, None, API, deps=w.deps, request_key="rk-1")

        assert refused.value.code == "provider_unavailable"
        assert refused.value.stored is False  # a retry with the same key runs again
        assert w.provider.calls == []
        assert w.store.operations_of(payment.id) == []
        assert w.store.payment(payment.id).status is S.INITIATED

    async def test_the_same_request_succeeds_once_the_circuit_closes(self, w: World) -> None:
        payment = await initiated(w)
        w.provider.open_circuit = True
        with pytest.raises(ProviderFailure):
            await confirm_payment(payment.id, None, API, deps=w.deps, request_key="rk-1")

        w.provider.open_circuit = False
        answered = await confirm_payment(payment.id, None, API, deps=w.deps, request_key="rk-1")

        assert answered.status is S.CAPTURED
        assert len(w.provider.calls) == 1

    async def test_a_refund_is_not_started_while_it_is_open(self, w: World) -> None:
        payment = await confirmed(w)
        w.provider.open_circuit = True

        with pytest.raises(ProviderFailure) as refused:
            await refund_payment(payment.id, eur(100), None, API, deps=w.deps)

        assert refused.value.code == "provider_unavailable"
        assert w.store.refunds_of(payment.id) == []
        assert [c.operation for c in w.provider.calls] == ["authorize"]


class TestRetryAfterAnUnreachedProvider:
    async def test_a_confirm_retried_sends_a_new_operation(self, w: World) -> None:
        payment = await initiated(w)
        w.provider.will("authorize", ProviderUnavailable("connection refused"))
        with pytest.raises(ProviderFailure) as first:
            await confirm_payment(payment.id, None, API, deps=w.deps, request_key="rk-1")
        assert first.value.code == "provider_unavailable"
        assert w.store.payment(payment.id).status is S.INITIATED

        answered = await confirm_payment(payment.id, None, API, deps=w.deps, request_key="rk-1")

        assert answered.status is S.CAPTURED
        keys = w.provider.keys("authorize")
        assert len(keys) == 2
        assert keys[0] != keys[1]  # the first never reached the provider
        statuses = sorted(op.status.value for op in w.store.operations_of(payment.id))
        assert statuses == [OperationStatus.FAILED.value, OperationStatus.SUCCEEDED.value]

    async def test_a_capture_retried_after_a_timeout_resends_the_same_key(self, w: World) -> None:
        """Only an operation that provably never reached the provider is replaced; one whose
        outcome is unknown is sent again with its own key."""
        payment = await confirmed(w, manual=True)
        w.provider.will("capture", ProviderTimeout("slow"))
        with pytest.raises(ProviderFailure):
            await capture_payment(payment.id, None, API, deps=w.deps, request_key="rk-c")

        answered = await capture_payment(payment.id, None, API, deps=w.deps, request_key="rk-c")

        assert answered.status is S.CAPTURED
        first, second = w.provider.keys("capture")
        assert first == second


def limited() -> Capabilities:
    return Capabilities(
        manual_capture=False,
        partial_capture=True,
        multiple_partial_refunds=True,
        async_outcomes=False,
        three_d_secure=False,
        cancel_after_authorization=True,
        currencies={"EUR": Limits(minimum=50, maximum=99_999_999), "JPY": Limits(50, 9_999_999)},
    )


class TestCapabilities:
    async def _create(
        self, w: World, amount: Money, method: CaptureMethod = CaptureMethod.AUTOMATIC
    ) -> None:
        order_id = new_id("ord")
        await create_order(CreateOrder(order_id, "buyer-1", amount), API, deps=w.deps)
        await create_payment(
            CreatePayment(order_id=order_id, amount=amount, capture_method=method),
            API,
            deps=w.deps,
        )

    @pytest.mark.parametrize(
        ("amount", "method", "field"),
        [
            (Money(49, "EUR"), CaptureMethod.AUTOMATIC, "amount"),
            (Money(100_000_000, "EUR"), CaptureMethod.AUTOMATIC, "amount"),
            (Money(1_000, "USD"), CaptureMethod.AUTOMATIC, "amount.currency"),
            (Money(1_000, "EUR"), CaptureMethod.MANUAL, "capture_method"),
        ],
    )
    async def test_what_the_provider_would_refuse_is_422_before_anything_is_stored(
        self, w: World, amount: Money, method: CaptureMethod, field: str
    ) -> None:
        w.provider.capabilities = limited()
        before = len(w.store.payments)

        with pytest.raises(ValidationFailed) as refused:
            await self._create(w, amount, method)

        assert refused.value.field == field
        assert len(w.store.payments) == before
        assert w.provider.calls == []

    @pytest.mark.parametrize(
        "amount", [Money(50, "EUR"), Money(99_999_999, "EUR"), Money(50, "JPY")]
    )
    async def test_the_limits_themselves_are_accepted(self, w: World, amount: Money) -> None:
        w.provider.capabilities = limited()
        before = len(w.store.payments)

        await self._create(w, amount)

        assert len(w.store.payments) == before + 1


class TestClientSecret:
    async def _waiting(self, w: World) -> str:
        payment = await initiated(w)
        pi = f"fp_{payment.id}"
        w.provider.will(
            "authorize",
            w.provider.outcome(
                ProviderStatus.REQUIRES_ACTION,
                eur(1_000),
                pi,
                next_action={"type": "use_stripe_sdk"},
            ),
        )
        w.provider.secrets[pi] = f"{pi}_secret_abc"
        answered = await confirm_payment(payment.id, None, API, deps=w.deps)
        assert answered.status is S.REQUIRES_ACTION
        return payment.id

    @pytest.mark.parametrize(
        ("viewer", "sees"),
        [
            (Principal("checkout", "service"), True),
            (Principal("buyer", "customer", subject="buyer-1"), True),
            (Principal("other", "customer", subject="buyer-2"), False),
            (Principal("ops", "admin"), False),
        ],
    )
    async def test_only_the_service_and_the_owner_see_it(
        self, w: World, viewer: Principal, sees: bool
    ) -> None:
        payment_id = await self._waiting(w)
        payment = w.store.payment(payment_id)

        secret = await client_secret(payment, viewer, deps=w.deps)

        assert secret == (f"fp_{payment_id}_secret_abc" if sees else None)

    async def test_none_once_the_step_is_done(self, w: World) -> None:
        payment = await confirmed(w)
        w.provider.secrets[payment.provider_payment_id or ""] = "x_secret_y"

        assert await client_secret(payment, Principal("c", "service"), deps=w.deps) is None


class TestPaymentMethodTokens:
    def needs_pm(self, w: World) -> None:
        w.provider.capabilities = Capabilities(
            manual_capture=True,
            partial_capture=True,
            multiple_partial_refunds=True,
            async_outcomes=True,
            three_d_secure=True,
            cancel_after_authorization=True,
            token_prefix="pm_",
        )

    async def test_a_token_of_the_wrong_kind_is_422_at_create(self, w: World) -> None:
        self.needs_pm(w)
        order_id = new_id("ord")
        await create_order(CreateOrder(order_id, "buyer-1", eur(1_000)), API, deps=w.deps)

        with pytest.raises(ValidationFailed) as refused:
            await create_payment(
                CreatePayment(
                    order_id=order_id,
                    amount=eur(1_000),
                    payment_method=PaymentMethod(token="tok_visa"),
                ),
                API,
                deps=w.deps,
            )

        assert refused.value.field == "payment_method.token"
        assert w.store.payments == {}

    async def test_a_confirm_without_a_token_is_422_before_anything_is_sent(self, w: World) -> None:
        self.needs_pm(w)
        order_id = new_id("ord")
        await create_order(CreateOrder(order_id, "buyer-1", eur(1_000)), API, deps=w.deps)
        payment = await create_payment(
            CreatePayment(order_id=order_id, amount=eur(1_000)), API, deps=w.deps
        )

        with pytest.raises(ValidationFailed):
            await confirm_payment(payment.id, None, API, deps=w.deps)

        assert w.provider.calls == []
        assert w.store.operations_of(payment.id) == []
        answered = await confirm_payment(
            payment.id, PaymentMethod(token="pm_card_visa"), API, deps=w.deps
        )
        assert answered.status is S.CAPTURED
