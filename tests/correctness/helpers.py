"""Helpers for the in-process correctness tests: moving the shared clock safely and reading
rows straight from the database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from tests.support.clock import MovableClock
from tillpoint.adapters.telemetry import REGISTRY
from tillpoint.bootstrap import Container


@contextmanager
def moved(clock: MovableClock, delta: timedelta) -> Iterator[None]:
    """The clock is shared by the whole session: always move it back."""
    clock.advance(delta)
    try:
        yield
    finally:
        clock.advance(-delta)


async def scalar(container: Container, sql: str, **params: Any) -> Any:
    async with container.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


def idempotent_hits() -> float:
    return REGISTRY.get_sample_value("payment_idempotent_hit_total") or 0.0
