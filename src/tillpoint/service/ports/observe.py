"""Time and measurements."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class Telemetry(Protocol):
    """Counters, timings and gauges; the adapter is Prometheus."""

    def count(self, name: str, **labels: str) -> None: ...

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...

    def gauge(self, name: str, value: float) -> None: ...
