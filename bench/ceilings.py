"""The ceilings every scenario is measured against, in the same run on the same machine:
pgbench doing the create transaction, a bare FastAPI endpoint and FastAPI with raw asyncpg
doing it, and aio-pika publishing with confirms and consuming with acks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url

from bench import broker, scenarios
from bench.context import Bench
from bench.load import Op, expect, http_step
from bench.procs import BIN, Server, clean_env
from bench.sql import pgbench_script
from bench.stats import Result


async def pgbench(bench: Bench) -> None:
    bench.log("ceiling: pgbench of the create transaction")
    binary = "pgbench"
    for candidate in ("/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench"):
        if Path(candidate).exists():
            binary = candidate
            break
    per_step = int(bench.config.seconds * 6000)
    await scenarios.seed_pg_orders(bench.config.dsn, "pgb-", per_step * len(bench.steps()))
    await bench.sql("CREATE SEQUENCE IF NOT EXISTS bench_order_seq")
    script = bench.config.work / "create.sql"
    script.write_text(pgbench_script("pgb-"))
    url = make_url(bench.config.dsn)
    for c in bench.steps():
        logdir = bench.config.work / f"pgbench-{c}"
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
            str(max(1, round(bench.config.seconds))),
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
        bench.add(result)


async def bare_asgi(bench: Bench) -> None:
    bench.log("ceiling: bare FastAPI endpoint, and FastAPI + raw asyncpg doing the create tx")
    for name, target, path, status, pool_prefix in (
        ("bare FastAPI", "bench.ceiling_app:plain_app", "/ping", 200, None),
        ("FastAPI + asyncpg", "bench.ceiling_app:asyncpg_app", "/payments", 201, "asg-"),
    ):
        port = bench.next_port()
        env = clean_env({"BENCH_PG_DSN": bench.config.dsn, "BENCH_PG_POOL": "16"})
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
            log_path=bench.config.work / f"ceiling-{port}.log",
        )
        server.start()
        try:
            await server.wait_ready("/docs")
            for c in bench.steps():
                count = bench.pool(4000)
                orders = (
                    await scenarios.seed_pg_orders(bench.config.dsn, f"{pool_prefix}{c}-", count)
                    if pool_prefix
                    else [f"o{n}" for n in range(count)]
                )

                bench.add(
                    await http_step(
                        name,
                        f"http://127.0.0.1:{port}",
                        _post_op(path, status, orders),
                        concurrency=c,
                        seconds=bench.config.seconds,
                        max_ops=count,
                        servers=[server],
                        warmup=bench.config.warmup,
                    )
                )
        finally:
            server.stop()


async def aio_pika(bench: Bench) -> None:
    if not bench.config.broker_url:
        for c in bench.steps():
            bench.skip("aio-pika publish", "RabbitMQ not reachable", c)
            bench.skip("aio-pika consume", "RabbitMQ not reachable", c)
        return
    bench.log("ceiling: aio-pika publish with confirms / consume with acks")
    try:
        for c in bench.steps():
            publish, consume = await broker.publish_consume(
                bench.config.broker_url, c, bench.config.seconds
            )
            bench.add(publish)
            bench.add(consume)
    finally:
        await broker.cleanup_ceiling(bench.config.broker_url)


def _post_op(path: str, status: int, orders: list[str]) -> Op:
    async def op(http: httpx.AsyncClient, i: int) -> None:
        expect(await http.post(path, json={"order_id": orders[i]}), status)

    return op
