"""Run localstripe for the test suite: on loopback only, from scratch, and with nothing on disk.

`python -m tests.support.localstripe_server [--port N]` (N = 0, the default: the kernel picks a
free port). Once it listens it prints one line, `localstripe listening on 127.0.0.1:<port>`,
which `tests/support/localstripe.py` waits for.

localstripe's own `start()` binds every interface and pickles its store to
`/tmp/localstripe.pickle` on every change (and loads it back unless `--from-scratch`): on a
shared machine two runs would read each other's data. Here its store's disk methods are no-ops
and its app is served on one loopback socket.

Two things Stripe does and localstripe does not are added in front of its app:

* every answer carries a `Request-Id` header (so the adapter's request-id plumbing is real);
* `Idempotency-Key` on a POST: the first answer under a key (per API key) is stored and
  replayed for the same request, with `Idempotent-Replayed: true`; the same key with other
  parameters is a 400 `idempotency_error` (docs.stripe.com/api/idempotent_requests). So a
  retried call with the same key has no second effect, as at Stripe. `DELETE /_config/data`
  forgets the keys with the data.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import socket
import string
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

HOST = "127.0.0.1"


def _no_disk(_store: object) -> None:
    return None


# Stripe's request ids are letters and digits (`req_8aB3…`). Not hex: a hex id is all digits
# one time in two thousand, and then often a Luhn-valid 16-digit run that the suite's card-data
# scans rightly report wherever the id is kept (the provider call audit, the logs).
_ID_ALPHABET = string.ascii_letters + string.digits


async def _request_id(request: web.Request, response: web.StreamResponse) -> None:
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(14))
    response.headers.setdefault("Request-Id", f"req_{suffix}")


@dataclass(frozen=True)
class _Answer:
    fingerprint: str
    status: int
    body: bytes
    content_type: str


_answers: dict[tuple[str, str], _Answer] = {}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "DELETE" and request.path == "/_config/data":
        _answers.clear()
    key = request.headers.get("Idempotency-Key")
    if request.method != "POST" or not key:
        return await handler(request)
    scope = (request.headers.get("Authorization", ""), key)
    body = await request.read()
    fingerprint = hashlib.sha256(f"{request.path}\n".encode() + body).hexdigest()
    seen = _answers.get(scope)
    if seen is not None:
        if seen.fingerprint != fingerprint:
            error = {
                "type": "idempotency_error",
                "message": "Keys for idempotent requests can only be used with the same "
                "parameters they were first used with.",
            }
            return web.json_response({"error": error}, status=400)
        replay = web.Response(status=seen.status, body=seen.body, content_type=seen.content_type)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    response = await handler(request)
    if isinstance(response, web.Response) and isinstance(response.body, bytes):
        _answers[scope] = _Answer(
            fingerprint, response.status, response.body, response.content_type
        )
    return response


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
    # Outermost: it sees localstripe's final answers, errors included (Stripe stores those too).
    app.middlewares.insert(0, _idempotency)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A restart on the port of an earlier run binds despite its connections in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, args.port))
    port = sock.getsockname()[1]
    print(f"localstripe listening on {HOST}:{port}", flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)


if __name__ == "__main__":
    main()
