"""py-spy against the API workers while the create scenario runs, summarised for the report."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import BIN

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# leaf frames are attributed to the first package whose path fragment they contain
BUCKETS: list[tuple[str, str]] = [
    ("tillpoint", "tillpoint/"),
    ("SQLAlchemy", "sqlalchemy/"),
    ("asyncpg", "asyncpg/"),
    ("pydantic", "pydantic"),
    ("FastAPI", "fastapi/"),
    ("Starlette", "starlette/"),
    ("uvicorn / HTTP parsing", "uvicorn/"),
    ("uvicorn / HTTP parsing", "httptools"),
    ("uvicorn / HTTP parsing", "h11/"),
    ("structlog", "structlog/"),
    ("logging", "logging/"),
    ("prometheus_client", "prometheus_client/"),
    ("json", "json/"),
    ("asyncio event loop", "asyncio/"),
    ("uvloop", "uvloop"),
    ("anyio", "anyio/"),
]


def start(pid: int, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """Samples the uvicorn supervisor and its worker processes (`--subprocesses`) without
    pausing them (`--nonblocking`), so the profile costs the service almost nothing."""
    return subprocess.Popen(
        [
            str(BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",
            "--rate",
            "200",
            "--duration",
            str(max(1, round(seconds))),
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def parse_frame(text: str) -> tuple[str, str]:
    match = FRAME.match(text.strip())
    if not match:
        return text.strip(), ""
    return match["func"], match["file"]


def bucket(path: str, func: str = "") -> str:
    if func == "Runner.run" or "uvloop" in path:
        return "event loop (uvloop, C)"
    for name, fragment in BUCKETS:
        if fragment in path:
            return name
    return "other (stdlib, C extensions)"


def short(path: str) -> str:
    for marker in ("site-packages/", "src/", "python3.11/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


# inclusive shares worth calling out: a frame (function or file fragment) anywhere on the stack
NOTABLE: list[tuple[str, tuple[str, ...]]] = [
    ("opening new database connections (incl. SSL negotiation)", ("connect_utils",)),
    ("pool pre-ping on checkout", ("do_ping", "_pre_ping", "ping (")),
    ("idempotency store (claim + complete)", ("SqlIdempotencyStore",)),
    ("SQLAlchemy statement compilation / cache keys", ("sql/compiler", "cache_key")),
    ("structlog / logging", ("structlog/", "logging/")),
    ("prometheus_client", ("prometheus_client/",)),
    ("pydantic validation / serialization", ("pydantic",)),
]


@dataclass
class Profile:
    samples: int = 0
    self_by_function: Counter[str] = field(default_factory=Counter)
    self_by_bucket: Counter[str] = field(default_factory=Counter)
    inclusive_tillpoint: Counter[str] = field(default_factory=Counter)
    notable: Counter[str] = field(default_factory=Counter)


def parse(text: str) -> Profile:
    """py-spy's raw format: one collapsed stack per line, root first, then a space and a count.
    With `--subprocesses` each stack starts with `process …` frames: only stacks of the worker
    processes (two such frames: supervisor, then worker) are kept, and of those only the ones
    running a request or the event loop, not the idle supervisor threads."""
    profile = Profile()
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        parts = [f for f in stack.split(";") if f]
        processes = sum(1 for f in parts if f.startswith("process "))
        frames = [f for f in parts if not f.startswith("process ")]
        if processes < 2 or len(frames) < 2:
            continue
        profile.samples += count
        func, path = parse_frame(frames[-1])
        profile.self_by_function[f"{func} ({short(path)})"] += count
        profile.self_by_bucket[bucket(path, func)] += count
        for label, needles in NOTABLE:
            if any(n in frame for frame in frames for n in needles):
                profile.notable[label] += count
        seen: set[str] = set()
        for frame in frames:
            f_func, f_path = parse_frame(frame)
            if "tillpoint/" in f_path:
                name = f"{f_func} ({short(f_path)})"
                if name not in seen:
                    seen.add(name)
                    profile.inclusive_tillpoint[name] += count
    return profile


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "—"
