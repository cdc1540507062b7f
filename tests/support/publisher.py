"""A publisher that keeps what the outbox relay published, for tests that check the events.

It satisfies the `Publisher` port and forwards each message to the real publisher it wraps, so
a test still exercises that publisher; inject it where a relay is built, e.g.
`outbox_relay(dataclasses.replace(container, publisher=RecordingPublisher(container.publisher)))`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tillpoint.service.ports import OutboxMessage, Publisher


@dataclass
class RecordingPublisher:
    inner: Publisher
    messages: list[OutboxMessage] = field(default_factory=list)

    async def publish(self, message: OutboxMessage) -> None:
        await self.inner.publish(message)  # recorded once the real publisher has accepted it
        self.messages.append(message)

    async def healthy(self) -> bool:
        return await self.inner.healthy()

    async def close(self) -> None:
        await self.inner.close()
