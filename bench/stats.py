"""Pure statistics and goal arithmetic, kept apart from the I/O so a unit test covers them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: an observed latency, never an interpolated one."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ratio(value: float | None, ceiling: float | None) -> float | None:
    """`value / ceiling`, or None when either side was not measured."""
    if value is None or ceiling is None or ceiling <= 0 or math.isnan(value):
        return None
    return value / ceiling


@dataclass
class Result:
    """One row of the table: a scenario at one concurrency, or a ceiling."""

    name: str
    concurrency: int | None
    ops: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)  # seconds
    rss_mb: float | None = None
    ceiling: str | None = None  # key of the row this one is compared with
    ratio: float | None = None
    goal: str | None = None  # e.g. "≥ 45% of pgbench"
    met: bool | None = None
    note: str = ""
    skipped: str | None = None  # reason, when the scenario could not run
    rate_override: float | None = None  # a rate computed from timestamps, not ops/seconds
    unit: str = "ops/s"

    @property
    def key(self) -> str:
        return f"{self.name}@{self.concurrency}" if self.concurrency is not None else self.name

    @property
    def rate(self) -> float | None:
        if self.skipped:
            return None
        if self.rate_override is not None:
            return self.rate_override
        return self.ops / self.seconds if self.seconds > 0 else None

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies, 50) * 1000 if self.latencies else None

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies, 99) * 1000 if self.latencies else None


@dataclass(frozen=True)
class Goal:
    """A goal from issue 6: the row's ratio (or rate) must reach `minimum`; optionally p99 under
    `max_p99_ms` and no errors."""

    text: str
    minimum: float
    on: str = "ratio"  # "ratio" or "rate"
    max_p99_ms: float | None = None

    def check(self, row: Result) -> bool | None:
        if row.skipped:
            return None
        value = row.ratio if self.on == "ratio" else row.rate
        if value is None:
            return None
        if value < self.minimum or row.errors:
            return False
        if self.max_p99_ms is not None:
            p99 = row.p99_ms
            if p99 is None or p99 >= self.max_p99_ms:
                return False
        return True


def link(rows: dict[str, Result], row: Result, ceiling_key: str, goal: Goal | None = None) -> None:
    """Point `row` at its ceiling, compute the ratio and judge the goal (when there is one)."""
    ceiling = rows.get(ceiling_key)
    row.ceiling = ceiling_key
    row.ratio = ratio(row.rate, ceiling.rate if ceiling else None)
    if goal is not None:
        row.goal = goal.text
        row.met = goal.check(row)


def flatness(samples: Sequence[float], warmup_fraction: float = 0.2) -> float | None:
    """Largest relative deviation of the memory samples after warm-up from the first of them.

    The first `warmup_fraction` of samples is dropped: pools, caches and allocator arenas fill
    up early, and the goal is about growth while serving, not about start-up."""
    kept = list(samples)[int(len(samples) * warmup_fraction) :]
    if len(kept) < 2 or kept[0] <= 0:
        return None
    base = kept[0]
    return max(abs(s - base) / base for s in kept)


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    return f"{value:,.{digits}f}{suffix}"
