"""Running the API in one or several processes.

With several processes each one listens on its *own* socket bound with `SO_REUSEPORT`, so the
kernel spreads new connections across them by hash. With one shared listening socket (what
uvicorn's `--workers` does) the process that accepted last usually accepts again, and a few
long-lived keep-alive connections — a load balancer's, or a benchmark's — all land on one
process while the others idle (measured: 0.92 cores on one worker, 0.00 on the other).
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import time
from types import FrameType
from typing import Any

import structlog

log = structlog.get_logger("tillpoint.serve")

APP = "tillpoint.entrypoints.api.asgi:app"
UVICORN_OPTIONS: dict[str, Any] = {
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "timeout_graceful_shutdown": 10,
}


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


def _child(host: str, port: int) -> None:
    """One API process: its own SO_REUSEPORT socket and its own uvicorn server."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(APP, **UVICORN_OPTIONS))
    server.run(sockets=[listening_socket(host, port, reuse_port=True)])


def serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    if workers <= 1:
        uvicorn.run(APP, host=host, port=port, **UVICORN_OPTIONS)
        return
    # Fail here, in the supervisor, if the port is taken, instead of in every child.
    listening_socket(host, port, reuse_port=True).close()
    context = multiprocessing.get_context("spawn")
    children = [context.Process(target=_child, args=(host, port)) for _ in range(workers)]
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
                children[index] = context.Process(target=_child, args=(host, port))
                children[index].start()
        time.sleep(0.5)
    deadline = time.monotonic() + UVICORN_OPTIONS["timeout_graceful_shutdown"] + 5
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
    log.info("serve.stopped")
