"""Running the API in one or several processes.

With several processes each one listens on its *own* socket bound with `SO_REUSEPORT`, so the
kernel spreads new connections across them by hash. With one shared listening socket (what
uvicorn's `--workers` does) the process that accepted last usually accepts again, and a few
long-lived keep-alive connections — a load balancer's, or a benchmark's — all land on one
process while the others idle (measured: 0.92 cores on one worker, 0.00 on the other).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import socket
import time
import uuid
from types import FrameType
from typing import Any

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tillpoint.config import DEFAULT_MAX_HEADER_BYTES
from tillpoint.entrypoints.api.problems import PROBLEM_JSON, problem_body

log = structlog.get_logger("tillpoint.serve")

# Room for the request line and the `: ` and CRLF of every header on top of the headers' own
# bytes, which the API's middleware limits to TILLPOINT_MAX_HEADER_BYTES.
REQUEST_LINE_ALLOWANCE = 8 * 1024
LINGER_SECONDS = 2.0

APP = "tillpoint.entrypoints.api.asgi:app"
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 10,
}


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on the request head.

    httptools sets no limit of its own (a 32 MB header was read whole into memory), and the
    ASGI app only sees headers once they are all parsed. This counts the bytes received while a
    request's head is still incomplete and, past `max_head_bytes`, answers 431
    `headers_too_large` and closes the connection, so at most the cap plus one read (256 KiB)
    is held per connection. Set the cap with `bounded_protocol`.
    """

    max_head_bytes = DEFAULT_MAX_HEADER_BYTES + REQUEST_LINE_ALLOWANCE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._in_head = True
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # read and dropped until the lingering close
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.max_head_bytes:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        super().on_message_complete()

    def _refuse_head(self) -> None:
        transport: asyncio.Transport = self.transport
        if transport.is_closing():
            return
        request_id = f"req_{uuid.uuid4().hex}"
        _, body = problem_body(
            "headers_too_large",
            f"the request head is larger than {self.max_head_bytes} bytes",
            request_id=request_id,
        )
        transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            + f"content-type: {PROBLEM_JSON}\r\n".encode()
            + f"content-length: {len(body)}\r\n".encode()
            + f"x-request-id: {request_id}\r\n".encode()
            + b"connection: close\r\n\r\n"
            + body
        )
        # A lingering close, as nginx does: closing with unread bytes in the socket would send a
        # reset that can destroy the answer before the client reads it. Send FIN after the
        # answer, drop whatever still arrives, and close for good after a moment.
        self._refused = True
        if transport.can_write_eof():
            transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()
        log.warning("serve.head_too_large", received=self._head_bytes, limit=self.max_head_bytes)


def bounded_protocol(max_header_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class uvicorn is given, for the `TILLPOINT_MAX_HEADER_BYTES` in force."""
    limit = max_header_bytes + REQUEST_LINE_ALLOWANCE
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head_bytes": limit})


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _child(host: str, port: int, max_header_bytes: int) -> None:
    """One API process: its own SO_REUSEPORT socket and its own uvicorn server."""
    import uvicorn

    options = {**UVICORN_OPTIONS, "http": bounded_protocol(max_header_bytes)}
    server = uvicorn.Server(uvicorn.Config(APP, **options))
    server.run(sockets=[listening_socket(host, port, reuse_port=True)])


def serve(
    host: str, port: int, workers: int, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> None:
    import uvicorn

    if workers <= 1:
        options = {**UVICORN_OPTIONS, "http": bounded_protocol(max_header_bytes)}
        uvicorn.run(APP, host=host, port=port, **options)
        return
    # Fail here, in the supervisor, if the port is taken, instead of in every child.
    listening_socket(host, port, reuse_port=True).close()
    context = multiprocessing.get_context("spawn")
    child_args = (host, port, max_header_bytes)
    children = [context.Process(target=_child, args=child_args) for _ in range(workers)]
    for child in children:
        child.start()
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                child.terminate()  # SIGTERM: uvicorn drains and shuts down gracefully

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("serve.workers_started", workers=workers, pids=[c.pid for c in children])
    while not stopping:
        for index, child in enumerate(children):
            if not child.is_alive() and not stopping:
                log.error("serve.worker_died", pid=child.pid, exitcode=child.exitcode)
                children[index] = context.Process(target=_child, args=child_args)
                children[index].start()
        time.sleep(0.5)
    deadline = time.monotonic() + UVICORN_OPTIONS["timeout_graceful_shutdown"] + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
    log.info("serve.stopped")
