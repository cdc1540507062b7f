"""Orders and payments built as domain objects and written straight through the repositories,
for the tests that must not (or cannot) go through HTTP: the outbox relay's and the database
adapters' own tests. The HTTP way to the same states is `tests/support/flows.py`."""

from __future__ import annotations

from datetime import datetime

from tests.conftest import new_key, settings_for
from tillpoint.bootstrap import Container, build
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext, Order
from tillpoint.domain.payment import (
    CaptureMethod,
    Outcome,
    Payment,
    PaymentMethod,
    ProviderStatus,
)
from tillpoint.domain.reconciliation import Action, Discrepancy, Kind
from tillpoint.service import reconciliation


def captured(now: datetime, amount: Money | None = None) -> tuple[Order, Payment]:
    """A new order and its manual-capture payment, authorized then captured by the mock: its
    events are sequence 1 (authorized) and 2 (succeeded), its provider id is new. Nothing is
    stored yet."""
    amount = amount or Money(1000, "EUR")
    provider_payment_id = f"mock_{new_key()}"
    ctx = ChangeContext("test")
    order = Order.register(f"ord-{new_key()}", "b", amount, now, ctx)
    payment = Payment.initiate(
        order_id=order.order_id,
        buyer_id="b",
        amount=amount,
        capture_method=CaptureMethod.MANUAL,
        provider="mock",
        payment_method=PaymentMethod(last4="4242"),
        snapshot_id=None,
        request_key=None,
        now=now,
    )
    for status in (ProviderStatus.AUTHORIZED, ProviderStatus.CAPTURED):
        said = Outcome(status, provider_payment_id, amount.minor, amount.currency)
        payment.apply(said, op=None, now=now, source="test", check_at=now, transaction_id="txn_x")
    return order, payment


async def captured_payment(url: str, *, commit: bool = True) -> str:
    """A captured payment (`captured`) written straight through the repositories of the
    database at `url`; with `commit=False` the transaction rolls back. Returns its id."""
    container = build(settings_for(url))
    try:
        order, payment = captured(container.deps.clock.now())
        async with container.deps.uow() as uow:
            await uow.orders.add(order)
            await uow.payments.add(payment)
            if commit:
                await uow.commit()
        return payment.id
    finally:
        await container.aclose()


async def flagged_discrepancy(container: Container) -> tuple[str, str]:
    """A reconciliation run with one flagged discrepancy (an unknown provider payment), for
    the tests of the routes that name them: `(run_id, discrepancy_id)`."""
    deps = container.deps
    run = await reconciliation.start_run(deps=deps, created_from=deps.clock.now())
    assert run is not None
    found = Discrepancy(
        id=new_id("dsc"),
        run_id=run.run_id,
        provider="mock",
        kind=Kind.MISSING_LOCALLY,
        action=Action.FLAGGED,
        fingerprint=f"test:{new_id('fp')}",
        detail="made by a test",
        created_at=deps.clock.now(),
    )
    async with deps.uow() as uow:
        assert await uow.reconciliations.add_discrepancy(found)
        await uow.commit()
    return run.run_id, found.id
