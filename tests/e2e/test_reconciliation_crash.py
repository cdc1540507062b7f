"""A reconciliation run killed mid-pass (SIGKILL of the process running it) is marked FAILED by
another worker once its heartbeat stops, never left RUNNING; a new run over the same window
then finishes and finds nothing the healthy payments did not already agree on.

The run is made slow on purpose (the mock answers each lookup after `TILLPOINT_MOCK_DELAY_MS`),
so the process can be killed while the run is between two payments.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN_KEY, headers, new_key
from tests.support import flows
from tests.support.server import start_server
from tillpoint.adapters.db import tables as t

PAYMENTS = 12
DEADLINE = 120.0


async def run_row(db: AsyncEngine, run_id: str) -> Any:
    async with db.connect() as conn:
        runs = t.reconciliation_runs
        return (await conn.execute(sa.select(runs).where(runs.c.run_id == run_id))).one()


async def until(db: AsyncEngine, run_id: str, done: Any, what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        row = await run_row(db, run_id)
        if done(row):
            return row
        assert time.monotonic() < deadline, f"{what}: the run is {row.status} ({row.checked})"
        await asyncio.sleep(0.1)


async def test_a_run_killed_mid_pass_is_marked_failed_by_another_worker(
    e2e_database_url: str, e2e_workdir: Path, db: AsyncEngine
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    victim = start_server(e2e_database_url, e2e_workdir, mock_delay_ms="400")
    try:
        async with httpx.AsyncClient(base_url=victim.base_url, timeout=30) as http:
            for _ in range(PAYMENTS):
                await flows.new_payment(http)
            window = {"created_from": since.isoformat().replace("+00:00", "Z")}
            started = await http.post(
                "/api/v1/payments/reconcile", json=window, headers=headers(ADMIN_KEY, new_key())
            )
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        await until(db, run_id, lambda r: r.checked >= 1, "the pass never began")
        victim.kill_now()  # SIGKILL, mid-pass
    finally:
        victim.kill()

    killed = await run_row(db, run_id)
    assert killed.status == "RUNNING"
    assert killed.checked < PAYMENTS

    survivor = start_server(
        e2e_database_url,
        e2e_workdir,
        run_workers_in_api="true",
        reconcile_stale_after="2s",
        janitor_interval="200ms",
    )
    try:
        failed = await until(db, run_id, lambda r: r.status != "RUNNING", "nobody took it up")
        assert failed.status == "FAILED"
        assert failed.error.startswith("abandoned")
        assert failed.finished_at is not None

        async with httpx.AsyncClient(base_url=survivor.base_url, timeout=60) as http:
            again = await http.post(
                "/api/v1/payments/reconcile", json=window, headers=headers(ADMIN_KEY, new_key())
            )
            assert again.status_code == 202, again.text
            rerun = await until(
                db, again.json()["run_id"], lambda r: r.status != "RUNNING", "the re-run"
            )
    finally:
        survivor.kill()

    assert rerun.status == "FINISHED"
    assert rerun.checked >= PAYMENTS
    assert rerun.flagged == 0
    assert rerun.healed == 0
