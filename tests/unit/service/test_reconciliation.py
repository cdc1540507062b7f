"""Reconciliation against in-memory fakes: each kind of drift is found, healed (forward, through
the outcome rule, with a RECONCILED event, the order following and the message published) or
flagged (nothing changed), and a second run over the same window finds nothing new."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.fakes import World, world
from tests.unit.service.steps import API, confirmed, initiated
from tillpoint.domain.errors import InvalidStateTransition
from tillpoint.domain.order import OrderStatus
from tillpoint.domain.payment import Payment, PaymentStatus, ProviderStatus, RefundStatus
from tillpoint.domain.reconciliation import Action, Kind, Run, RunStatus
from tillpoint.service import reconciliation
from tillpoint.service.payments import confirm_payment
from tillpoint.service.ports import (
    DiscrepancyFilter,
    ProviderDispute,
    ProviderPayment,
    ProviderRefund,
    ProviderTimeout,
)

S, P = PaymentStatus, ProviderStatus


class Views:
    """What the fake provider reports of its payments (its dashboard's doing included)."""

    def __init__(self) -> None:
        self.by_id: dict[str, ProviderPayment] = {}

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        return self.by_id.get(provider_payment_id)

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        for view in list(self.by_id.values()):
            if created_from <= view.created_at < created_to:
                yield view


@pytest.fixture
def w() -> World:
    current = world()
    current.provider.capabilities = replace(current.provider.capabilities, lists_payments=True)
    return current


@pytest.fixture
def views(w: World) -> Views:
    found = Views()
    setattr(w.provider, "payment", found.payment)  # noqa: B010  (the fake's view, this test's)
    setattr(w.provider, "payments", found.payments)  # noqa: B010
    return found


def view_of(payment: Payment, status: ProviderStatus, **amounts: object) -> ProviderPayment:
    """The provider's view, by default exactly ours."""
    assert payment.provider_payment_id is not None
    values: dict[str, object] = {
        "authorized_minor": payment.authorized_minor if payment.status is S.AUTHORIZED else 0,
        "captured_minor": payment.captured_minor,
        "refunded_minor": payment.refunded_minor,
        **amounts,
    }
    return ProviderPayment(
        provider_payment_id=payment.provider_payment_id,
        status=status,
        currency=payment.amount.currency,
        amount_minor=payment.amount.minor,
        created_at=payment.created_at,
        payment_id=payment.id,
        **values,  # type: ignore[arg-type]
    )


async def run(w: World) -> Run:
    w.clock.advance(timedelta(seconds=1))  # the window ends now, after the payments were made
    started = await reconciliation.start_run(deps=w.deps)
    assert started is not None
    return await reconciliation.run_pass(started.run_id, deps=w.deps)


async def found(w: World, done: Run) -> list[tuple[Kind, Action]]:
    rows, _ = await reconciliation.list_discrepancies(
        done.run_id, DiscrepancyFilter(), deps=w.deps, limit=100, cursor=None
    )
    return [(d.kind, d.action) for d in rows]


async def test_matching_sides_find_nothing(w: World, views: Views) -> None:
    payment = await confirmed(w)
    views.by_id[payment.provider_payment_id or ""] = view_of(payment, P.CAPTURED)

    done = await run(w)

    assert (done.status, done.checked, done.healed, done.flagged) == (RunStatus.FINISHED, 1, 0, 0)
    assert await found(w, done) == []


async def test_a_refund_made_in_the_providers_dashboard_is_healed(w: World, views: Views) -> None:
    payment = await confirmed(w, minor=1_000)
    refund = ProviderRefund("re_dash_1", 400, P.REFUNDED, idempotency_key=None)
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CAPTURED, refunded_minor=400, refunds=(refund,)
    )

    done = await run(w)

    assert await found(w, done) == [(Kind.REFUND_MISMATCH, Action.HEALED)]
    healed = w.store.payment(payment.id)
    assert (healed.status, healed.refunded_minor) == (S.PARTIALLY_REFUNDED, 400)
    [row] = w.store.refunds_of(payment.id)
    assert (row.status, row.provider_refund_id) == (RefundStatus.SUCCEEDED, "re_dash_1")
    assert w.store.event_types(payment.id)[-2:] == ["REFUND_SUCCEEDED", "RECONCILED"]
    assert w.store.routing_keys(payment.id)[-1] == "payment.refunded"
    assert w.store.orders[payment.order_id].status is OrderStatus.PARTIALLY_REFUNDED

    again = await run(w)  # the refund is ours now: nothing differs
    assert (again.healed, again.flagged, await found(w, again)) == (0, 0, [])
    assert len(w.store.refunds_of(payment.id)) == 1


async def test_a_held_payment_captured_at_the_provider_is_healed(w: World, views: Views) -> None:
    payment = await confirmed(w, manual=True, minor=1_000)
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CAPTURED, authorized_minor=0, captured_minor=1_000
    )

    done = await run(w)

    assert await found(w, done) == [(Kind.STATUS_MISMATCH, Action.HEALED)]
    healed = w.store.payment(payment.id)
    assert (healed.status, healed.captured_minor) == (S.CAPTURED, 1_000)
    assert "payment.succeeded" in w.store.routing_keys(payment.id)
    assert (await run(w)).healed == 0


async def test_a_held_payment_canceled_at_the_provider_is_healed(w: World, views: Views) -> None:
    payment = await confirmed(w, manual=True)
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CANCELED, authorized_minor=0
    )

    done = await run(w)

    assert await found(w, done) == [(Kind.STATUS_MISMATCH, Action.HEALED)]
    assert w.store.payment(payment.id).status is S.CANCELED
    assert w.store.routing_keys(payment.id)[-1] == "payment.canceled"


