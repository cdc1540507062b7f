"""Reconciliation: runs that compare our payments with the provider's, and the discrepancies
they find. A discrepancy is healed (moved forward through the payment's one outcome rule) or
flagged for a person; a flagged one stays until an admin resolves it with a note."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tillpoint.domain.errors import InvalidStateTransition


class RunStatus(StrEnum):
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"


class Kind(StrEnum):
    MISSING_AT_PROVIDER = "missing_at_provider"  # ours, with a provider id the provider lacks
    MISSING_LOCALLY = "missing_locally"  # the provider's, unknown to us
    STATUS_MISMATCH = "status_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"  # captured or refunded amounts differ
    REFUND_MISMATCH = "refund_mismatch"  # a refund on one side only
    DISPUTE_OPENED = "dispute_opened"
    STUCK = "stuck"  # an operation unresolved past its SLA


class Action(StrEnum):
    HEALED = "healed"
    FLAGGED = "flagged"


@dataclass(slots=True)
class Run:
    run_id: str
    status: RunStatus
    provider: str | None  # None: every configured provider
    window_from: datetime
    window_to: datetime
    started_at: datetime
    heartbeat_at: datetime
    checked: int = 0
    healed: int = 0
    flagged: int = 0
    resolved: int = 0  # open operations settled by asking the provider
    finished_at: datetime | None = None
    error: str | None = None
    slot: str | None = None  # the schedule's slot of a scheduled run (one run per slot)

    def beat(self, now: datetime) -> None:
        self.heartbeat_at = now

    def count(self, found: Discrepancy) -> None:
        if found.action is Action.HEALED:
            self.healed += 1
        else:
            self.flagged += 1

    def finish(self, now: datetime) -> None:
        self.status, self.finished_at, self.heartbeat_at = RunStatus.FINISHED, now, now

    def fail(self, now: datetime, error: str) -> None:
        self.status, self.finished_at, self.error = RunStatus.FAILED, now, error[:500]

    def abandoned(self, now: datetime, stale_after_seconds: float) -> bool:
        """RUNNING with no sign of life for longer than `stale_after`: its process died."""
        quiet = (now - self.heartbeat_at).total_seconds()
        return self.status is RunStatus.RUNNING and quiet > stale_after_seconds


@dataclass(slots=True)
class Discrepancy:
    """One difference between our view and the provider's, and what was done about it.

    `fingerprint` names the difference itself (its kind, the payment, the values that differ),
    so a later run that finds the same one again records nothing new."""

    id: str
    run_id: str
    provider: str
    kind: Kind
    action: Action
    fingerprint: str
    detail: str
    created_at: datetime
    payment_id: str | None = None
    provider_payment_id: str | None = None
    ours: dict[str, Any] = field(default_factory=dict)
    theirs: dict[str, Any] = field(default_factory=dict)
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None

    def resolve(self, now: datetime, actor: str, note: str) -> bool:
        """Mark a flagged discrepancy handled by a person; False when it already was (the same
        resolution again is a no-op)."""
        if self.action is not Action.FLAGGED:
            raise InvalidStateTransition(
                f"discrepancy {self.id} was healed; only a flagged one is resolved by hand"
            )
        if self.resolved_at is not None:
            return False
        self.resolved_at, self.resolved_by, self.resolution_note = now, actor, note
        return True
