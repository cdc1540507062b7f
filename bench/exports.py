"""The export's memory: `tillpoint export ledger` over windows of 0, 10k and 100k money
movements (seeded with plain SQL), its peak RSS read from the kernel when it exits
(`wait4`'s `ru_maxrss`, the process's high-water mark), and VmRSS sampled while it runs. A
streamed export's peak stays at its baseline (the empty window) whatever the window holds."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bench.procs import BIN, ROOT, rss_mb

if TYPE_CHECKING:
    from bench.context import Bench

# Far from any other scenario's rows (they are created now): day 1 holds the first 10k rows,
# day 2 the remaining 90k.
DAY1, DAY2, DAY3 = "2001-01-01", "2001-01-02", "2001-01-03"
EMPTY = ("2000-01-01", "2000-01-02")  # no rows: the command's own baseline
WINDOWS = (EMPTY, (DAY1, DAY2), (DAY1, DAY3))  # 0, 10k, 100k rows
SMALL, LARGE = 10_000, 100_000
SAMPLE_EVERY = 0.02

# One order, payment and SALE operation per movement; a tenth refunded in part.
SEED = [
    """
    INSERT INTO orders (order_id, buyer_id, amount_minor, currency, status, created_at,
                        updated_at)
    SELECT 'bench-exp-' || i, 'bench-buyer', 1999, 'EUR', 'PAID', ts, ts
    FROM (SELECT i, timestamptz '2001-01-01 00:00:00+00'
                   + CASE WHEN i <= $1 THEN (i * interval '86399 seconds') / $1
                          ELSE interval '1 day' + (i * interval '86399 seconds') / $2 END AS ts
          FROM generate_series(1, $2) AS i) AS s
    """,
    """
    INSERT INTO payments (payment_id, order_id, buyer_id, status, amount_minor, currency,
                          capture_method, provider, provider_payment_id, payment_method,
                          authorized_minor, captured_minor, created_at, updated_at)
    SELECT 'pay_bx' || substr(order_id, 11), order_id, buyer_id, 'CAPTURED', amount_minor,
           currency, 'automatic', 'mock', 'mock_pi_' || substr(order_id, 11),
           '{"type":"card","brand":"visa","last4":"4242"}'::json, amount_minor, amount_minor,
           created_at, updated_at
    FROM orders WHERE order_id LIKE 'bench-exp-%'
    """,
    """
    INSERT INTO payment_transactions (transaction_id, payment_id, kind, status, amount_minor,
                                      currency, idempotency_key, provider_reference,
                                      created_at, updated_at)
    SELECT 'txn_bx' || substr(payment_id, 7), payment_id, 'SALE', 'SUCCEEDED', amount_minor,
           currency, payment_id || ':sale:1', provider_payment_id, created_at, updated_at
    FROM payments WHERE payment_id LIKE 'pay_bx%'
    """,
]


@dataclass(frozen=True, slots=True)
class ExportRun:
    rows: int
    format: str
    peak_mb: float
    median_mb: float
    last_mb: float
    seconds: float
    file_mb: float


async def _seed(bench: Bench) -> None:
    import asyncpg

    conn = await asyncpg.connect(bench.config.dsn)
    try:
        await conn.execute("DELETE FROM payment_transactions WHERE transaction_id LIKE 'txn_bx%'")
        await conn.execute("DELETE FROM payments WHERE payment_id LIKE 'pay_bx%'")
        await conn.execute("DELETE FROM orders WHERE order_id LIKE 'bench-exp-%'")
        async with conn.transaction():
            await conn.execute(SEED[0], SMALL, LARGE)
            await conn.execute(SEED[1])
            await conn.execute(SEED[2])
        await conn.execute("ANALYZE payment_transactions")
    finally:
        await conn.close()


async def _export(bench: Bench, window: tuple[str, str], fmt: str) -> ExportRun:
    since, until = window
    out = bench.config.work / f"ledger-{since}-{until}.{fmt}"
    argv = [str(BIN / "tillpoint"), "export", "ledger", "--from", since, "--to", until]
    argv += ["--out", str(out), "--format", fmt, "--quiet"]
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=bench.app_env(broker=False), cwd=ROOT, stdout=subprocess.PIPE)
    # The child is reaped by `wait4` alone (never `poll`), so its rusage is its own.
    waited = asyncio.ensure_future(asyncio.to_thread(os.wait4, proc.pid, 0))
    samples: list[float] = []
    while not waited.done():
        value = rss_mb(proc.pid)
        if value is not None:
            samples.append(value)
        await asyncio.wait([waited], timeout=SAMPLE_EVERY)
    _, status, usage = waited.result()
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.monotonic() - started
    output = proc.stdout.read().decode() if proc.stdout else ""
    if proc.returncode != 0:
        raise RuntimeError(f"export exited {proc.returncode}: {output}")
    rows = int(output.split('"exported": ')[1].split(",")[0])
    last = samples[-1] if samples else 0.0
    samples.sort()
    return ExportRun(
        rows=rows,
        format=fmt,
        peak_mb=usage.ru_maxrss / 1024,
        median_mb=samples[len(samples) // 2] if samples else 0.0,
        last_mb=last,
        seconds=seconds,
        file_mb=out.stat().st_size / 1024 / 1024,
    )


async def export_memory(bench: Bench) -> None:
    bench.log("export: seeding 100k money movements")
    await _seed(bench)
    runs = []
    for fmt in ("csv", "parquet"):
        for window in WINDOWS:
            run = await _export(bench, window, fmt)
            bench.log(
                f"  export {fmt} {run.rows:,} rows: peak RSS {run.peak_mb:.0f} MB,"
                f" {run.seconds:.1f} s, {run.file_mb:.1f} MB"
            )
            runs.append(run)
    bench.export_runs = runs


def section(bench: Bench) -> list[str]:
    """docs/performance.md's export section: each run's peak against the empty window's."""
    runs: list[ExportRun] = bench.export_runs
    if not runs:
        return []
    baseline = {run.format: run.peak_mb for run in runs if run.rows == 0}
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        EXPORT_HEADING,
        "",
        f"Measured {when} by `{bench.config.command}`, {os.cpu_count()} CPUs, PostgreSQL"
        f" {getattr(bench, 'pg_version', '?')}, load average at the start"
        f" {bench.loadavg_start[0]:.2f}.",
        "",
        "`tillpoint export ledger --from … --to … --out FILE [--format parquet] --quiet` on the"
        f" bench database, over {LARGE // 1000}k seeded money movements (plain SQL inserts, one"
        " sale each): the empty window is the command's own baseline (Python, SQLAlchemy, asyncpg,"
        " pyarrow imported). Peak RSS is the process's high-water mark (`ru_maxrss` from"
        " `wait4`); VmRSS is sampled every 20 ms: the median, and the last sample before the"
        " process exited (the streaming state at the end of the file). `seconds` is the whole"
        " command, its start (imports, the schema check) included, hence the low rows/s of the"
        " small windows.",
        "",
        "| format | rows | peak RSS MB | vs empty window | median RSS MB | last RSS MB | seconds"
        " | rows/s | file MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        ratio = run.peak_mb / baseline[run.format] if baseline.get(run.format) else None
        rate = f"{run.rows / run.seconds:,.0f}" if run.rows else "—"
        lines.append(
            f"| {run.format} | {run.rows:,} | {run.peak_mb:.0f} | "
            f"{f'{ratio:.2f}x' if ratio else '—'} | {run.median_mb:.0f} | {run.last_mb:.0f} |"
            f" {run.seconds:.1f} |"
            f" {rate} | {run.file_mb:.1f} |"
        )
    lines += [
        "",
        "Alone: `.venv/bin/python -m bench --only export` (rewrites this section only). Memory"
        f" is flat when the {LARGE // 1000}k-row peak is the {SMALL // 1000}k-row peak: rows"
        " are fetched 1000 at a time and CSV leaves in 64 KiB chunks (its peak is the empty"
        " window's); Parquet holds one row group of 10,000 rows on top of that, whatever the"
        " window.",
        "",
    ]
    return lines


EXPORT_HEADING = "## Export memory (issue 13)"


def replace_section(document: str, lines: list[str]) -> str:
    """`document` with its export section replaced by `lines` (or inserted before the profile
    findings, or at the end)."""
    text = "\n".join(lines)
    parts = document.split("\n")
    if EXPORT_HEADING in parts:
        start = parts.index(EXPORT_HEADING)
        end = next(
            (i for i in range(start + 1, len(parts)) if parts[i].startswith("## ")), len(parts)
        )
        return "\n".join([*parts[:start], text, *parts[end:]])
    anchor = "## Profile findings"
    if anchor in parts:
        at = parts.index(anchor)
        return "\n".join([*parts[:at], text, *parts[at:]])
    return document.rstrip("\n") + "\n\n" + text
