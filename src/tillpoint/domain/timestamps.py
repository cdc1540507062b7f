"""How instants are written in the API and in published messages."""

from __future__ import annotations

from datetime import datetime


def rfc3339(moment: datetime) -> str:
    """`2026-11-23T10:30:00Z`, with milliseconds when there are any (always UTC)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond // 1000:03d}Z" if moment.microsecond else "Z"
    )
