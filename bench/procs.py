"""Server processes the bench starts, and their memory as the kernel reports it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The caller's environment without any TILLPOINT_* setting, plus `extra`: a developer's
    own .env or shell settings must not leak into what is measured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLPOINT_")}
    env.update(extra)
    return env


def children(pid: int) -> list[int]:
    found: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's supervisor and its worker processes)."""
    result, todo = [], [pid]
    while todo:
        current = todo.pop()
        result.append(current)
        todo.extend(children(current))
    return result


def rss_mb(pid: int, field_name: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int | None = None
    cwd: Path = ROOT
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(  # own session: stop() signals the whole group
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def pids(self) -> list[int]:
        return tree(self.pid) if self.proc and self.proc.poll() is None else []

    async def wait_ready(self, path: str = "/healthz", timeout: float = 60.0) -> None:
        assert self.port is not None
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}") as client:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}; {self.tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(path, timeout=2)).status_code < 500:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s; {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"last log lines of {self.log_path}:\n" + "\n".join(text)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


@dataclass
class MemorySampler:
    """Samples VmRSS of every process of the given servers while a step runs."""

    servers: list[Server]
    interval: float = 0.25
    peaks: dict[int, float] = field(default_factory=dict)
    series: dict[int, list[float]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        for server in self.servers:
            for pid in server.pids():
                value = rss_mb(pid)
                if value is None:
                    continue
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), value)
                self.series.setdefault(pid, []).append(value)

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def __enter__(self) -> MemorySampler:
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        self.sample()

    @property
    def peak_per_process(self) -> float | None:
        """The largest process (an API worker, normally): the figure the flatness goal is about."""
        return max(self.peaks.values()) if self.peaks else None


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[None]:
    try:
        for server in servers:
            server.start()
        yield
    finally:
        for server in reversed(servers):
            server.stop()
