"""The payment's transition table and the statuses of its operations and refunds.

State moves only along `NEXT`; it reads like API.md's state diagram, and the Hypothesis state
machine in tests/unit walks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class PaymentStatus(StrEnum):
    INITIATED = "INITIATED"
    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


S = PaymentStatus
NEXT: Final[Mapping[PaymentStatus, frozenset[PaymentStatus]]] = {
    S.INITIATED: frozenset(
        {S.PROCESSING, S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}
    ),
    S.PROCESSING: frozenset({S.REQUIRES_ACTION, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}),
    S.REQUIRES_ACTION: frozenset({S.PROCESSING, S.AUTHORIZED, S.CAPTURED, S.FAILED, S.CANCELED}),
    S.AUTHORIZED: frozenset({S.CAPTURED, S.CANCELED}),
    S.CAPTURED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.PARTIALLY_REFUNDED: frozenset({S.PARTIALLY_REFUNDED, S.REFUNDED}),
    S.REFUNDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELED: frozenset(),
}
ACTIVE: Final = frozenset({S.INITIATED, S.PROCESSING, S.REQUIRES_ACTION, S.AUTHORIZED})
NOT_YET_AUTHORIZED: Final = frozenset({S.INITIATED, S.PROCESSING, S.REQUIRES_ACTION})


def can_move(current: PaymentStatus, target: PaymentStatus) -> bool:
    return target in NEXT[current]


class CaptureMethod(StrEnum):
    AUTOMATIC = "automatic"
    MANUAL = "manual"


class OperationKind(StrEnum):
    AUTHORIZE = "AUTHORIZE"
    SALE = "SALE"
    CAPTURE = "CAPTURE"
    VOID = "VOID"
    REFUND = "REFUND"


# The operations that take the payment itself somewhere (rather than capture, void or refund it).
PAYMENT_OPERATIONS: Final = frozenset({OperationKind.SALE, OperationKind.AUTHORIZE})


class OperationStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


OPEN_OPERATION: Final = frozenset({OperationStatus.PENDING, OperationStatus.UNKNOWN})


class RefundStatus(StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class DisputeStatus(StrEnum):
    """A chargeback's stage, in our words (each provider's statuses are mapped to these)."""

    NEEDS_RESPONSE = "needs_response"
    UNDER_REVIEW = "under_review"
    WON = "won"
    LOST = "lost"


D = DisputeStatus
# How far a dispute has got: a report of an earlier stage than the one recorded is stale. `won`
# and `lost` are both last, and final: once closed, a dispute never changes again.
DISPUTE_STAGE: Final[Mapping[DisputeStatus, int]] = {
    D.NEEDS_RESPONSE: 0,
    D.UNDER_REVIEW: 1,
    D.WON: 2,
    D.LOST: 2,
}
CLOSED_DISPUTE: Final = frozenset({D.WON, D.LOST})
