"""The printed table and docs/performance.md."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bench import exports
from bench.profile import percent
from bench.stats import Result, fmt, ratio

if TYPE_CHECKING:
    from bench.context import Bench

OPTIMIZATIONS = Path(__file__).with_name("optimizations.md")

HTTP = {
    "create",
    "cycle",
    "journey",
    "replay",
    "webhook ingest",
    "FastAPI + asyncpg",
    "embedded cycle",
}


def _met(row: Result) -> str:
    if row.goal is None:
        return ""
    if row.met is None:
        return f"{row.goal}: not measured"
    return f"{row.goal}: {'met' if row.met else 'NOT met'}"


def table(rows: Iterable[Result]) -> str:
    rows = list(rows)
    by_key = {r.key: r for r in rows}
    header = (
        "| scenario | c | rate | p50 ms | p99 ms | errors | peak RSS/proc MB | ceiling |"
        " ratio | vs bare FastAPI | goal |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        if r.skipped:
            lines.append(
                f"| {r.name} | {r.concurrency or '—'} | skipped: {r.skipped} | | | | | | | | |"
            )
            continue
        bare = by_key.get(f"bare FastAPI@{r.concurrency}")
        vs_bare = ratio(r.rate, bare.rate) if bare and r.name in HTTP else None
        ceiling = r.ceiling or ""
        shown_ratio = (
            fmt(r.ratio, 2, "x")
            if r.name == "replay"
            else fmt(r.ratio * 100 if r.ratio is not None else None, 0, "%")
        )
        lines.append(
            f"| {r.name} | {r.concurrency if r.concurrency is not None else '—'} |"
            f" {fmt(r.rate)} {r.unit} | {fmt(r.p50_ms, 1)} | {fmt(r.p99_ms, 1)} |"
            f" {r.errors} | {fmt(r.rss_mb)} | {ceiling} | {shown_ratio} |"
            f" {fmt(vs_bare * 100 if vs_bare is not None else None, 0, '%')} | {_met(r)} |"
        )
    return "\n".join(lines)


def notes(rows: Iterable[Result]) -> list[str]:
    return [f"- `{r.key}`: {r.note}" for r in rows if r.note and not r.skipped]


def goals(rows: Iterable[Result]) -> list[str]:
    out = []
    for r in rows:
        if r.goal is None:
            continue
        verdict = "not measured" if r.met is None else ("**met**" if r.met else "**not met**")
        value = fmt(r.ratio * 100, 0, "%") if r.ratio is not None else fmt(r.rate)
        if r.name == "replay":
            value = fmt(r.ratio, 2, "x")
        elif r.goal.startswith("≥ 250"):
            value = f"{fmt(r.rate)} {r.unit}, p99 {fmt(r.p99_ms, 1)} ms"
        elif r.name.startswith("memory"):
            value = r.note
        out.append(f"- {r.key} — {r.goal}: {value} → {verdict}")
    return out


def profile_section(bench: Bench) -> list[str]:
    p = bench.profile
    info = bench.profile_info
    if p is None or not p.samples:
        return ["No profile was taken in this run: " + ("; ".join(bench.notes) or "unknown")]
    lines = [
        f"py-spy 0.4 sampled both API worker processes at 200 Hz (`--nonblocking`, idle frames"
        f" excluded) for {info['seconds']:.0f} s of the create scenario at 16 connections"
        f" ({info['requests']:.0f} requests at {info['rate']:.0f}/s, slowed by the sampler);"
        f" {p.samples} on-CPU samples.",
        "",
        "- PostgreSQL transactions per `POST /payments`:"
        f" **{info['transactions_per_request']:.1f}**"
        f" (from `pg_stat_database.xact_commit`), rows written per request:"
        f" **{info['rows_written_per_request']:.1f}**.",
        "",
        "Where the on-CPU time goes, by the package of the innermost frame (self time):",
        "",
        "| package | share of samples |",
        "|---|---|",
    ]
    for name, count in p.self_by_bucket.most_common():
        lines.append(f"| {name} | {percent(count, p.samples)} |")
    lines += ["", "Top functions by self time:", "", "| function | self |", "|---|---|"]
    for name, count in p.self_by_function.most_common(15):
        lines.append(f"| `{name}` | {percent(count, p.samples)} |")
    lines += [
        "",
        "tillpoint functions by inclusive time (on the stack when sampled):",
        "",
        "| function | inclusive |",
        "|---|---|",
    ]
    for name, count in p.inclusive_tillpoint.most_common(15):
        lines.append(f"| `{name}` | {percent(count, p.samples)} |")
    lines += [
        "",
        "Notable costs (inclusive: the frame is anywhere on the sampled stack):",
        "",
        "| cost | inclusive |",
        "|---|---|",
    ]
    for label, count in p.notable.most_common():
        lines.append(f"| {label} | {percent(count, p.samples)} |")
    top = p.self_by_bucket.most_common(3)
    lines += [
        "",
        "Reading: the three largest self-time shares are "
        + ", ".join(f"{name} ({percent(count, p.samples)})" for name, count in top)
        + ". Code inside tillpoint itself is only what its own frames execute; the time it causes"
        " in SQLAlchemy, asyncpg, pydantic and the frameworks shows in those rows.",
    ]
    return lines


def document(bench: Bench, rendered: str, machine: dict[str, str]) -> str:
    config = bench.config
    load_start = ", ".join(f"{v:.2f}" for v in bench.loadavg_start)
    load_end = ", ".join(f"{v:.2f}" for v in bench.loadavg_end)
    # The bench itself keeps the load near 2; more than that at the start means other work.
    shared = bench.loadavg_start[0] > 1.5
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Performance",
        "",
        "Written by `make bench` (`bench/`); do not edit by hand — rerun it. Every figure is",
        "compared with a ceiling measured in the same run on the same machine, because absolute",
        "numbers on a shared 2-core box drift from run to run.",
        "",
        "## How to run",
        "",
        "```",
        "make bench                               # full run, ~7-10 minutes, writes this file",
        ".venv/bin/python -m bench --quick        # ~2-minute smoke run, writes nothing",
        ".venv/bin/python -m bench --soak 300     # full run with the 5-minute memory check",
        "```",
        "",
        "It needs the local PostgreSQL (`BENCH_DATABASE_URL`, default"
        " `postgresql+asyncpg://postgres@127.0.0.1:5432/tillpoint_bench`; **the bench drops and"
        " recreates that database**) and RabbitMQ (`BENCH_BROKER_URL`, default"
        " `amqp://guest:guest@127.0.0.1:5672/`; broker scenarios skip without it), and `pgbench`."
        " Servers listen on loopback ports from 8601 (`--port`). Exchanges and queues it declares"
        " start with `bench.` and are deleted at the end.",
        "",
        "## This run",
        "",
        f"- When: {when}; took {bench.elapsed / 60:.1f} minutes.",
        f"- Command: `{config.command}`"
        + (
            f" with `BENCH_DATABASE_URL={config.database_url}`"
            if "tillpoint_bench" not in config.database_url
            else ""
        ),
        f"- Machine: {machine['nproc']} CPUs ({machine['cpu']}), {machine['memory']} memory,"
        f" Linux {machine['kernel']}, Python {machine['python']}, PostgreSQL"
        f" {getattr(bench, 'pg_version', '?')}, RabbitMQ"
        f" {'reachable' if config.broker_url else 'not reachable'}.",
        f"- Load average (1/5/15 min) at the start: {load_start}; at the end: {load_end}."
        + (
            " **Other work was running on the machine when this run started**, so absolute"
            " rates are lower and noisier than on an idle box; the ratios are the figures to"
            " compare."
            if shared
            else ""
        ),
        f"- Steps: {config.seconds:.0f} s timed per scenario and concurrency, after an untimed"
        f" warm-up of {config.warmup} operations; the load generator (this process, aiohttp,"
        " one connection per concurrent task) runs on the same 2 cores as the servers and the"
        " database, so every HTTP figure includes the client's own cost — the bare FastAPI row"
        " shows how much that is.",
        "",
        "## Results",
        "",
        rendered,
        "",
        "Columns: `c` = concurrent connections (closed loop: each starts its next operation when"
        " the previous one ends); `p50`/`p99` = latency of one operation (for cycle two requests,"
        " for journey five); `peak RSS/proc` = the largest VmRSS of any one server process,"
        " sampled every 0.25 s during the step; `ratio` = rate ÷ the rate of the `ceiling` row"
        " (for replay, as a multiple); `vs bare FastAPI` = rate ÷ the bare endpoint at the same"
        " concurrency.",
        "",
        "## Goals (issue 6)",
        "",
        *goals(bench.rows.values()),
        "",
        "## What each row measures",
        "",
        "- **pgbench create tx**: `pgbench -n -M simple` running the create transaction (insert"
        " idempotency key + payment + payment event + outbox row, `bench/sql.py`) against the"
        " schema `tillpoint migrate` created, on pre-created orders.",
        "- **bare FastAPI**: a FastAPI endpoint parsing a small JSON body and returning one, under"
        " uvicorn with 2 workers and no access log (the service's settings).",
        "- **FastAPI + asyncpg**: the same server running the pgbench transaction through a raw"
        " asyncpg pool (16 connections per worker).",
        "- **aio-pika publish/consume**: persistent messages with publisher confirms (one"
        " outstanding per task), then consumed with one manual ack each.",
        "- **create**: `tillpoint serve --workers 2` on PostgreSQL with the production settings"
        " (`TILLPOINT_DATABASE_URL`, `TILLPOINT_API_KEYS`, `TILLPOINT_BROKER_URL`,"
        " `TILLPOINT_LOG_LEVEL=WARNING`): `POST /api/v1/payments` with a fresh Idempotency-Key"
        " on an order created before the timed part. Auth, validation, idempotency, events,"
        " outbox, metrics and logs are all on.",
        "- **cycle**: create + confirm (`pm_card_visa`, automatic capture) per order.",
        "- **journey**: create order → quote → create payment on the snapshot → confirm → refund.",
        "- **replay**: the same key and body as a stored create again (`Idempotent-Replayed`).",
        "- **webhook ingest**: signed mock webhooks (Standard Webhooks) posted with the worker"
        " stopped; **webhook processed**: the worker's drain rate over that backlog, from the"
        " rows' `processed_at`.",
        "- **relay**: the worker is started on the outbox backlog left by the scenarios above;"
        " the rate is between the first and last message arriving on a bound `bench.` queue.",
        "- **saga**: `order.stock-confirmed` published to the events exchange, timed until the"
        " matching `payment.succeeded` arrives on a bound `bench.` queue.",
        "- **embedded cycle**: `tillpoint serve` with `make run`'s defaults (SQLite, in-process"
        " broker, workers inside the API process, generated dev keys, INFO json logs).",
        "- **memory soak**: the cycle at 16 connections for the soak duration while every server"
        " process's RSS is sampled each second; after dropping the first 20% (warm-up) the"
        " largest deviation from the first kept sample must stay within ±10%.",
        "",
        *exports.section(bench),
        "## Profile findings",
        "",
        *profile_section(bench),
        "",
    ]
    if bench.soak_info:
        parts += ["## Memory", "", *[f"- {line}" for line in bench.soak_info], ""]
    extra = notes(bench.rows.values()) + [f"- {n}" for n in bench.notes]
    if extra:
        parts += ["## Notes from this run", "", *extra, ""]
    if OPTIMIZATIONS.exists():  # hand-written: what the profiles led to, kept across runs
        parts += [OPTIMIZATIONS.read_text().rstrip(), ""]
    return "\n".join(parts)


def machine() -> dict[str, str]:
    """The machine the run was on, for the report's header: ratios only compare within it."""
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
