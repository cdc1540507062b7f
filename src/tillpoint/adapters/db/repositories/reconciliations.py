"""Reconciliation runs and their discrepancies (`service/reconciliation.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from tillpoint.adapters.db import tables as t
from tillpoint.domain.reconciliation import Action, Discrepancy, Kind, Run, RunStatus
from tillpoint.service.ports.storage import DiscrepancyFilter

runs = t.reconciliation_runs
found = t.reconciliation_discrepancies


def _run(row: Any) -> Run:
    return Run(
        run_id=row.run_id,
        status=RunStatus(row.status),
        provider=row.provider,
        window_from=row.window_from or row.started_at,
        window_to=row.window_to or row.started_at,
        started_at=row.started_at,
        heartbeat_at=row.heartbeat_at or row.started_at,
        checked=row.checked,
        healed=row.healed,
        flagged=row.flagged,
        resolved=row.resolved,
        finished_at=row.finished_at,
        error=row.error,
        slot=row.slot,
    )


def _run_values(run: Run) -> dict[str, Any]:
    return {
        "status": run.status.value,
        "provider": run.provider,
        "window_from": run.window_from,
        "window_to": run.window_to,
        "started_at": run.started_at,
        "heartbeat_at": run.heartbeat_at,
        "checked": run.checked,
        "healed": run.healed,
        "flagged": run.flagged,
        "resolved": run.resolved,
        "finished_at": run.finished_at,
        "error": run.error,
        "slot": run.slot,
    }


def _discrepancy(row: Any) -> Discrepancy:
    return Discrepancy(
        id=row.id,
        run_id=row.run_id,
        provider=row.provider,
        kind=Kind(row.kind),
        action=Action(row.action),
        fingerprint=row.fingerprint,
        detail=row.detail,
        created_at=row.created_at,
        payment_id=row.payment_id,
        provider_payment_id=row.provider_payment_id,
        ours=dict(row.ours),
        theirs=dict(row.theirs),
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
    )


class SqlReconciliations:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    def _insert(self, table: sa.Table, unique: str) -> Any:
        """INSERT … ON CONFLICT (unique) DO NOTHING, in the connection's dialect."""
        dialect: Any = postgresql if self.conn.dialect.name == "postgresql" else sqlite
        return (
            dialect.insert(table)
            .on_conflict_do_nothing(index_elements=[unique])
            .returning(table.c[unique])
        )

    async def add(self, run: Run) -> bool:
        stmt = self._insert(runs, "slot").values(run_id=run.run_id, **_run_values(run))
        # False: the slot's run was started by another worker.
        return (await self.conn.execute(stmt)).first() is not None

    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None:
        stmt = sa.select(runs).where(runs.c.run_id == run_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _run(row) if row else None

    async def save(self, run: Run) -> None:
        await self.conn.execute(
            runs.update().where(runs.c.run_id == run.run_id).values(**_run_values(run))
        )

    async def page(self, limit: int, cursor: str | None) -> tuple[list[Run], str | None]:
        stmt = sa.select(runs)
        if cursor:
            stmt = stmt.where(runs.c.run_id < cursor)
        stmt = stmt.order_by(runs.c.run_id.desc()).limit(limit + 1)
        rows = [_run(r) for r in await self.conn.execute(stmt)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].run_id
        return rows, None

    async def running(self) -> list[Run]:
        stmt = sa.select(runs).where(runs.c.status == RunStatus.RUNNING.value)
        return [_run(r) for r in await self.conn.execute(stmt.order_by(runs.c.run_id))]

    async def last_finished_at(self) -> datetime | None:
        stmt = sa.select(sa.func.max(runs.c.finished_at)).where(
            runs.c.status == RunStatus.FINISHED.value
        )
        value: datetime | None = (await self.conn.execute(stmt)).scalar_one()
        return value

    async def add_discrepancy(self, d: Discrepancy) -> bool:
        values = {
            "id": d.id,
            "run_id": d.run_id,
            "provider": d.provider,
            "kind": d.kind.value,
            "action": d.action.value,
            "fingerprint": d.fingerprint,
            "payment_id": d.payment_id,
            "provider_payment_id": d.provider_payment_id,
            "ours": d.ours,
            "theirs": d.theirs,
            "detail": d.detail,
            "created_at": d.created_at,
        }
        stmt = self._insert(found, "fingerprint").values(**values)
        # False: an earlier run found it.
        return (await self.conn.execute(stmt)).first() is not None

    async def discrepancy(
        self, discrepancy_id: str, *, for_update: bool = False
    ) -> Discrepancy | None:
        stmt = sa.select(found).where(found.c.id == discrepancy_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = (await self.conn.execute(stmt)).first()
        return _discrepancy(row) if row else None

    async def save_discrepancy(self, d: Discrepancy) -> None:
        await self.conn.execute(
            found.update()
            .where(found.c.id == d.id)
            .values(
                resolved_at=d.resolved_at,
                resolved_by=d.resolved_by,
                resolution_note=d.resolution_note,
            )
        )

    async def discrepancies(
        self, run_id: str, filters: DiscrepancyFilter, limit: int, cursor: str | None
    ) -> tuple[list[Discrepancy], str | None]:
        conditions = [found.c.run_id == run_id]
        if filters.kind:
            conditions.append(found.c.kind == filters.kind)
        if filters.action:
            conditions.append(found.c.action == filters.action)
        if cursor:
            conditions.append(found.c.id > cursor)
        stmt = sa.select(found).where(*conditions).order_by(found.c.id).limit(limit + 1)
        rows = [_discrepancy(r) for r in await self.conn.execute(stmt)]
        if len(rows) > limit:
            return rows[:limit], rows[limit - 1].id
        return rows, None
