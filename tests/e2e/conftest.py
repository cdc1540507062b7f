"""Real server processes against PostgreSQL.

The tests here talk HTTP to `tillpoint serve` subprocesses, so requests really run in parallel
in several processes and a process can really die. Every process is started in its own session
and its whole process group is killed in teardown, whatever happened in the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.conftest import API_KEYS, free_port, postgres_url

TILLPOINT = str(Path(sys.executable).with_name("tillpoint"))
ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# A bound, not a wait: on a loaded shared machine the imports alone can take 30 s.
STARTUP_TIMEOUT = 120.0
MOCK_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class Server:
    """One `tillpoint serve` process (and, with --workers, its children)."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill_now(self) -> None:
        """SIGKILL the whole process group at once, as a crash or an OOM kill would."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def kill(self) -> None:
        """Terminate the whole process group; escalate to SIGKILL if it lingers."""
        if self.proc.poll() is None:
            for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=grace)
                    break
                except subprocess.TimeoutExpired:
                    continue
        # uvicorn's worker children share the group: make sure none survives its parent.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


def server_env(database_url: str, state_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
    env.update(
        {
            "TILLPOINT_DATABASE_URL": database_url,
            "TILLPOINT_API_KEYS": json.dumps(API_KEYS),
            "TILLPOINT_LOG_LEVEL": "WARNING",
            "TILLPOINT_STATE_DIR": str(state_dir),
            "TILLPOINT_MOCK_WEBHOOK_SECRET": MOCK_WEBHOOK_SECRET,
        }
    )
    env.update({f"TILLPOINT_{k.upper()}": v for k, v in settings.items()})
    return env


def migrate(database_url: str, workdir: Path) -> None:
    subprocess.run(
        [TILLPOINT, "migrate"],
        env=server_env(database_url, workdir / ".tillpoint"),
        cwd=workdir,
        check=True,
        capture_output=True,
        timeout=120,
    )


def start_server(
    database_url: str,
    workdir: Path,
    *,
    workers: int = 1,
    attempts: int = 3,
    faults: str = "",
    **settings: str,
) -> Server:
    """Start `tillpoint serve` on a free port and wait for /healthz; the caller must `kill()` it.

    With `faults` (`kill_after_commit@refund`, see `tests/e2e/faults.py`) the one process is
    `tests/e2e/fault_server.py` instead: the same app with the crash faults in its adapters.

    The port is chosen by the kernel; should someone else take it between our choice and the
    server's bind, the server exits at once and we start it again on another port."""
    env = server_env(database_url, workdir / ".tillpoint", **settings)
    if faults:
        assert workers == 1, "the fault server is one process"
        env |= {"TILLPOINT_E2E_FAULTS": faults, "PYTHONPATH": str(ROOT)}
    for attempt in range(1, attempts + 1):
        port = free_port(HOST)
        log = workdir / f"server-{port}-{time.monotonic_ns()}.log"
        where = ["--host", HOST, "--port", str(port)]
        command = (
            [sys.executable, "-m", "tests.e2e.fault_server", *where]
            if faults
            else [TILLPOINT, "serve", *where, "--workers", str(workers)]
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=workdir,  # no stray .env file is picked up
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(port, proc, log)
        try:
            wait_healthy(server, port_taken_is_fatal=attempt == attempts)
        except PortTaken:
            server.kill()
            continue
        except BaseException:
            server.kill()
            raise
        return server
    raise AssertionError("unreachable")  # pragma: no cover


class PortTaken(Exception):
    """The server could not bind its port: someone else took it first."""


def wait_healthy(server: Server, *, port_taken_is_fatal: bool = True) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            if not port_taken_is_fatal and "address already in use" in server.log_tail().lower():
                raise PortTaken(server.port)
            pytest.fail(f"server exited with {server.proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"server on port {server.port} did not become healthy:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def e2e_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PostgreSQL migrated to head by the real CLI (never reset: other tests may share it)."""
    url = postgres_url()
    migrate(url, tmp_path_factory.mktemp("migrate"))
    return url


@pytest.fixture(scope="session")
def e2e_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def server(e2e_database_url: str, e2e_workdir: Path) -> Iterator[Server]:
    """A two-process API (uvicorn --workers 2) started once for a module's tests."""
    current = start_server(e2e_database_url, e2e_workdir, workers=2, mock_delay_ms="50")
    try:
        yield current
    finally:
        current.kill()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
        yield client


@pytest.fixture(scope="session")
async def db(e2e_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(e2e_database_url, pool_size=2)
    try:
        yield engine
    finally:
        await engine.dispose()


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()
