"""Idempotent requests (API.md "Idempotency"), after Stripe and the IETF draft.

The first request with a key claims it; its final status and body are stored and replayed byte
for byte to every later request with the same key and the same fingerprint. A different
fingerprint is refused; a key whose request is still running answers "in use". A key left
claimed by a process that died can be taken over after `lock_timeout`, and the retry resumes
the work (use cases are written to resume, and provider calls carry their own keys).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from tillpoint.service.ports import (
    ClaimOutcome,
    Clock,
    IdempotencyStore,
    StoredResponse,
    Telemetry,
)

log = structlog.get_logger("tillpoint.idempotency")


def fingerprint(path: str, body: Any) -> str:
    """Canonical JSON of the request (path + parsed body): key order and spacing don't count."""
    canonical = json.dumps(
        {"path": path, "body": body}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    # `surrogatepass`: JSON may carry a lone surrogate (`"\ud800"`), which plain UTF-8 refuses.
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


# Outcomes that are never stored, so a corrected retry with the same key proceeds.
NOT_STORED: frozenset[int] = frozenset({401, 403, 429})


@dataclass(frozen=True, slots=True)
class Idempotency:
    store: IdempotencyStore
    clock: Clock
    telemetry: Telemetry
    ttl: timedelta
    lock_timeout: timedelta

    async def run(
        self,
        scope: str,
        key: str,
        request_fingerprint: str,
        work: Callable[[bool], Awaitable[StoredResponse]],
        *,
        on_reused: Callable[[], StoredResponse],
        on_in_use: Callable[[], StoredResponse],
    ) -> StoredResponse:
        now = self.clock.now()
        claim = await self.store.claim(
            scope,
            key,
            request_fingerprint,
            now=now,
            expires_at=now + self.ttl,
            lock_timeout=self.lock_timeout,
        )
        match claim.outcome:
            case ClaimOutcome.REPLAY:
                assert claim.response is not None
                self.telemetry.count("payment_idempotent_hit_total")
                log.info("idempotency.replayed", idempotency_key=key)
                return claim.response
            case ClaimOutcome.REUSED:
                return on_reused()
            case ClaimOutcome.IN_USE:
                return on_in_use()
            case ClaimOutcome.RESUMED:
                log.warning("idempotency.resumed", idempotency_key=key)
        try:
            response = await work(claim.outcome is ClaimOutcome.RESUMED)
        except BaseException:
            # An unexpected failure (a bug, the database gone): nothing is stored, so the
            # client's retry with the same key runs again and resumes the work.
            await self._release(scope, key)
            raise
        if response.status_code in NOT_STORED or not response.storable:
            await self.store.release(scope, key)
            return response
        try:
            await self.store.complete(scope, key, response)
        except BaseException:
            # The work is committed but its answer could not be stored (the connection was
            # lost): free the key, so the retry runs now and finds the committed work, instead
            # of waiting out the lock timeout.
            await self._release(scope, key)
            raise
        return response

    async def _release(self, scope: str, key: str) -> None:
        """Best effort: if the database is gone, the key is taken over after `lock_timeout`."""
        try:
            await self.store.release(scope, key)
        except Exception as exc:
            log.warning("idempotency.release_failed", error=type(exc).__name__)
