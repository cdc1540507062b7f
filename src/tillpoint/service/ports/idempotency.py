"""The idempotency store: claims on (scope, Idempotency-Key) and the answers stored under them.

A claim commits on its own, before the work and outside the work's transaction (another
request with the same key must see it at once), so the store is a port of its own rather than
a repository of the unit of work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    replayed: bool = False
    # False for a refusal of the request itself (a validation error found inside the use case):
    # like a body validation 422 it is not stored, so a corrected retry with the key proceeds.
    storable: bool = True


class ClaimOutcome(StrEnum):
    STARTED = "started"
    RESUMED = "resumed"  # taken over from a request that died
    REPLAY = "replay"
    REUSED = "reused"  # same key, different request
    IN_USE = "in_use"


@dataclass(frozen=True, slots=True)
class Claim:
    outcome: ClaimOutcome
    response: StoredResponse | None = None


class IdempotencyStore(Protocol):
    async def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        now: datetime,
        expires_at: datetime,
        lock_timeout: timedelta,
    ) -> Claim: ...

    async def complete(self, scope: str, key: str, response: StoredResponse) -> None: ...

    async def release(self, scope: str, key: str) -> None: ...

    async def reap(self, now: datetime, limit: int) -> int: ...
