"""The SQL idempotency store on its own: what each claim on (scope, key) answers as the key
goes from running to finished to expired. The HTTP view of the same rules is
tests/correctness/test_idempotency.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.idempotency import SqlIdempotencyStore
from tillpoint.service.ports import Claim, ClaimOutcome, StoredResponse

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TTL = timedelta(hours=24)
LOCK = timedelta(seconds=30)
ANSWER = StoredResponse(201, b'{"ok":true}', {"content-type": "application/json"})


async def claim(
    store: SqlIdempotencyStore,
    fingerprint: str = "fp-1",
    *,
    now: datetime = NOW,
    scope: str = "service:1",
    key: str = "idem-1",
) -> Claim:
    return await store.claim(
        scope, key, fingerprint, now=now, expires_at=now + TTL, lock_timeout=LOCK
    )


async def keys(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    k = t.idempotency_keys.c
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(k.scope, k.key, k.status).order_by(k.id))
        return [tuple(r) for r in rows]


async def test_the_first_claim_starts_the_request(engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)

    assert await claim(store) == Claim(ClaimOutcome.STARTED)
    assert await keys(engine) == [("service:1", "idem-1", "IN_PROGRESS")]


async def test_a_running_key_is_in_use_until_its_lock_times_out_then_resumed(
    engine: AsyncEngine,
) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store)

    assert (await claim(store, now=NOW + LOCK - timedelta(seconds=1))).outcome == "in_use"
    assert (await claim(store, now=NOW + LOCK + timedelta(seconds=1))).outcome == "resumed"
    # resuming takes the lock anew: the next repeat waits again
    assert (await claim(store, now=NOW + LOCK + timedelta(seconds=2))).outcome == "in_use"


async def test_a_finished_key_replays_its_stored_answer(engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store)
    await store.complete("service:1", "idem-1", ANSWER)

    replay = await claim(store, now=NOW + timedelta(hours=23))

    assert replay.outcome == ClaimOutcome.REPLAY
    assert replay.response == StoredResponse(
        ANSWER.status_code, ANSWER.body, dict(ANSWER.headers), replayed=True
    )
    assert await keys(engine) == [("service:1", "idem-1", "COMPLETED")]


async def test_another_request_under_the_key_is_refused_running_or_finished(
    engine: AsyncEngine,
) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store)

    assert await claim(store, "fp-2") == Claim(ClaimOutcome.REUSED)
    await store.complete("service:1", "idem-1", ANSWER)
    assert await claim(store, "fp-2") == Claim(ClaimOutcome.REUSED)


async def test_a_released_key_starts_again_and_a_finished_one_is_not_released(
    engine: AsyncEngine,
) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store)
    await store.release("service:1", "idem-1")

    assert await keys(engine) == []
    assert (await claim(store, "fp-2")).outcome == ClaimOutcome.STARTED
    await store.complete("service:1", "idem-1", ANSWER)
    await store.release("service:1", "idem-1")
    assert (await claim(store, "fp-2")).outcome == ClaimOutcome.REPLAY


async def test_an_expired_key_not_reaped_yet_starts_afresh(engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store)
    await store.complete("service:1", "idem-1", ANSWER)

    again = await claim(store, "fp-2", now=NOW + TTL)

    assert again == Claim(ClaimOutcome.STARTED)
    assert await keys(engine) == [("service:1", "idem-1", "IN_PROGRESS")]


async def test_keys_are_scoped(engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store, scope="service:1")

    assert (await claim(store, scope="service:2")).outcome == ClaimOutcome.STARTED
    assert (await claim(store, scope="service:1")).outcome == ClaimOutcome.IN_USE


async def test_reap_deletes_only_the_expired_keys(engine: AsyncEngine) -> None:
    store = SqlIdempotencyStore(engine)
    await claim(store, key="old")
    await claim(store, key="new", now=NOW + timedelta(hours=1))

    assert await store.reap(NOW + TTL) == 1
    assert await keys(engine) == [("service:1", "new", "IN_PROGRESS")]
    assert await store.reap(NOW + TTL) == 0
