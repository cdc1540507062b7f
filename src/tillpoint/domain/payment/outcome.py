"""What the outside world says about an operation: the provider's answer to our call, a
webhook's signal, or the answer to a reconciliation lookup — one vocabulary for all of them,
so `Payment.apply` holds one rule whatever the source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class ProviderStatus(StrEnum):
    """Where the provider says a payment (or a refund) stands."""

    PROCESSING = "PROCESSING"
    REQUIRES_ACTION = "REQUIRES_ACTION"
    AUTHORIZED = "AUTHORIZED"
    CAPTURED = "CAPTURED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    REFUNDED = "REFUNDED"
    DISPUTED = "DISPUTED"  # a chargeback was opened; announced by webhook only


@dataclass(frozen=True, slots=True)
class Outcome:
    """An answer: the provider acted (or refused) and says so."""

    status: ProviderStatus
    provider_payment_id: str | None
    amount_minor: int
    currency: str
    reference: str | None = None  # the provider's id of this operation (charge, refund)
    failure_code: str | None = None
    failure_message: str | None = None
    next_action: Mapping[str, Any] | None = None
    risk_score: int | None = None


class Silence(StrEnum):
    """Why there is no answer, and what each reason lets us conclude about the money."""

    TIMEOUT = "provider_timeout"  # the call may have acted: unknown until the provider is asked
    UNREACHABLE = "provider_unavailable"  # the provider was not reached: nothing happened
    ERROR = "provider_error"  # the provider refused the call itself: nothing happened
    NOT_FOUND = "not_found"  # asked later, the provider has no record: it never happened


@dataclass(frozen=True, slots=True)
class NoAnswer:
    reason: Silence
    message: str

    @property
    def code(self) -> str:
        return self.reason.value
