"""`tillpoint serve | worker | migrate | export`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, date, datetime
from typing import IO, Any

import structlog
from tqdm import tqdm

from tillpoint import __version__
from tillpoint.bootstrap import (
    api_keys,
    configure_logging,
    export_target,
    migrate,
    movement_source,
    preflight,
    schema_preflight,
    serve_worker_metrics,
    write_parquet,
)
from tillpoint.config import ConfigurationRefused, Settings
from tillpoint.domain.errors import ValidationFailed
from tillpoint.entrypoints import serving
from tillpoint.service import exports
from tillpoint.service.ports import (
    ExportTargetFailed,
    ExportWindow,
    MovementSource,
    StorageUnavailable,
)

log = structlog.get_logger("tillpoint.cli")


def _refused(settings: Settings) -> int | None:
    """Exit code 2 with one clear log line when the settings or the database's schema cannot
    run, instead of a trace. The embedded database is migrated here (a fresh machine works)."""
    try:
        preflight(settings)
        if settings.embedded:
            migrate(settings)
        schema_preflight(settings)
    except ConfigurationRefused as exc:
        log.error("startup.refused", reason=str(exc))
        print(f"tillpoint: refusing to start: {exc}", file=sys.stderr)
        return 2
    return None


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if (refused := _refused(settings)) is not None:
        return refused
    keys, dev_file = api_keys(settings)
    if dev_file is not None:
        print(f"Development API keys (kept in {dev_file}):", file=sys.stderr)
        for key in keys:
            print(f"  {key.role:8} {key.key.get_secret_value()}", file=sys.stderr)
    log.info(
        "serve.starting",
        host=args.host,
        port=args.port,
        workers=args.workers,
        database=settings.database_url.split("@")[-1],
        broker=bool(settings.broker_url),
    )
    serving.serve(args.host, args.port, args.workers, max_header_bytes=settings.max_header_bytes)
    return 0


def _worker(_args: argparse.Namespace, settings: Settings) -> int:
    from tillpoint.bootstrap import build
    from tillpoint.entrypoints.worker import Worker

    async def main() -> None:
        container = build(settings)
        worker = Worker(container)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        try:
            await worker.run()
        finally:
            await container.aclose()

    if (refused := _refused(settings)) is not None:
        return refused
    if settings.worker_metrics_port:
        serve_worker_metrics(settings)
        log.info(
            "worker.metrics", host=settings.worker_metrics_host, port=settings.worker_metrics_port
        )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    migrate(settings, args.revision)
    print(json.dumps({"migrated": args.revision}))
    return 0


CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def instant(text: str) -> datetime:
    """`--from`/`--to`: RFC 3339 with a zone (`2026-11-01T00:00:00Z`) or a date, which is its
    midnight UTC (`2026-11-01`)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (2026-11-01) or an RFC 3339 time with a zone"
        ) from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z or an offset")
    return moment.astimezone(UTC)


async def _counted(
    records: AsyncIterable[exports.Record], bar: Any, seen: list[int]
) -> AsyncIterator[exports.Record]:
    async for record in records:
        seen[0] += 1
        bar.update(1)
        yield record


async def _write_ledger(
    file: IO[bytes], window: ExportWindow, fmt: str, source: MovementSource, quiet: bool
) -> int:
    total = await source.count(window)
    with tqdm(
        total=total, unit=" rows", unit_scale=True, file=sys.stderr, disable=quiet, leave=False
    ) as bar:
        seen = [0]
        records = _counted(exports.ledger_records(window, source=source), bar, seen)
        if fmt == "parquet":
            await write_parquet(file, exports.LEDGER_COLUMNS, records)
        else:
            async for chunk in exports.csv_chunks(exports.LEDGER_HEADER, records):
                file.write(chunk)
    return seen[0]


def _export(args: argparse.Namespace, settings: Settings) -> int:
    window = ExportWindow(args.created_from, args.created_to, args.provider)

    async def main(file: IO[bytes]) -> int:
        async with movement_source(settings) as source:
            return await _write_ledger(file, window, args.format, source, args.quiet)

    uploaded: list[Any] = []

    def on_upload(sent: int) -> None:
        if not uploaded:
            uploaded.append(tqdm(unit="B", unit_scale=True, file=sys.stderr, disable=args.quiet))
        uploaded[0].update(sent)

    try:
        exports.check_window(window)
        schema_preflight(settings)
        with export_target(
            args.out, settings, content_type=CONTENT_TYPES[args.format], on_upload=on_upload
        ) as file:
            rows = asyncio.run(main(file))
    except (ValidationFailed, ConfigurationRefused) as exc:
        print(f"tillpoint export: {exc}", file=sys.stderr)
        return 2
    except (ExportTargetFailed, StorageUnavailable) as exc:
        print(f"tillpoint export: {exc}", file=sys.stderr)
        return 1
    finally:
        for bar in uploaded:
            bar.close()
    print(json.dumps({"exported": rows, "out": args.out, "format": args.format}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tillpoint", description="tillpoint payment service (settings: TILLPOINT_* env)"
    )
    parser.add_argument("--version", action="version", version=f"tillpoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1, help="API processes")
    serve.set_defaults(run=_serve)
    worker = sub.add_parser("worker", help="run the background worker loops")
    worker.set_defaults(run=_worker)
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head")
    migrate.set_defaults(run=_migrate)
    export = sub.add_parser("export", help="write an export file (docs/exports.md)")
    what = export.add_subparsers(dest="export", required=True)
    ledger = what.add_parser(
        "ledger",
        help="every money movement of a window, to a file or s3://bucket/key",
        description="Every money movement created in [--from, --to), oldest first.",
    )
    ledger.add_argument("--from", dest="created_from", type=instant, required=True)
    ledger.add_argument("--to", dest="created_to", type=instant, required=True)
    ledger.add_argument("--provider", help="only this provider's movements")
    ledger.add_argument("--out", required=True, help="a file path or s3://bucket/key")
    ledger.add_argument("--format", choices=sorted(CONTENT_TYPES), default="csv")
    ledger.add_argument("--quiet", action="store_true", help="no progress bar")
    ledger.set_defaults(run=_export)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    code: int = args.run(args, settings)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
