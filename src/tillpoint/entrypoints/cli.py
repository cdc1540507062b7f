"""`tillpoint serve | worker | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys

import structlog

from tillpoint import __version__
from tillpoint.bootstrap import (
    api_keys,
    configure_logging,
    migrate,
    preflight,
    schema_preflight,
    serve_worker_metrics,
)
from tillpoint.config import ConfigurationRefused, Settings
from tillpoint.entrypoints import serving

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
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    code: int = args.run(args, settings)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
