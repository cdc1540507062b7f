"""The payment side's view of an order: it follows its payment, and remembers every step."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Final

from tillpoint.domain.errors import InvalidStateTransition, ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment import PaymentStatus


class OrderStatus(StrEnum):
    PAYMENT_PENDING = "PAYMENT_PENDING"
    PAID = "PAID"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    CANCELED = "CANCELED"


_O = OrderStatus
ORDER_NEXT: Final[Mapping[OrderStatus, frozenset[OrderStatus]]] = {
    _O.PAYMENT_PENDING: frozenset({_O.PAID, _O.CANCELED}),
    _O.PAID: frozenset({_O.PARTIALLY_REFUNDED, _O.REFUNDED}),
    _O.PARTIALLY_REFUNDED: frozenset({_O.PARTIALLY_REFUNDED, _O.REFUNDED}),
    _O.REFUNDED: frozenset(),
    _O.CANCELED: frozenset(),
}


class FailurePolicy(StrEnum):
    KEEP_PENDING = "keep_pending"
    CANCEL = "cancel"


# The one order-id rule. `check_order_id` applies it (registering an order, parsing a consumed
# message); the API's request schemas use the pattern as their field constraint, so the OpenAPI
# document shows it and a bad id is a 422 before anything runs.
ORDER_ID_PATTERN: Final = r"^[A-Za-z0-9._:-]{1,64}$"
ORDER_ID: Final = re.compile(ORDER_ID_PATTERN)


def check_order_id(value: str) -> str:
    if not ORDER_ID.fullmatch(value):
        raise ValidationFailed("order_id", "order_id must be 1-64 characters of [A-Za-z0-9._:-]")
    return value


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    from_status: OrderStatus | None
    to_status: OrderStatus
    reason: str
    source: str
    actor: str | None
    correlation_id: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ChangeContext:
    """Who or what caused a change: written into every history row."""

    source: str  # "api", "webhook", "janitor", "consumer"
    actor: str | None = None
    correlation_id: str | None = None


@dataclass(slots=True)
class Order:
    order_id: str
    buyer_id: str
    amount: Money
    status: OrderStatus
    created_at: datetime
    updated_at: datetime
    version: int = 0
    # The request that registered it: that request's retry gets this order back.
    request_key: str | None = None
    new_history: list[HistoryEntry] = field(default_factory=list)

    @classmethod
    def register(
        cls,
        order_id: str,
        buyer_id: str,
        amount: Money,
        now: datetime,
        ctx: ChangeContext,
        request_key: str | None = None,
    ) -> Order:
        order = cls(
            order_id=check_order_id(order_id),
            buyer_id=buyer_id,
            amount=amount,
            status=OrderStatus.PAYMENT_PENDING,
            created_at=now,
            updated_at=now,
            request_key=request_key,
        )
        order.new_history.append(
            HistoryEntry(
                None,
                OrderStatus.PAYMENT_PENDING,
                "order_created",
                ctx.source,
                ctx.actor,
                ctx.correlation_id,
                now,
            )
        )
        return order

    def change_amount(self, amount: Money, now: datetime) -> None:
        if self.status is not OrderStatus.PAYMENT_PENDING:
            raise InvalidStateTransition(
                f"order {self.order_id} is {self.status}; its amount can no longer change"
            )
        if amount.currency != self.amount.currency:
            raise ValidationFailed("amount", "an order's currency cannot change")
        self.amount = amount
        self.updated_at = now

    def _move(self, target: OrderStatus, reason: str, now: datetime, ctx: ChangeContext) -> bool:
        if target is self.status and target is not OrderStatus.PARTIALLY_REFUNDED:
            return False
        if target not in ORDER_NEXT[self.status]:
            return False  # the order has already moved on; the payment's log holds the signal
        self.new_history.append(
            HistoryEntry(
                self.status, target, reason, ctx.source, ctx.actor, ctx.correlation_id, now
            )
        )
        self.status = target
        self.updated_at = now
        return True

    def follow(
        self,
        payment_status: PaymentStatus,
        policy: FailurePolicy,
        now: datetime,
        ctx: ChangeContext,
        reason: str,
    ) -> bool:
        """Move the order to where its payment now stands."""
        match payment_status:
            case PaymentStatus.CAPTURED:
                return self._move(OrderStatus.PAID, reason, now, ctx)
            case PaymentStatus.PARTIALLY_REFUNDED:
                return self._move(OrderStatus.PARTIALLY_REFUNDED, reason, now, ctx)
            case PaymentStatus.REFUNDED:
                return self._move(OrderStatus.REFUNDED, reason, now, ctx)
            case PaymentStatus.FAILED | PaymentStatus.CANCELED if policy is FailurePolicy.CANCEL:
                return self._move(OrderStatus.CANCELED, reason, now, ctx)
            case _:
                return False

    def take_history(self) -> list[HistoryEntry]:
        entries, self.new_history = self.new_history, []
        return entries
