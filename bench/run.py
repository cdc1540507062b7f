"""`python -m bench`: the orchestrator. It starts the servers as their own processes, drives
the load from this one, measures the ceilings in the same run, prints the table and writes
docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy.engine import make_url

from bench import broker, profile, report, scenarios
from bench.load import Op, drive, expect, http_step
from bench.procs import BIN, ROOT, MemorySampler, Server, clean_env
from bench.sql import pgbench_script
from bench.stats import Goal, Result, flatness, link

CONCURRENCIES = (1, 16, 64)
EXCHANGE = "bench.payments.events"
SERVICE_KEY = "bench-service-key-" + secrets.token_hex(8)
ADMIN_KEY = "bench-admin-key-" + secrets.token_hex(8)


@dataclass
class Config:
    quick: bool
    seconds: float
    warmup: int
    soak: float
    database_url: str
    broker_url: str
    port: int
    output: Path | None
    command: str
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="tillpoint-bench-")))

    @property
    def dsn(self) -> str:
        """The same database for asyncpg/pgbench: `postgresql://…` without the driver."""
        return (
            make_url(self.database_url)
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )

    @property
    def db_name(self) -> str:
        name = make_url(self.database_url).database
        assert name, "the database URL names no database"
        return name


class Bench:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.rows: dict[str, Result] = {}
        self.run_id = secrets.token_hex(3)
        self.secret = scenarios.webhook_secret()
        self.notes: list[str] = []
        self.profile: profile.Profile | None = None
        self.profile_info: dict[str, float] = {}
        self.soak_info: list[str] = []
        self.port = config.port
        self.loadavg_start = os.getloadavg()

    # -- plumbing ------------------------------------------------------------------------------

    def next_port(self) -> int:
        self.port += 1
        return self.port - 1

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def add(self, result: Result) -> Result:
        self.rows[result.key] = result
        rate = result.rate
        shown = f"{rate:,.0f} {result.unit}" if rate is not None else f"skipped: {result.skipped}"
        p99 = result.p99_ms
        extra = f", p99 {p99:.1f} ms" if p99 is not None else ""
        self.log(f"  {result.key}: {shown}{extra}, errors {result.errors} {result.note}".rstrip())
        return result

    def skip(self, name: str, reason: str, concurrency: int | None = None) -> None:
        self.add(Result(name, concurrency, skipped=reason))

    def app_env(self, broker: bool = True) -> dict[str, str]:
        env = {
            "TILLPOINT_DATABASE_URL": self.config.database_url,
            "TILLPOINT_API_KEYS": json.dumps(
                [{"key": SERVICE_KEY, "role": "service"}, {"key": ADMIN_KEY, "role": "admin"}]
            ),
            "TILLPOINT_LOG_LEVEL": "WARNING",
            "TILLPOINT_EVENTS_EXCHANGE": EXCHANGE,
            "TILLPOINT_MOCK_WEBHOOK_SECRET": self.secret,
            "TILLPOINT_STATE_DIR": str(self.config.work / "state"),
        }
        if broker and self.config.broker_url:
            env["TILLPOINT_BROKER_URL"] = self.config.broker_url
        return clean_env(env)

    def api_server(self) -> Server:
        port = self.next_port()
        argv = [str(BIN / "tillpoint"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        return Server(
            "api",
            [*argv, "--workers", "2"],
            self.app_env(),
            port=port,
            log_path=self.config.work / f"api-{port}.log",
        )

    def worker_server(self) -> Server:
        return Server(
            "worker",
            [str(BIN / "tillpoint"), "worker"],
            self.app_env(),
            log_path=self.config.work / "worker.log",
        )

    def steps(self) -> tuple[int, ...]:
        return CONCURRENCIES

    def pool(self, rate_cap: float) -> int:
        return int(self.config.seconds * rate_cap) + self.config.warmup

    # -- database ------------------------------------------------------------------------------

    async def recreate_database(self) -> None:
        admin_dsn = make_url(self.config.dsn).set(database="postgres").render_as_string(False)
        conn = await asyncpg.connect(admin_dsn)
        try:
            name = self.config.db_name.replace('"', "")
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
            self.pg_version = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        subprocess.run(
            [str(BIN / "tillpoint"), "migrate"],
            env=self.app_env(),
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )

    async def sql(self, query: str, *args: object) -> object:
        conn = await asyncpg.connect(self.config.dsn)
        try:
            return await conn.fetchval(query, *args)
        finally:
            await conn.close()

    # -- ceilings -------------------------------------------------------------------------------

    async def pgbench(self) -> None:
        self.log("ceiling: pgbench of the create transaction")
        binary = "pgbench"
        for candidate in ("/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench"):
            if Path(candidate).exists():
                binary = candidate
                break
        per_step = int(self.config.seconds * 6000)
        await scenarios.seed_pg_orders(self.config.dsn, "pgb-", per_step * len(self.steps()))
        await self.sql("CREATE SEQUENCE IF NOT EXISTS bench_order_seq")
        script = self.config.work / "create.sql"
        script.write_text(pgbench_script("pgb-"))
        url = make_url(self.config.dsn)
        for c in self.steps():
            logdir = self.config.work / f"pgbench-{c}"
            logdir.mkdir(exist_ok=True)
            argv = [
                binary,
                "-n",
                "-h",
                url.host or "127.0.0.1",
                "-p",
                str(url.port or 5432),
                "-U",
                url.username or "postgres",
                "-c",
                str(c),
                "-j",
                str(min(c, 2)),
                "-T",
                str(max(1, round(self.config.seconds))),
                "-f",
                str(script),
                "-l",
                f"--log-prefix={logdir}/tx",
                url.database or "",
            ]
            env = dict(os.environ)
            if url.password:
                env["PGPASSWORD"] = url.password
            started = time.perf_counter()
            done = await asyncio.to_thread(
                subprocess.run, argv, env=env, capture_output=True, text=True, timeout=120
            )
            elapsed = time.perf_counter() - started
            result = Result("pgbench create tx", c, unit="tx/s")
            latencies: list[float] = []
            for log_file in logdir.glob("tx*"):
                for line in log_file.read_text().splitlines():
                    parts = line.split()
                    if len(parts) >= 3 and parts[2].isdigit():
                        latencies.append(int(parts[2]) / 1e6)
            result.latencies = latencies
            result.ops = len(latencies)
            tps = [ln for ln in done.stdout.splitlines() if ln.startswith("tps = ")]
            failed = [ln for ln in done.stdout.splitlines() if "failed" in ln]
            if done.returncode != 0:
                result.errors = max(1, result.errors)
                result.note = (done.stderr or done.stdout).strip().splitlines()[-1][:200]
            if tps:
                result.rate_override = float(tps[0].split()[2])
                result.seconds = result.ops / result.rate_override if result.rate_override else 0
            else:
                result.seconds = elapsed
            for ln in failed:
                digits = [int(w) for w in ln.split() if w.isdigit()]
                if digits:
                    result.errors += digits[0]
            self.add(result)

    async def bare_asgi(self) -> None:
        self.log("ceiling: bare FastAPI endpoint, and FastAPI + raw asyncpg doing the create tx")
        for name, target, path, status, pool_prefix in (
            ("bare FastAPI", "bench.ceiling_app:plain_app", "/ping", 200, None),
            ("FastAPI + asyncpg", "bench.ceiling_app:asyncpg_app", "/payments", 201, "asg-"),
        ):
            port = self.next_port()
            env = clean_env({"BENCH_PG_DSN": self.config.dsn, "BENCH_PG_POOL": "16"})
            server = Server(
                name,
                [
                    str(BIN / "uvicorn"),
                    target,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env,
                port=port,
                log_path=self.config.work / f"ceiling-{port}.log",
            )
            server.start()
            try:
                await server.wait_ready("/docs")
                for c in self.steps():
                    count = self.pool(4000)
                    orders = (
                        await scenarios.seed_pg_orders(self.config.dsn, f"{pool_prefix}{c}-", count)
                        if pool_prefix
                        else [f"o{n}" for n in range(count)]
                    )

                    self.add(
                        await http_step(
                            name,
                            f"http://127.0.0.1:{port}",
                            _post_op(path, status, orders),
                            concurrency=c,
                            seconds=self.config.seconds,
                            max_ops=count,
                            servers=[server],
                            warmup=self.config.warmup,
                        )
                    )
            finally:
                server.stop()

    async def aio_pika(self) -> None:
        if not self.config.broker_url:
            for c in self.steps():
                self.skip("aio-pika publish", "RabbitMQ not reachable", c)
                self.skip("aio-pika consume", "RabbitMQ not reachable", c)
            return
        self.log("ceiling: aio-pika publish with confirms / consume with acks")
        try:
            for c in self.steps():
                publish, consume = await broker.publish_consume(
                    self.config.broker_url, c, self.config.seconds
                )
                self.add(publish)
                self.add(consume)
        finally:
            await broker.cleanup_ceiling(self.config.broker_url)

    # -- the service on PostgreSQL --------------------------------------------------------------

    async def http_scenarios(self, api: Server) -> None:
        base = f"http://127.0.0.1:{api.port}"
        seconds, warmup = self.config.seconds, self.config.warmup
        self.log("scenario: create (POST /payments, fresh key, pre-created orders)")
        for c in self.steps():
            count = self.pool(2000)
            orders = await scenarios.seed_pg_orders(self.config.dsn, f"cr{c}-", count)
            self.add(
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
        self.log("scenario: cycle (create + confirm, pm_card_visa, automatic capture)")
        for c in self.steps():
            count = self.pool(1000)
            orders = await scenarios.seed_pg_orders(self.config.dsn, f"cy{c}-", count)
            self.add(
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
        self.log("scenario: journey (order → quote → create → confirm → refund)")
        for c in self.steps():
            self.add(
                await http_step(
                    "journey",
                    base,
                    scenarios.journey_op(SERVICE_KEY, ADMIN_KEY, f"{self.run_id}{c}"),
                    concurrency=c,
                    seconds=seconds,
                    servers=[api],
                    warmup=warmup // 4,
                    unit="journeys/s",
                )
            )
        self.log("scenario: replay (the same key and body again)")
        orders = await scenarios.seed_pg_orders(self.config.dsn, "rp-", 64)
        stored = await scenarios.replay_setup(base, SERVICE_KEY, orders)
        for c in self.steps():
            self.add(
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

    async def profile_create(self, api: Server) -> None:
        """An extra create run at 16 connections under py-spy: not one of the table's rows, so
        the sampler's own cost never shows up in them."""
        seconds = max(4.0, self.config.seconds)
        self.log(f"profile: py-spy on the API workers during {seconds:.0f}s of create at c=16")
        count = int(seconds * 2000) + 50
        orders = await scenarios.seed_pg_orders(self.config.dsn, "pf-", count)
        output = self.config.work / "profile.txt"
        commits_before = await self.sql(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            self.config.db_name,
        )
        tuples_before = await self.sql(
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
            " WHERE datname = $1",
            self.config.db_name,
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
        commits_after = await self.sql(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
            self.config.db_name,
        )
        tuples_after = await self.sql(
            "SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database"
            " WHERE datname = $1",
            self.config.db_name,
        )
        requests = result.ops + result.errors
        self.profile_info = {
            "requests": requests,
            "rate": result.rate or 0.0,
            "seconds": seconds,
            "transactions_per_request": (int(commits_after) - int(commits_before))  # type: ignore[call-overload]
            / max(1, requests),
            "rows_written_per_request": (int(tuples_after) - int(tuples_before))  # type: ignore[call-overload]
            / max(1, requests),
        }
        if output.exists():
            self.profile = profile.parse(output.read_text())
            self.log(f"  {self.profile.samples} worker samples; {self.profile_info}")
        else:
            self.notes.append(f"py-spy produced no profile: {err.decode(errors='replace')[:300]}")
            self.log(f"  no profile: {err.decode(errors='replace')[:300]}")

    async def webhook_ingest(self, api: Server) -> bool:
        base = f"http://127.0.0.1:{api.port}"
        self.log("scenario: webhook ingest (signed Standard Webhooks, worker stopped)")
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            probe = await http.post("/api/v1/webhooks/mock", content=b"{}")
        if probe.status_code == 404:
            reason = "POST /api/v1/webhooks/mock answers 404 (the endpoint is not built yet)"
            for c in self.steps():
                self.skip("webhook ingest", reason, c)
            self.skip("webhook processed", reason)
            return False
        orders = await scenarios.seed_pg_orders(self.config.dsn, "wh-", 64)
        targets = await scenarios.processing_payments(base, SERVICE_KEY, orders)
        if not targets:
            reason = "pm_card_async left no PROCESSING payment with a provider id to target"
            for c in self.steps():
                self.skip("webhook ingest", reason, c)
            self.skip("webhook processed", reason)
            return False
        for c in self.steps():
            self.add(
                await http_step(
                    "webhook ingest",
                    base,
                    scenarios.webhook_op(self.secret, targets, f"{self.run_id}c{c}"),
                    concurrency=c,
                    seconds=self.config.seconds,
                    servers=[api],
                    warmup=self.config.warmup,
                    unit="webhooks/s",
                )
            )
        return True

    async def webhook_processed(self, worker: Server) -> None:
        """The worker's drain rate over the stored backlog, from the rows' own timestamps."""
        self.log("scenario: webhook processing by the worker (drain of the ingested backlog)")
        total = int(await self.sql("SELECT count(*) FROM webhook_events"))  # type: ignore[call-overload]
        last_done = -1
        stalled_since = time.monotonic()
        # Generous: the drain ends when everything is processed or progress stalls for 20 s.
        deadline = time.monotonic() + max(180.0, self.config.seconds * 30)
        with MemorySampler([worker]) as memory:
            while time.monotonic() < deadline:
                done = int(
                    await self.sql(  # type: ignore[call-overload]
                        "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
                    )
                )
                if done >= total:
                    break
                if done != last_done:
                    last_done, stalled_since = done, time.monotonic()
                elif time.monotonic() - stalled_since > 20:
                    break
                await asyncio.sleep(0.5)
        span = await self.sql(
            "SELECT extract(epoch FROM max(processed_at) - min(processed_at))"
            " FROM webhook_events WHERE processed_at IS NOT NULL"
        )
        done = int(
            await self.sql(  # type: ignore[call-overload]
                "SELECT count(*) FROM webhook_events WHERE processed_at IS NOT NULL"
            )
        )
        if done == 0:
            self.skip("webhook processed", "the worker processed no stored webhook in 20 s")
            return
        result = Result("webhook processed", None, ops=done, unit="webhooks/s")
        result.seconds = float(span or 0) or 1e-9  # type: ignore[arg-type]
        # Errors are events the worker gave up on or is retrying, not ones still queued.
        result.errors = int(
            await self.sql(  # type: ignore[call-overload]
                "SELECT count(*) FROM webhook_events WHERE status IN ('FAILED', 'DEAD')"
            )
        )
        result.rss_mb = memory.peak_per_process
        result.note = f"{done} of {total} stored webhooks, rate from processed_at"
        if done < total:
            result.note += f"; {total - done} still queued when the drain stopped"
        self.add(result)

    async def relay(self, worker: Server) -> None:
        """The worker starts with a backlog of outbox rows (from the scenarios above) and a
        `bench.` queue bound to everything; the rate is between the first and last arrival."""
        if not self.config.broker_url:
            self.skip("relay", "RabbitMQ not reachable")
            worker.start()
            return
        backlog = int(
            await self.sql(  # type: ignore[call-overload]
                "SELECT count(*) FROM outbox WHERE published_at IS NULL"
            )
        )
        self.log(f"scenario: relay of an outbox backlog of {backlog} rows to RabbitMQ")
        async with broker.Tap(
            self.config.broker_url, EXCHANGE, f"bench.relay.{self.run_id}", ["#"]
        ) as tap:
            worker.start()
            with MemorySampler([worker]) as memory:
                first_seen = await scenarios.wait_for(lambda: _true(bool(tap.arrivals)), 30)
                if first_seen:
                    stalled = time.monotonic()
                    seen = 0
                    while len(tap.arrivals) < backlog and time.monotonic() - stalled < 15:
                        if len(tap.arrivals) != seen:
                            seen, stalled = len(tap.arrivals), time.monotonic()
                        await asyncio.sleep(0.2)
        if not tap.arrivals:
            self.skip(
                "relay", "the worker relayed nothing to RabbitMQ in 30 s (relay not built yet?)"
            )
            return
        arrivals = [a[0] for a in tap.arrivals]
        result = Result("relay", None, ops=len(arrivals) - 1, unit="msg/s")
        result.seconds = max(arrivals) - min(arrivals) or 1e-9
        result.errors = max(0, backlog - len(arrivals))
        result.rss_mb = memory.peak_per_process
        result.note = f"{len(arrivals)} of {backlog} backlog rows received"
        self.add(result)

    async def saga(self, worker: Server) -> None:
        if not self.config.broker_url:
            for c in self.steps():
                self.skip("saga", "RabbitMQ not reachable", c)
            return
        await scenarios.wait_for(
            lambda: _count_zero(self, "SELECT count(*) FROM outbox WHERE published_at IS NULL"),
            60,
        )
        self.log("scenario: saga (order.stock-confirmed in → payment.succeeded out)")
        async with broker.Tap(
            self.config.broker_url,
            EXCHANGE,
            f"bench.saga.{self.run_id}",
            ["payment.succeeded", "payment.failed"],
        ) as tap:
            probe = broker.saga_op(tap, f"{self.run_id}probe", timeout=30)
            try:
                await probe(0)
            except Exception as exc:
                reason = (
                    "no payment.succeeded within 30 s of an order.stock-confirmed"
                    f" (consumer or relay not built yet?): {type(exc).__name__} {exc}"
                )
                for c in self.steps():
                    self.skip("saga", reason.strip(), c)
                return
            for c in self.steps():
                op = broker.saga_op(tap, f"{self.run_id}s{c}", timeout=15)
                result = Result("saga", c, unit="sagas/s")
                with MemorySampler([worker]) as memory:
                    await drive(op, concurrency=c, seconds=self.config.seconds, result=result)
                result.rss_mb = memory.peak_per_process
                self.add(result)

    async def soak(self, api: Server, worker: Server | None, seconds: float) -> None:
        self.log(f"memory: cycle at c=16 for {seconds:.0f}s, RSS of every server process")
        count = int(seconds * 1000) + 100
        orders = await scenarios.seed_pg_orders(self.config.dsn, "soak-", count)
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
            self.soak_info.append(
                f"pid {pid}: {kept[0]:.0f} MB after warm-up → {series[-1]:.0f} MB at the end,"
                f" peak {max(series):.0f} MB, largest deviation {100 * deviation:.1f}%"
            )
        result.rss_mb = memory.peak_per_process
        result.goal = "RSS per process flat (±10%)"
        result.met = worst <= 0.10 and result.errors == 0
        result.note = f"{seconds:.0f}s soak, worst per-process deviation {100 * worst:.1f}%"
        result.ratio = None
        self.add(result)

    # -- embedded --------------------------------------------------------------------------------

    async def embedded(self) -> None:
        self.log("scenario: embedded (make run's defaults: SQLite, in-process broker and workers)")
        home = self.config.work / "embedded"
        home.mkdir(exist_ok=True)
        port = self.next_port()
        server = Server(
            "embedded",
            [str(BIN / "tillpoint"), "serve", "--host", "127.0.0.1", "--port", str(port)],
            clean_env({}),
            port=port,
            cwd=home,
            log_path=self.config.work / "embedded.log",
        )
        server.start()
        try:
            await server.wait_ready()
            keys = json.loads((home / ".tillpoint" / "dev-keys.json").read_text())
            service = next(k["key"] for k in keys if k["role"] == "service")
            for c in self.steps():
                count = self.pool(600)
                orders = await asyncio.to_thread(
                    scenarios.seed_sqlite_orders, home / "tillpoint.db", f"em{c}-", count
                )
                self.add(
                    await http_step(
                        "embedded cycle",
                        f"http://127.0.0.1:{port}",
                        scenarios.cycle_op(service, orders),
                        concurrency=c,
                        seconds=self.config.seconds,
                        max_ops=count,
                        servers=[server],
                        warmup=self.config.warmup,
                        unit="orders/s",
                    )
                )
        finally:
            server.stop()

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        started = time.monotonic()
        self.log(f"work dir {self.config.work}; database {self.config.db_name}")
        await self.recreate_database()
        await self.pgbench()
        await self.bare_asgi()
        await self.aio_pika()
        api = self.api_server()
        worker = self.worker_server()
        api.start()
        try:
            await api.wait_ready()
            await self.http_scenarios(api)
            await self.profile_create(api)
            try:
                await self.relay(worker)  # starts the worker on the scenarios' outbox backlog
                if not worker.pids():
                    raise RuntimeError(f"the worker exited; {worker.tail()}")
                await scenarios.wait_for(
                    lambda: _count_zero(
                        self, "SELECT count(*) FROM outbox WHERE published_at IS NULL"
                    ),
                    60,
                )
                worker.stop()
                ingested = await self.webhook_ingest(api)
                worker.start()
                if ingested:
                    await self.webhook_processed(worker)
                await self.saga(worker)
                if self.config.soak:
                    await self.soak(api, worker, self.config.soak)
            finally:
                worker.stop()
        finally:
            api.stop()
        await self.embedded()
        if self.config.broker_url:
            await broker.delete_exchange(self.config.broker_url, EXCHANGE)
        self.link_rows()
        self.elapsed = time.monotonic() - started
        self.loadavg_end = os.getloadavg()

    def link_rows(self) -> None:
        rows = self.rows
        for c in self.steps():
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
                    Goal("≥ 250/s, p99 < 100 ms", 250, on="rate", max_p99_ms=100)
                    if c == 64
                    else None
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


def _post_op(path: str, status: int, orders: list[str]) -> Op:
    async def op(http: httpx.AsyncClient, i: int) -> None:
        expect(await http.post(path, json={"order_id": orders[i]}), status)

    return op


async def _true(value: bool) -> bool:
    return value


async def _count_zero(bench: Bench, query: str) -> bool:
    return int(await bench.sql(query)) == 0  # type: ignore[call-overload]


@contextlib.asynccontextmanager
async def scenarios_client(api: Server):  # type: ignore[no-untyped-def]
    from bench.load import client

    async with client(f"http://127.0.0.1:{api.port}", 16) as http:
        yield http


def reachable(url: str, default_port: int) -> bool:
    import socket

    parsed = make_url(url) if "://" in url else None
    host = (parsed.host if parsed else None) or "127.0.0.1"
    port = (parsed.port if parsed else None) or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def parse_args(argv: list[str] | None) -> Config:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="~2-minute smoke run (2 s steps)")
    parser.add_argument("--seconds", type=float, help="timed seconds per scenario step")
    parser.add_argument(
        "--soak",
        type=float,
        default=None,
        help="seconds of the memory-flatness run (default: 60 in a full run, 0 with --quick;"
        " 300 is the issue's 5 minutes)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/tillpoint_bench"
        ),
        help="a database the bench may drop and recreate (env BENCH_DATABASE_URL)",
    )
    parser.add_argument(
        "--broker-url",
        default=os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("BENCH_PORT", "8601")),
        help="first of the loopback ports the bench's servers use",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="report file (default: docs/performance.md; none with --quick)",
    )
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    soak = args.soak if args.soak is not None else (0.0 if args.quick else 60.0)
    output = args.output or (None if args.quick else ROOT / "docs" / "performance.md")
    broker_url = args.broker_url if reachable(args.broker_url, 5672) else ""
    shown = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    return Config(
        quick=args.quick,
        seconds=seconds,
        warmup=50 if args.quick else 200,
        soak=soak,
        database_url=args.database_url,
        broker_url=broker_url,
        port=args.port,
        output=output,
        command=("make bench" if not shown else f".venv/bin/python -m bench {shown}"),
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if not reachable(config.database_url, 5432):
        print(f"PostgreSQL is not reachable at {config.database_url}", file=sys.stderr)
        return 2
    bench = Bench(config)
    try:
        asyncio.run(bench.run())
    except KeyboardInterrupt:
        return 130
    table = report.table(bench.rows.values())
    print()
    print(table)
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        config.output.write_text(report.document(bench, table, machine()))
        print(f"\nwrote {config.output}")
    return 0


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{kb / 1024 / 1024:.1f} GiB"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
