"""Order use cases: register, read (with history), change the amount, quote a checkout."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from tillpoint.domain.errors import ActivePaymentExists, NotFound, OrderExists
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext, HistoryEntry, Order
from tillpoint.domain.payment import Payment
from tillpoint.domain.snapshot import CheckoutSnapshot, LineItem
from tillpoint.service.context import Deps

log = structlog.get_logger("tillpoint.orders")


@dataclass(frozen=True, slots=True)
class CreateOrder:
    order_id: str
    buyer_id: str
    amount: Money
    request_key: str | None = None


@dataclass(frozen=True, slots=True)
class QuoteItem:
    variant_id: str
    quantity: int
    unit_amount: str


@dataclass(frozen=True, slots=True)
class Quote:
    """Amounts are decimal strings: they are read in the order's currency."""

    order_id: str
    items: tuple[QuoteItem, ...]
    shipping: str | None = None
    tax: str | None = None
    discount: str | None = None


def _visible(order: Order | None, order_id: str, buyer_id: str | None) -> Order:
    """Another buyer's order is indistinguishable from a missing one."""
    if order is None or (buyer_id is not None and order.buyer_id != buyer_id):
        raise NotFound(f"order {order_id} not found")
    return order


async def create_order(cmd: CreateOrder, ctx: ChangeContext, *, deps: Deps) -> Order:
    now = deps.clock.now()
    order = Order.register(cmd.order_id, cmd.buyer_id, cmd.amount, now, ctx, cmd.request_key)
    async with deps.uow() as uow:
        existing = await uow.orders.get(cmd.order_id)
        if existing is not None:
            if (
                cmd.request_key is not None
                and existing.request_key == cmd.request_key
                and existing.created_at > now - deps.config.idempotency_ttl
            ):
                return existing  # a retry of the request that registered it
            raise OrderExists(f"order {cmd.order_id} already exists")
        await uow.orders.add(order)
        await uow.commit()
    log.info("order.created", order_id=order.order_id, amount=order.amount.format())
    return order


async def get_order(
    order_id: str, *, deps: Deps, buyer_id: str | None = None
) -> tuple[Order, list[HistoryEntry]]:
    async with deps.uow() as uow:
        order = _visible(await uow.orders.get(order_id), order_id, buyer_id)
        return order, await uow.orders.history(order_id)


async def change_order_amount(
    order_id: str, amount: Money, *, deps: Deps
) -> tuple[Order, list[HistoryEntry]]:
    async with deps.uow() as uow:
        order = _visible(await uow.orders.get(order_id, for_update=True), order_id, None)
        if await uow.payments.active_for_order(order_id) is not None:
            # Its payment would charge the old amount and still mark the order PAID.
            raise ActivePaymentExists(
                f"order {order_id} has an active payment; void it before changing the amount"
            )
        order.change_amount(amount, deps.clock.now())
        await uow.orders.save(order)
        history = await uow.orders.history(order_id)
        await uow.commit()
    log.info("order.amount_changed", order_id=order_id, amount=amount.format())
    return order, history


async def order_payments(
    order_id: str, *, deps: Deps, buyer_id: str | None = None
) -> list[Payment]:
    async with deps.uow() as uow:
        _visible(await uow.orders.get(order_id), order_id, buyer_id)
        return await uow.payments.for_order(order_id)


async def quote_checkout(cmd: Quote, *, deps: Deps) -> CheckoutSnapshot:
    now = deps.clock.now()
    async with deps.uow() as uow:
        order = _visible(await uow.orders.get(cmd.order_id), cmd.order_id, None)
        currency = order.amount.currency

        def extra(text: str | None) -> Money:
            return Money.parse(text or "0", currency, allow_zero=True)

        items = tuple(
            LineItem(
                i.variant_id, i.quantity, Money.parse(i.unit_amount, currency, allow_zero=True)
            )
            for i in cmd.items
        )
        snapshot = CheckoutSnapshot.quote(
            cmd.order_id,
            items,
            shipping=extra(cmd.shipping),
            tax=extra(cmd.tax),
            discount=extra(cmd.discount),
            now=now,
            ttl=deps.config.snapshot_ttl,
        )
        await uow.snapshots.add(snapshot)
        await uow.commit()
    log.info("checkout.quoted", order_id=cmd.order_id, snapshot_id=snapshot.id)
    return snapshot
