"""`python -m bench`: starts the servers as their own processes, drives the load from this one,
measures the ceilings in the same run, prints the table and writes docs/performance.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from bench import exports, report
from bench.context import Bench, Config
from bench.procs import ROOT
from bench.run import run


def reachable(url: str, default_port: int) -> bool:
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
        "--only",
        choices=["export"],
        help="run one part alone: `export` measures the ledger export's memory and rewrites"
        " only its section of the report",
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
        only=args.only,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    if not reachable(config.database_url, 5432):
        print(f"PostgreSQL is not reachable at {config.database_url}", file=sys.stderr)
        return 2
    bench = Bench(config)
    try:
        asyncio.run(run(bench))
    except KeyboardInterrupt:
        return 130
    if config.only == "export":
        section = exports.section(bench)
        print("\n".join(section))
        if config.output is not None:
            before = config.output.read_text() if config.output.exists() else "# Performance\n"
            config.output.write_text(exports.replace_section(before, section))
            print(f"wrote the export section of {config.output}")
        return 0
    table = report.table(bench.rows.values())
    print()
    print(table)
    if config.output is not None:
        config.output.parent.mkdir(parents=True, exist_ok=True)
        config.output.write_text(report.document(bench, table, report.machine()))
        print(f"\nwrote {config.output}")
    return 0
