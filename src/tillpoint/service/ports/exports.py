"""Exports: the rows a finance export reads, streamed from storage in a stable order."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


class ExportTargetFailed(Exception):
    """The export could not be written where it was asked to go (a bucket that does not exist,
    refused credentials, an unreachable object store, a directory that cannot be written)."""


@dataclass(frozen=True, slots=True)
class ExportWindow:
    """Rows created in `[created_from, created_to)`, of one provider or of every provider."""

    created_from: datetime
    created_to: datetime
    provider: str | None = None


@dataclass(frozen=True, slots=True)
class Movement:
    """One money movement as stored: a provider operation (`payment_transactions`) with its
    payment's ids and, for a refund, the refund's. A refund recorded without an operation of its
    own comes as a movement with `transaction_id` None, its status and provider id the refund's.
    Amounts are minor units of `currency`."""

    transaction_id: str | None
    kind: str
    status: str
    amount_minor: int
    currency: str
    payment_id: str
    order_id: str
    provider: str
    provider_payment_id: str | None
    provider_reference: str | None
    idempotency_key: str | None
    refund_id: str | None
    reason: str | None
    error_code: str | None
    created_at: datetime
    updated_at: datetime | None


class MovementSource(Protocol):
    def movements(self, window: ExportWindow) -> AsyncIterator[Movement]:
        """Every movement of the window, oldest first (`created_at`, then id), read in batches:
        however long the window, only a batch is in memory at a time."""
        ...

    async def count(self, window: ExportWindow) -> int:
        """How many movements `movements(window)` yields (a progress bar's total)."""
        ...
