"""The one wrapper of server processes: `start_server` runs `tillpoint serve` (or the e2e
suite's fault server) on a port the kernel picked, waits until it answers, and `Server.kill`
ends its whole process group, whatever happened in the test. Used by the e2e suite and by
every other test that needs a real server process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEYS, MOCK_WEBHOOK_SECRET, free_port

TILLPOINT = str(Path(sys.executable).with_name("tillpoint"))
ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# A bound, not a wait: on a loaded shared machine the imports alone can take 30 s.
STARTUP_TIMEOUT = 120.0


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


def server_env(
    database_url: str, state_dir: Path, *, without: Iterable[str] = (), **settings: str
) -> dict[str, str]:
    """The environment of a server process: no stray `TILLPOINT_*` variable of ours (a broker
    URL, say) reaches it; the suite's keys and secrets, `settings` as `TILLPOINT_<NAME>`, and
    the settings named in `without` left unset (to test a default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
    env.update(
        {
            "TILLPOINT_DATABASE_URL": database_url,
            "TILLPOINT_API_KEYS": json.dumps(API_KEYS),
            "TILLPOINT_LOG_LEVEL": "WARNING",
            "TILLPOINT_STATE_DIR": str(state_dir),
            "TILLPOINT_MOCK_WEBHOOK_SECRET": MOCK_WEBHOOK_SECRET,
            "TILLPOINT_RATE_LIMITS": "{}",  # off unless a test sets limits
            # No scheduled reconciliation: it would compare (and heal) other tests' payments.
            "TILLPOINT_RECONCILE_INTERVAL": "0",
        }
    )
    env.update({f"TILLPOINT_{k.upper()}": v for k, v in settings.items()})
    for name in without:
        del env[f"TILLPOINT_{name.upper()}"]
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
    without: Iterable[str] = (),
    **settings: str,
) -> Server:
    """Start `tillpoint serve` on a free port and wait for /healthz; the caller must `kill()` it.

    With `faults` (`kill_after_commit@refund`, see `tests/e2e/faults.py`) the one process is
    `tests/e2e/fault_server.py` instead: the same app with the crash faults in its adapters.

    The port is chosen by the kernel; should someone else take it between our choice and the
    server's bind, the server exits at once and we start it again on another port. A setting
    that must name the server's own address (a webhook URL) says `{port}` where the port goes.
    `without` as for `server_env`."""
    base = server_env(database_url, workdir / ".tillpoint", without=without, **settings)
    if faults:
        assert workers == 1, "the fault server is one process"
        base |= {"TILLPOINT_E2E_FAULTS": faults, "PYTHONPATH": str(ROOT)}
    for attempt in range(1, attempts + 1):
        port = free_port(HOST)
        env = {k: v.replace("{port}", str(port)) for k, v in base.items()}
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
