"""The bench's arithmetic: a wrong percentile or ratio would make docs/performance.md lie while
every run still "works". No timing is asserted here."""

from __future__ import annotations

import math

import pytest
from bench.profile import parse
from bench.stats import Goal, Result, flatness, fmt, link, percentile, ratio


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order must not matter
    values.reverse()
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="outside"):
        percentile(values, 101)


def test_ratio_and_rates() -> None:
    assert ratio(450.0, 1000.0) == pytest.approx(0.45)
    assert ratio(None, 1000.0) is None
    assert ratio(10.0, 0.0) is None
    row = Result("create", 16, ops=900, seconds=3.0, latencies=[0.01, 0.02, 0.03])
    assert row.rate == pytest.approx(300.0)
    assert row.key == "create@16"
    assert row.p50_ms == pytest.approx(20.0)
    assert Result("relay", None, rate_override=12.5).rate == 12.5
    assert Result("saga", 1, ops=5, seconds=1.0, skipped="not built").rate is None


def test_link_judges_goals_against_the_ceiling_row() -> None:
    rows = {
        "pgbench create tx@16": Result("pgbench create tx", 16, ops=1600, seconds=1.0),
        "create@16": Result("create", 16, ops=800, seconds=1.0),
        "replay@16": Result("replay", 16, ops=1200, seconds=1.0),
    }
    link(rows, rows["create@16"], "pgbench create tx@16", Goal("≥ 45% of pgbench", 0.45))
    assert rows["create@16"].ratio == pytest.approx(0.5)
    assert rows["create@16"].met is True
    link(rows, rows["replay@16"], "create@16", Goal("≥ 2x create", 2.0))
    assert rows["replay@16"].ratio == pytest.approx(1.5)
    assert rows["replay@16"].met is False
    errors = Result("create", 64, ops=800, seconds=1.0, errors=1)
    rows["pgbench create tx@64"] = Result("pgbench create tx", 64, ops=1000, seconds=1.0)
    link(rows, errors, "pgbench create tx@64", Goal("≥ 45% of pgbench", 0.45))
    assert errors.met is False  # errors must be 0 whatever the ratio
    missing = Result("saga", 1, ops=1, seconds=1.0)
    link(rows, missing, "cycle@1", Goal("≥ 50% of cycle", 0.5))
    assert missing.ratio is None
    assert missing.met is None


def test_rate_goal_with_p99_limit() -> None:
    goal = Goal("≥ 250/s, p99 < 100 ms", 250, on="rate", max_p99_ms=100)
    fast = Result("cycle", 64, ops=300, seconds=1.0, latencies=[0.05] * 100)
    slow = Result("cycle", 64, ops=300, seconds=1.0, latencies=[0.05] * 98 + [0.2, 0.2])
    assert goal.check(fast) is True
    assert goal.check(slow) is False


def test_flatness_ignores_warmup_and_reports_the_largest_deviation() -> None:
    assert flatness([50, 80, 100, 100, 105, 98, 100, 100, 100, 100]) == pytest.approx(0.05)
    assert flatness([100]) is None
    assert fmt(None) == "—"
    assert fmt(1234.5, 1) == "1,234.5"


def test_profile_keeps_worker_stacks_and_attributes_leaf_frames() -> None:
    supervisor = 'process 1:"tillpoint serve"'
    worker = 'process 2:"spawn_main"'
    raw = "\n".join(
        [
            f"{supervisor};main (tillpoint/entrypoints/cli.py:1);"
            "Condition.wait (threading.py:3) 40",
            f"{supervisor};{worker};run (asyncio/runners.py:1);"
            "idempotent (tillpoint/entrypoints/api/idempotent.py:60);"
            "Connection.execute (site-packages/asyncpg/connection.py:9) 30",
            f"{supervisor};{worker};run (asyncio/runners.py:1);"
            "idempotent (tillpoint/entrypoints/api/idempotent.py:61);"
            "Compiled.__init__ (site-packages/sqlalchemy/sql/compiler.py:5) 10",
        ]
    )
    profile = parse(raw)
    assert profile.samples == 40  # the idle supervisor thread is left out
    assert profile.self_by_bucket["asyncpg"] == 30
    assert profile.self_by_bucket["SQLAlchemy"] == 10
    assert profile.inclusive_tillpoint["idempotent (tillpoint/entrypoints/api/idempotent.py)"] == 40
    assert profile.notable["SQLAlchemy statement compilation / cache keys"] == 10
