"""The payment: its transition table (`status`), its parts (`records`: operations, refunds,
disputes), what providers say (`outcome`), what happened (`events`) and the aggregate that ties
them (`aggregate`)."""

from tillpoint.domain.payment.aggregate import Change, Payment, payment_of_key
from tillpoint.domain.payment.outcome import NoAnswer, Outcome, ProviderStatus, Silence
from tillpoint.domain.payment.records import Dispute, Operation, PaymentMethod, Refund
from tillpoint.domain.payment.status import (
    ACTIVE,
    CLOSED_DISPUTE,
    DISPUTE_STAGE,
    NEXT,
    NOT_YET_AUTHORIZED,
    OPEN_OPERATION,
    PAYMENT_OPERATIONS,
    CaptureMethod,
    DisputeStatus,
    OperationKind,
    OperationStatus,
    PaymentStatus,
    RefundStatus,
    can_move,
)

__all__ = [
    "ACTIVE",
    "CLOSED_DISPUTE",
    "DISPUTE_STAGE",
    "NEXT",
    "NOT_YET_AUTHORIZED",
    "OPEN_OPERATION",
    "PAYMENT_OPERATIONS",
    "CaptureMethod",
    "Change",
    "Dispute",
    "DisputeStatus",
    "NoAnswer",
    "Operation",
    "OperationKind",
    "OperationStatus",
    "Outcome",
    "Payment",
    "PaymentMethod",
    "PaymentStatus",
    "ProviderStatus",
    "Refund",
    "RefundStatus",
    "Silence",
    "can_move",
    "payment_of_key",
]
