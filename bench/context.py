"""What every step of a bench run shares: the run's settings (`Config`, from the command line),
the keys and exchange its servers use, and `Bench`, the run itself: the rows measured so far,
how a server process is started, and the bench database."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench import profile, scenarios
from bench.exports import ExportRun
from bench.procs import BIN, ROOT, Server, clean_env
from bench.stats import Result

CONCURRENCIES = (1, 16, 64)
# Unique per run: two benches (or a bench and a test run) on one broker never share a name.
RUN = secrets.token_hex(4)
EXCHANGE = f"bench.{RUN}.payments.events"
CONSUMED_QUEUES = (f"bench.{RUN}.stock-confirmed", f"bench.{RUN}.order-created")
SERVICE_KEY = "bench-service-key-" + secrets.token_hex(8)
ADMIN_KEY = "bench-admin-key-" + secrets.token_hex(8)
# The outbox rows not yet relayed: the worker's scenarios wait for none to be left.
OUTBOX_BACKLOG = "SELECT count(*) FROM outbox WHERE published_at IS NULL"


@dataclass
class Config:
    """The run's settings, from the command line (`cli.parse_args`)."""

    quick: bool
    seconds: float
    warmup: int
    soak: float
    database_url: str
    broker_url: str
    port: int
    output: Path | None
    command: str
    only: str | None = None  # one part alone (`--only export`)
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
    """One run: its settings, the rows measured so far (`add`, `skip`), the loopback ports and
    environment of the servers it starts, and the bench database. The steps of the run
    (`ceilings`, `http_runs`, `worker_runs`) are functions that take it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.rows: dict[str, Result] = {}
        self.run_id = secrets.token_hex(3)
        self.secret = scenarios.webhook_secret()
        self.notes: list[str] = []
        self.profile: profile.Profile | None = None
        self.profile_info: dict[str, float] = {}
        self.soak_info: list[str] = []
        self.export_runs: list[ExportRun] = []  # bench/exports.py
        self.port = config.port
        self.loadavg_start = os.getloadavg()
        # Set by `run.run` when the run ends; the report shows both.
        self.elapsed = 0.0
        self.loadavg_end = self.loadavg_start

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
            "TILLPOINT_STOCK_CONFIRMED_QUEUE": CONSUMED_QUEUES[0],
            "TILLPOINT_ORDER_CREATED_QUEUE": CONSUMED_QUEUES[1],
            "TILLPOINT_MOCK_WEBHOOK_SECRET": self.secret,
            "TILLPOINT_RATE_LIMITS": "{}",  # the load is one client by design: no limit
            "TILLPOINT_RECONCILE_INTERVAL": "0",  # measured on its own, not during the load
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

    async def count_is_zero(self, query: str) -> bool:
        """Whether `query` (a `SELECT count(*) …`) counts nothing now."""
        return await self.sql(query) == 0
