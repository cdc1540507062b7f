"""The service's HTTP scenarios on PostgreSQL (create, cycle, journey, replay, webhook ingest),
the profiled create run, the memory soak, and the embedded defaults (SQLite, in-process broker
and workers) measured the same way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator

import httpx

from bench import profile, scenarios
from bench.context import ADMIN_KEY, SERVICE_KEY, Bench
from bench.load import FastClient, client, drive, http_step
from bench.procs import BIN, MemorySampler, Server, clean_env
from bench.stats import Result, flatness


async def http_scenarios(bench: Bench, api: Server) -> None:
    base = f"http://127.0.0.1:{api.port}"
    seconds, warmup = bench.config.seconds, bench.config.warmup
    bench.log("scenario: create (POST /payments, fresh key, pre-created orders)")
    for c in bench.steps():
        count = bench.pool(2000)
        orders = await scenarios.seed_pg_orders(bench.config.dsn, f"cr{c}-", count)
        bench.add(
            await http_step(
                "create",
                base,
                scenarios.create_op(SERVICE_KEY, orders),
                concurrency=c,
                seconds=seconds,
                max_ops=count,
                servers=[api],
                warmup=warmup,
                unit="payments/s",
            )
        )
    bench.log("scenario: cycle (create + confirm, pm_card_visa, automatic capture)")
    for c in bench.steps():
        count = bench.pool(1000)
        orders = await scenarios.seed_pg_orders(bench.config.dsn, f"cy{c}-", count)
        bench.add(
            await http_step(
                "cycle",
                base,
                scenarios.cycle_op(SERVICE_KEY, orders),
                concurrency=c,
                seconds=seconds,
                max_ops=count,
                servers=[api],
                warmup=warmup,
                unit="orders/s",
            )
        )
    bench.log("scenario: journey (order → quote → create → confirm → refund)")
    for c in bench.steps():
        bench.add(
            await http_step(
                "journey",
                base,
                scenarios.journey_op(SERVICE_KEY, ADMIN_KEY, f"{bench.run_id}{c}"),
                concurrency=c,
                seconds=seconds,
                servers=[api],
                warmup=warmup // 4,
                unit="journeys/s",
            )
        )
    bench.log("scenario: replay (the same key and body again)")
    orders = await scenarios.seed_pg_orders(bench.config.dsn, "rp-", 64)
    stored = await scenarios.replay_setup(base, SERVICE_KEY, orders)
    for c in bench.steps():
        bench.add(
            await http_step(
                "replay",
                base,
                scenarios.replay_op(SERVICE_KEY, stored),
                concurrency=c,
                seconds=seconds,
                servers=[api],
                warmup=warmup,
                unit="replays/s",
            )
        )


async def profile_create(bench: Bench, api: Server) -> None:
    """An extra create run at 16 connections under py-spy: not one of the table's rows, so
    the sampler's own cost never shows up in them."""
    seconds = max(4.0, bench.config.seconds)
    bench.log(f"profile: py-spy on the API workers during {seconds:.0f}s of create at c=16")
    count = int(seconds * 2000) + 50
    orders = await scenarios.seed_pg_orders(bench.config.dsn, "pf-", count)
    output = bench.config.work / "profile.txt"
    commits_before = await bench.sql(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        bench.config.db_name,
    )
    tuples_before = await bench.sql(
        "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = $1",
        bench.config.db_name,
    )
    spy = profile.start(api.pid, seconds, output)
    await asyncio.sleep(0.5)
    result = await http_step(
        "create (profiled)",
        f"http://127.0.0.1:{api.port}",
        scenarios.create_op(SERVICE_KEY, orders),
        concurrency=16,
        seconds=seconds,
        max_ops=count,
        servers=[api],
    )
    try:
        _, err = await asyncio.to_thread(spy.communicate, timeout=60)
    except subprocess.TimeoutExpired:
        spy.kill()
        err = b"py-spy did not finish"
    await asyncio.sleep(1.5)  # PostgreSQL flushes its statistics at most once a second
    commits_after = await bench.sql(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        bench.config.db_name,
    )
    tuples_after = await bench.sql(
        "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database WHERE datname = $1",
        bench.config.db_name,
    )
    requests = result.ops + result.errors
    bench.profile_info = {
        "requests": requests,
        "rate": result.rate or 0.0,
        "seconds": seconds,
        "transactions_per_request": (int(commits_after) - int(commits_before))  # type: ignore[call-overload]
        / max(1, requests),
        "rows_written_per_request": (int(tuples_after) - int(tuples_before))  # type: ignore[call-overload]
        / max(1, requests),
    }
    if output.exists():
        bench.profile = profile.parse(output.read_text())
        bench.log(f"  {bench.profile.samples} worker samples; {bench.profile_info}")
    else:
        bench.notes.append(f"py-spy produced no profile: {err.decode(errors='replace')[:300]}")
        bench.log(f"  no profile: {err.decode(errors='replace')[:300]}")


