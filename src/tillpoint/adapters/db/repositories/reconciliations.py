"""Reconciliation runs (`POST /payments/reconcile`): when each started and what it found."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t


class SqlReconciliations:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def start(self, run_id: str, now: datetime) -> None:
        await self.conn.execute(
            t.reconciliation_runs.insert().values(run_id=run_id, status="RUNNING", started_at=now)
        )

    async def finish(
        self, run_id: str, now: datetime, *, status: str, checked: int, resolved: int
    ) -> None:
        runs = t.reconciliation_runs
        await self.conn.execute(
            runs.update()
            .where(runs.c.run_id == run_id)
            .values(status=status, checked=checked, resolved=resolved, finished_at=now)
        )
