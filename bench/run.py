"""`python -m bench`: the orchestrator. It starts the servers as their own processes, drives
the load from this one, measures the ceilings in the same run (`ceilings.py`), then the
service's scenarios (`http_runs.py`, `worker_runs.py`), and links every row to the ceiling its
ratio is taken against. `cli.py` reads the command line, prints the table and writes
docs/performance.md (`report.py`)."""

from __future__ import annotations

import os
import time

from bench import broker, ceilings, exports, http_runs, scenarios, worker_runs
from bench.context import CONSUMED_QUEUES, EXCHANGE, OUTBOX_BACKLOG, Bench
from bench.stats import Goal, link


async def run(bench: Bench) -> None:
    started = time.monotonic()
    bench.log(f"work dir {bench.config.work}; database {bench.config.db_name}")
    await bench.recreate_database()
    if bench.config.only == "export":
        await exports.export_memory(bench)
        bench.elapsed = time.monotonic() - started
        bench.loadavg_end = os.getloadavg()
        return
    await ceilings.pgbench(bench)
    await ceilings.bare_asgi(bench)
    await ceilings.aio_pika(bench)
    api = bench.api_server()
    worker = bench.worker_server()
    api.start()
    try:
        await api.wait_ready()
        await http_runs.http_scenarios(bench, api)
        await http_runs.profile_create(bench, api)
        try:
            # starts the worker on the scenarios' outbox backlog
            await worker_runs.relay(bench, worker)
            if not worker.pids():
                raise RuntimeError(f"the worker exited; {worker.tail()}")
            await scenarios.wait_for(lambda: bench.count_is_zero(OUTBOX_BACKLOG), 60)
            worker.stop()
            ingested = await http_runs.webhook_ingest(bench, api)
            worker.start()
            if ingested:
                await worker_runs.webhook_processed(bench, worker)
            await worker_runs.saga(bench, worker)
            if bench.config.soak:
                await http_runs.soak(bench, api, worker, bench.config.soak)
        finally:
            worker.stop()
    finally:
        api.stop()
    await http_runs.embedded(bench)
    await exports.export_memory(bench)
    if bench.config.broker_url:
        await broker.delete_exchange(bench.config.broker_url, EXCHANGE, CONSUMED_QUEUES)
    link_rows(bench)
    bench.elapsed = time.monotonic() - started
    bench.loadavg_end = os.getloadavg()


def link_rows(bench: Bench) -> None:
    rows = bench.rows
    for c in bench.steps():
        for name in ("FastAPI + asyncpg",):
            if f"{name}@{c}" in rows:
                link(rows, rows[f"{name}@{c}"], f"pgbench create tx@{c}")
        if f"create@{c}" in rows:
            link(
                rows,
                rows[f"create@{c}"],
                f"pgbench create tx@{c}",
                Goal("≥ 45% of pgbench", 0.45),
            )
        if f"cycle@{c}" in rows:
            goal = (
                Goal("≥ 250/s, p99 < 100 ms", 250, on="rate", max_p99_ms=100) if c == 64 else None
            )
            link(rows, rows[f"cycle@{c}"], f"pgbench create tx@{c}", goal)
        if f"journey@{c}" in rows:
            link(rows, rows[f"journey@{c}"], f"pgbench create tx@{c}")
        if f"replay@{c}" in rows:
            link(rows, rows[f"replay@{c}"], f"create@{c}", Goal("≥ 2x create", 2.0))
        if f"webhook ingest@{c}" in rows:
            link(rows, rows[f"webhook ingest@{c}"], f"FastAPI + asyncpg@{c}")
        if f"saga@{c}" in rows:
            link(rows, rows[f"saga@{c}"], f"cycle@{c}", Goal("≥ 50% of cycle", 0.5))
        if f"embedded cycle@{c}" in rows:
            link(rows, rows[f"embedded cycle@{c}"], f"cycle@{c}", Goal("≥ 50% of cycle", 0.5))
        if f"aio-pika consume@{c}" in rows:
            link(rows, rows[f"aio-pika consume@{c}"], f"aio-pika publish@{c}")
    if "webhook processed" in rows:
        link(rows, rows["webhook processed"], "pgbench create tx@1")
    if "relay" in rows:
        publishes = [r for r in rows.values() if r.name == "aio-pika publish" and r.rate]
        best = max(publishes, key=lambda r: r.rate or 0, default=None)
        link(
            rows,
            rows["relay"],
            best.key if best else "aio-pika publish@64",
            Goal("≥ 80% of confirmed publish", 0.8),
        )
