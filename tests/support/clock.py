"""A clock the tests move forward, injected with `build(settings, clock=MovableClock())`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class MovableClock:
    """The system clock plus an offset a test moves (`advance`) to reach a deadline, a TTL or a
    retry time without waiting for it."""

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def advance(self, delta: timedelta) -> None:
        self._offset += delta
