"""Checkout snapshots: a priced, expiring picture of an order a payment can be bound to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tillpoint.domain.errors import (
    SnapshotExpired,
    SnapshotMismatch,
    ValidationFailed,
)
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import MAX_MINOR, Money


@dataclass(frozen=True, slots=True)
class LineItem:
    variant_id: str
    quantity: int
    unit_amount: Money

    @property
    def total(self) -> Money:
        return Money(self.unit_amount.minor * self.quantity, self.unit_amount.currency)


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: Money
    discount: Money
    shipping: Money
    tax: Money
    total: Money


@dataclass(frozen=True, slots=True)
class CheckoutSnapshot:
    id: str
    order_id: str
    items: tuple[LineItem, ...]
    totals: Totals
    created_at: datetime
    expires_at: datetime

    @classmethod
    def quote(
        cls,
        order_id: str,
        items: tuple[LineItem, ...],
        *,
        shipping: Money,
        tax: Money,
        discount: Money,
        now: datetime,
        ttl: timedelta,
    ) -> CheckoutSnapshot:
        if not items:
            raise ValidationFailed("items", "a quote needs at least one item")
        currency = items[0].unit_amount.currency
        subtotal_minor = sum(item.unit_amount.minor * item.quantity for item in items)
        if subtotal_minor + shipping.minor + tax.minor > MAX_MINOR:
            # Checked on the integers, before any line total or sum becomes a Money.
            raise ValidationFailed("items", "the quote's total is too large")
        subtotal = Money(subtotal_minor, currency)
        total = subtotal - discount + shipping + tax
        if total.minor <= 0:
            raise ValidationFailed("discount_amount", "the quote's total must be greater than zero")
        totals = Totals(subtotal, discount, shipping, tax, total)
        return cls(new_id("snap"), order_id, items, totals, now, now + ttl)

    def bind(self, order_id: str, order_amount: Money, now: datetime) -> None:
        """Refuse a payment that does not match what the customer was shown."""
        if now >= self.expires_at:
            raise SnapshotExpired(f"snapshot {self.id} expired at {self.expires_at.isoformat()}")
        if self.order_id != order_id:
            raise SnapshotMismatch(f"snapshot {self.id} belongs to another order")
        if self.totals.total != order_amount:
            raise SnapshotMismatch(
                f"snapshot total {self.totals.total} differs from the order amount {order_amount}"
            )
