"""Run localstripe for the test suite: on loopback only, from scratch, and with nothing on disk.

`python -m tests.support.localstripe_server [--port N]` (N = 0, the default: the kernel picks a
free port). Once it listens it prints one line, `localstripe listening on 127.0.0.1:<port>`,
which `tests/support/localstripe.py` waits for.

localstripe's own `start()` binds every interface and pickles its store to
`/tmp/localstripe.pickle` on every change (and loads it back unless `--from-scratch`): on a
shared machine two runs would read each other's data. Here its store's disk methods are no-ops
and its app is served on one loopback socket. Each answer also carries a `Request-Id` header,
as Stripe's do (localstripe sends none), so the adapter's request-id plumbing is exercised.
"""

from __future__ import annotations

import argparse
import secrets
import socket
from collections.abc import Sequence

from aiohttp import web

HOST = "127.0.0.1"


def _no_disk(_store: object) -> None:
    return None


async def _request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Request-Id", f"req_{secrets.token_hex(8)}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from localstripe import resources, server  # type: ignore[import-untyped]

    resources.Store.dump_to_disk = _no_disk
    resources.Store.try_load_from_disk = _no_disk
    resources.store.clear()

    app: web.Application = server.app
    app.on_response_prepare.append(_request_id)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((HOST, args.port))
    port = sock.getsockname()[1]
    print(f"localstripe listening on {HOST}:{port}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
