"""`python -m tests.e2e.fault_server --host H --port P`: `tillpoint serve` (one process) with the
crash faults of `TILLPOINT_E2E_FAULTS` (see `tests/e2e/faults.py`).

It does what the CLI's `serve` does for PostgreSQL: the same refusals of unusable settings or of
a schema behind the code, the same logging, and uvicorn with the same options and protocol.
Run it from any directory with the repository root on `PYTHONPATH` (`conftest.start_server`).
"""

from __future__ import annotations

import argparse

import uvicorn

from tillpoint.bootstrap import configure_logging, preflight, schema_preflight
from tillpoint.config import Settings
from tillpoint.entrypoints import serving


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fault_server", description=__doc__)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    preflight(settings)
    schema_preflight(settings)
    options = {
        **serving.UVICORN_OPTIONS,
        "http": serving.bounded_protocol(settings.max_header_bytes),
    }
    uvicorn.run("tests.e2e.faults:app", factory=True, host=args.host, port=args.port, **options)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
