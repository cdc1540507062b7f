"""The broker the outbox relay publishes to."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One `outbox` row: `body` is the serialized message (see `service/messages.py`)."""

    event_id: str
    aggregate_id: str
    routing_key: str
    message_type: str
    sequence: int
    body: str
    created_at: datetime
    id: int | None = None
    attempts: int = 0


class PublishFailed(Exception):
    """The broker did not confirm a message (unreachable, nack, timeout)."""


class Publisher(Protocol):
    """The broker port. `publish` returns only once the broker has confirmed the message."""

    async def publish(self, message: OutboxMessage) -> None: ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...
