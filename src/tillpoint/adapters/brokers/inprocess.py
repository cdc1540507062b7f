"""The embedded broker: no server needed. Every published event is logged and handed to the
in-process subscribers whose topic pattern matches its routing key.

Each subscriber has its own queue and task, so a slow or failing subscriber never blocks the
relay (which may hold a database transaction while publishing) and sees events in the order
they were published.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from tillpoint.service.ports import OutboxMessage

log = structlog.get_logger("tillpoint.broker")

Handler = Callable[[OutboxMessage], Awaitable[None]]


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` is zero or more words."""
    words, keys = pattern.split("."), routing_key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(words):
            return j == len(keys)
        if words[i] == "#":
            return any(match(i + 1, at) for at in range(j, len(keys) + 1))
        if j == len(keys):
            return False
        return words[i] in ("*", keys[j]) and match(i + 1, j + 1)

    return match(0, 0)


@dataclass(eq=False)
class _Subscription:
    pattern: str
    handler: Handler
    queue: asyncio.Queue[OutboxMessage] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


class InProcessBroker:
    def __init__(self) -> None:
        self._subscriptions: list[_Subscription] = []
        self.published = 0

    def subscribe(self, pattern: str, handler: Handler) -> Callable[[], None]:
        """Deliver matching events to `handler`; returns a function that unsubscribes."""
        subscription = _Subscription(pattern, handler)
        self._subscriptions.append(subscription)

        def unsubscribe() -> None:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            if subscription.task is not None:
                subscription.task.cancel()

        return unsubscribe

    async def publish(self, message: OutboxMessage) -> None:
        log.info(
            "event.published",
            routing_key=message.routing_key,
            event_id=message.event_id,
            payment_id=message.aggregate_id,
            sequence=message.sequence,
            type=message.message_type,
            body=message.body,
        )
        self.published += 1
        for subscription in self._subscriptions:
            if topic_matches(subscription.pattern, message.routing_key):
                subscription.queue.put_nowait(message)
                if subscription.task is None or subscription.task.done():
                    subscription.task = asyncio.create_task(self._deliver(subscription))

    async def _deliver(self, subscription: _Subscription) -> None:
        while True:
            message = await subscription.queue.get()
            try:
                await subscription.handler(message)
            except Exception:  # a subscriber's bug must not stop the others
                log.exception(
                    "event.subscriber_failed",
                    pattern=subscription.pattern,
                    event_id=message.event_id,
                )
            finally:
                subscription.queue.task_done()

    async def join(self) -> None:
        """Wait until every subscriber has handled everything published so far."""
        for subscription in list(self._subscriptions):
            await subscription.queue.join()

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self.join()
        for subscription in self._subscriptions:
            if subscription.task is not None:
                subscription.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await subscription.task
            subscription.task = None
