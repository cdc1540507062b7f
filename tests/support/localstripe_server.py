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
  forgets the keys with the data;
* `created` (`gt`, `gte`, `lt`, `lte`) on the PaymentIntents list (localstripe's list takes
  only `limit` and `starting_after`);
* disputes: `GET /v1/disputes` (filters `payment_intent`, `charge`), Stripe's list of Dispute
  objects, and `POST /_config/disputes` (JSON `{payment_intent, amount?, reason?}`), which opens
  one on the PaymentIntent's charge — what Stripe's test card 4000000000000259 does by itself.
  A dispute is `needs_response`, its evidence due in seven days. Wiped with the data.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import socket
import string
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

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
        _disputes.clear()
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


_disputes: list[dict[str, Any]] = []
_BOUNDS: dict[str, Callable[[int, int], bool]] = {
    "gt": lambda created, bound: created > bound,
    "gte": lambda created, bound: created >= bound,
    "lt": lambda created, bound: created < bound,
    "lte": lambda created, bound: created <= bound,
}


def _created_filter(resources: Any) -> None:
    """The PaymentIntents list with Stripe's `created` filter, around localstripe's own."""
    base = resources.PaymentIntent._api_list_all.__func__

    def list_all(cls: Any, /, url: str, created: Any = None, **kwargs: Any) -> Any:
        listed = base(cls, url, **kwargs)
        if created is None:
            return listed
        if not isinstance(created, dict) or not set(created) <= set(_BOUNDS):
            raise resources.UserError(400, "Bad request")
        for name, value in created.items():
            bound = int(value)
            listed._list = [pi for pi in listed._list if _BOUNDS[name](pi.created, bound)]
        return listed

    resources.PaymentIntent._api_list_all = classmethod(list_all)


def _dispute_routes(app: web.Application, resources: Any) -> None:
    async def open_dispute(request: web.Request) -> web.Response:
        body = await request.json()
        pi = resources.PaymentIntent._api_retrieve(str(body["payment_intent"]))
        charge = pi.latest_charge
        if charge is None:
            return web.json_response({"error": {"message": "no charge to dispute"}}, status=400)
        now = int(time.time())
        dispute = {
            "id": "dp_" + secrets.token_hex(7),
            "object": "dispute",
            "amount": int(body.get("amount") or charge.amount),
            "currency": charge.currency,
            "charge": charge.id,
            "payment_intent": pi.id,
            "reason": str(body.get("reason") or "fraudulent"),
            "status": "needs_response",
            "evidence_details": {"due_by": now + 7 * 86400, "has_evidence": False},
            "created": now,
            "livemode": False,
            "metadata": {},
        }
        _disputes.append(dispute)
        return web.json_response(dispute)

    async def list_disputes(request: web.Request) -> web.Response:
        query = request.query
        found = [
            d
            for d in reversed(_disputes)  # newest first, as Stripe lists
            if query.get("payment_intent") in (None, d["payment_intent"])
            and query.get("charge") in (None, d["charge"])
        ]
        limit = int(query.get("limit", "10"))
        after = query.get("starting_after")
        if after is not None:
            ids = [d["id"] for d in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        body = {
            "object": "list",
            "url": "/v1/disputes",
            "data": found[:limit],
            "has_more": len(found) > limit,
        }
        return web.json_response(body)

    app.router.add_post("/_config/disputes", open_dispute)
    app.router.add_get("/v1/disputes", list_disputes)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    from localstripe import resources, server  # type: ignore[import-untyped]

    resources.Store.dump_to_disk = _no_disk
    resources.Store.try_load_from_disk = _no_disk
    resources.store.clear()

    _created_filter(resources)
    app: web.Application = server.app
    _dispute_routes(app, resources)
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
