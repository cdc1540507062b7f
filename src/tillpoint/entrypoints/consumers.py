"""The worker's order-event consumers: which queue and binding each consumed message is read
from (`subscriptions`, from settings), and the service the worker starts (`EventConsumers`).

What a message must be and how it becomes an `OrderEvent` is `entrypoints/order_messages.py`;
the RabbitMQ plumbing (connection, queue declaration, acknowledgement, retries, redacted dead
letters) is `adapters/brokers/consumers.py`, built by `bootstrap.event_consumers`.
"""

from __future__ import annotations

import asyncio

from tillpoint.bootstrap import Container, event_consumers
from tillpoint.config import Settings
from tillpoint.entrypoints.order_messages import parse_order_created, parse_stock_confirmed
from tillpoint.service.consumers import Subscription


def subscriptions(settings: Settings) -> list[Subscription]:
    return [
        Subscription(
            "stock-confirmed",
            settings.stock_confirmed_queue,
            "order.stock-confirmed",
            parse_stock_confirmed,
        ),
        Subscription(
            "order-created", settings.order_created_queue, "order.created.v1", parse_order_created
        ),
    ]


class EventConsumers:
    """The worker's consumer service: runs the broker consumers of `subscriptions` until
    `stopping` is set (reconnecting with back-off), then drains the messages in flight."""

    def __init__(
        self,
        container: Container,
        *,
        subscriptions_: list[Subscription] | None = None,
        prefetch: int | None = None,
        retry_delay: float = 1.0,
    ) -> None:
        self.consumers = event_consumers(
            container,
            subscriptions_ or subscriptions(container.settings),
            prefetch=prefetch,
            retry_delay=retry_delay,
        )
        self.started = self.consumers.started

    async def run(self, stopping: asyncio.Event) -> None:
        await self.consumers.run(stopping)