async def webhook_ingest(bench: Bench, api: Server) -> bool:
    base = f"http://127.0.0.1:{api.port}"
    bench.log("scenario: webhook ingest (signed Standard Webhooks, worker stopped)")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        probe = await http.post("/api/v1/webhooks/mock", content=b"{}")
    if probe.status_code == 404:
        reason = "POST /api/v1/webhooks/mock answers 404 (the endpoint is not built yet)"
        for c in bench.steps():
            bench.skip("webhook ingest", reason, c)
        bench.skip("webhook processed", reason)
        return False
    orders = await scenarios.seed_pg_orders(bench.config.dsn, "wh-", 64)
    targets = await scenarios.processing_payments(base, SERVICE_KEY, orders)
    if not targets:
        reason = "pm_card_async left no PROCESSING payment with a provider id to target"
        for c in bench.steps():
            bench.skip("webhook ingest", reason, c)
        bench.skip("webhook processed", reason)
        return False
    for c in bench.steps():
        bench.add(
            await http_step(
                "webhook ingest",
                base,
                scenarios.webhook_op(bench.secret, targets, f"{bench.run_id}c{c}"),
                concurrency=c,
                seconds=bench.config.seconds,
                servers=[api],
                warmup=bench.config.warmup,
                unit="webhooks/s",
            )
        )
    return True


async def soak(bench: Bench, api: Server, worker: Server | None, seconds: float) -> None:
    bench.log(f"memory: cycle at c=16 for {seconds:.0f}s, RSS of every server process")
    count = int(seconds * 1000) + 100
    orders = await scenarios.seed_pg_orders(bench.config.dsn, "soak-", count)
    servers = [api] + ([worker] if worker else [])
    result = Result("memory soak (cycle)", 16, unit="orders/s")
    async with scenarios_client(api) as http:
        op = scenarios.cycle_op(SERVICE_KEY, orders)
        with MemorySampler(servers, interval=1.0) as memory:
            await drive(
                lambda i: op(http, i),
                concurrency=16,
                seconds=seconds,
                max_ops=count,
                result=result,
            )
    worst = 0.0
    for pid, series in memory.series.items():
        if len(series) < 5 or max(series) < 20:  # skip tiny helper processes
            continue
        deviation = flatness(series)
        if deviation is None:
            continue
        worst = max(worst, deviation)
        kept = series[int(len(series) * 0.2) :]
        bench.soak_info.append(
            f"pid {pid}: {kept[0]:.0f} MB after warm-up → {series[-1]:.0f} MB at the end,"
            f" peak {max(series):.0f} MB, largest deviation {100 * deviation:.1f}%"
        )
    result.rss_mb = memory.peak_per_process
    result.goal = "RSS per process flat (±10%)"
    result.met = worst <= 0.10 and result.errors == 0
    result.note = f"{seconds:.0f}s soak, worst per-process deviation {100 * worst:.1f}%"
    result.ratio = None
    bench.add(result)


async def embedded(bench: Bench) -> None:
    bench.log("scenario: embedded (make run's defaults: SQLite, in-process broker and workers)")
    home = bench.config.work / "embedded"
    home.mkdir(exist_ok=True)
    port = bench.next_port()
    server = Server(
        "embedded",
        [str(BIN / "tillpoint"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        clean_env({}),
        port=port,
        cwd=home,
        log_path=bench.config.work / "embedded.log",
    )
    server.start()
    try:
        await server.wait_ready()
        keys = json.loads((home / ".tillpoint" / "dev-keys.json").read_text())
        service = next(k["key"] for k in keys if k["role"] == "service")
        for c in bench.steps():
            count = bench.pool(600)
            orders = await asyncio.to_thread(
                scenarios.seed_sqlite_orders, home / "tillpoint.db", f"em{c}-", count
            )
            bench.add(
                await http_step(
                    "embedded cycle",
                    f"http://127.0.0.1:{port}",
                    scenarios.cycle_op(service, orders),
                    concurrency=c,
                    seconds=bench.config.seconds,
                    max_ops=count,
                    servers=[server],
                    warmup=bench.config.warmup,
                    unit="orders/s",
                )
            )
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def scenarios_client(api: Server) -> AsyncIterator[FastClient]:
    """The load generator's keep-alive client on `api`, for a run driven outside `http_step`."""
    async with client(f"http://127.0.0.1:{api.port}", 16) as http:
        yield http