async def test_money_moved_backwards_is_flagged_never_changed(w: World, views: Views) -> None:
    payment = await confirmed(w)
    views.by_id[payment.provider_payment_id or ""] = view_of(payment, P.CANCELED, captured_minor=0)
    messages = len(w.store.messages(payment.id))

    done = await run(w)

    assert await found(w, done) == [(Kind.STATUS_MISMATCH, Action.FLAGGED)]
    assert w.store.payment(payment.id).status is S.CAPTURED
    assert len(w.store.messages(payment.id)) == messages
    again = await run(w)
    assert (again.flagged, await found(w, again)) == (0, [])  # the same difference, once

    [flagged] = w.store.discrepancies.values()
    resolved = await reconciliation.resolve_discrepancy(
        flagged.id, "refunded by hand", "key:ops", deps=w.deps
    )
    assert (resolved.resolved_by, resolved.resolution_note) == ("key:ops", "refunded by hand")
    first = resolved.resolved_at
    w.clock.advance(timedelta(minutes=1))
    again_resolved = await reconciliation.resolve_discrepancy(
        flagged.id, "other note", "key:other", deps=w.deps
    )
    assert (again_resolved.resolved_at, again_resolved.resolution_note) == (
        first,
        "refunded by hand",
    )


async def test_a_refund_bigger_than_what_is_left_is_flagged(w: World, views: Views) -> None:
    payment = await confirmed(w, minor=1_000)
    refund = ProviderRefund("re_big", 5_000, P.REFUNDED, idempotency_key=None)
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.REFUNDED, refunded_minor=5_000, refunds=(refund,)
    )

    done = await run(w)

    assert (Kind.REFUND_MISMATCH, Action.FLAGGED) in await found(w, done)
    assert w.store.payment(payment.id).refunded_minor == 0


async def test_a_payment_the_provider_lacks_and_one_we_lack_are_flagged(
    w: World, views: Views
) -> None:
    ours = await confirmed(w)
    stranger = replace(
        view_of(ours, P.CAPTURED), provider_payment_id="fp_made_in_dashboard", payment_id=None
    )
    views.by_id[stranger.provider_payment_id] = stranger  # and none for ours

    done = await run(w)

    assert sorted(await found(w, done)) == sorted(
        [(Kind.MISSING_AT_PROVIDER, Action.FLAGGED), (Kind.MISSING_LOCALLY, Action.FLAGGED)]
    )
    assert (await run(w)).flagged == 0


async def test_a_healed_discrepancy_cannot_be_resolved_by_hand(w: World, views: Views) -> None:
    payment = await confirmed(w, manual=True)
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CANCELED, authorized_minor=0
    )
    await run(w)
    [healed] = w.store.discrepancies.values()

    with pytest.raises(InvalidStateTransition):
        await reconciliation.resolve_discrepancy(healed.id, "x", "key:ops", deps=w.deps)


async def test_a_run_whose_heartbeat_stopped_is_marked_failed(w: World) -> None:
    started = await reconciliation.start_run(deps=w.deps)
    assert started is not None
    assert await reconciliation.fail_abandoned(deps=w.deps) == 0  # alive a moment ago

    w.clock.advance(w.deps.config.reconcile_stale_after + timedelta(seconds=1))

    assert await reconciliation.fail_abandoned(deps=w.deps) == 1
    run_ = await reconciliation.get_run(started.run_id, deps=w.deps)
    assert run_.status is RunStatus.FAILED
    assert (run_.error or "").startswith("abandoned")
    assert await reconciliation.fail_abandoned(deps=w.deps) == 0


async def test_one_scheduled_run_per_slot(w: World, views: Views) -> None:
    first = await reconciliation.run_scheduled(deps=w.deps)
    second = await reconciliation.run_scheduled(deps=w.deps)

    assert first is not None
    assert first.status is RunStatus.FINISHED
    assert second is None
    w.clock.advance(w.deps.config.reconcile_interval)
    assert await reconciliation.run_scheduled(deps=w.deps) is not None


async def test_a_chargeback_we_had_not_heard_of_is_recorded(w: World, views: Views) -> None:
    payment = await confirmed(w, minor=1_000)
    dispute = ProviderDispute("dp_found", 1_000, "fraudulent", "needs_response")
    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CAPTURED, disputes=(dispute,)
    )

    done = await run(w)

    assert await found(w, done) == [(Kind.DISPUTE_OPENED, Action.HEALED)]
    assert w.store.payment(payment.id).disputed_minor == 1_000
    assert w.store.routing_keys(payment.id)[-1] == "payment.disputed"
    again = await run(w)
    assert (again.healed, again.flagged) == (0, 0)
    assert w.store.routing_keys(payment.id).count("payment.disputed") == 1

    views.by_id[payment.provider_payment_id or ""] = view_of(
        payment, P.CAPTURED, disputes=(replace(dispute, status="lost"),)
    )
    closed = await run(w)
    assert await found(w, closed) == [(Kind.STATUS_MISMATCH, Action.HEALED)]
    assert w.store.routing_keys(payment.id)[-1] == "payment.dispute_closed"


async def test_an_operation_unresolved_past_its_sla_is_flagged_stuck(w: World) -> None:
    payment = await initiated(w)
    w.provider.will("authorize", ProviderTimeout("slow"))
    await confirm_payment(payment.id, None, API, deps=w.deps)
    w.provider.will_look_up(*[ProviderTimeout("still slow")] * 4)  # nobody can tell
    w.clock.advance(w.deps.config.reconcile_stuck_after + timedelta(hours=1))

    done = await run(w)

    assert await found(w, done) == [(Kind.STUCK, Action.FLAGGED)]
    assert w.store.payment(payment.id).status is S.PROCESSING  # never settled by guess
    assert (await run(w)).flagged == 0
