"""RabbitMQ publisher: a robust aio-pika connection, a durable topic exchange, persistent
messages and publisher confirms (API.md "Published events").

The connection is opened on first use, so a worker starts (and keeps creating nothing but
backlog) while the broker is down; the robust connection reconnects in the background and
restores the channel and exchange. A publish that the broker does not confirm in time raises,
and the relay retries it later.
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection

from tillpoint.service.outbox import OutboxMessage, PublishFailed

log = structlog.get_logger("tillpoint.broker")


class RabbitPublisher:
    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        confirm_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 2.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.confirm_timeout = confirm_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_interval = reconnect_interval
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> AbstractExchange:
        async with self._lock:
            if self._exchange is None:
                connection = await aio_pika.connect_robust(
                    self.url,
                    timeout=self.connect_timeout,
                    reconnect_interval=self.reconnect_interval,
                    client_properties={"connection_name": "tillpoint-outbox"},
                )
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.declare_exchange(
                        self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except BaseException:
                    await connection.close()
                    raise
                self._connection, self._channel, self._exchange = connection, channel, exchange
                log.info("broker.connected", exchange=self.exchange_name)
            return self._exchange

    async def publish(self, message: OutboxMessage) -> None:
        try:
            async with asyncio.timeout(self.confirm_timeout + self.connect_timeout):
                exchange = await self._ready()
                if self._connection is not None and not self._connection.connected.is_set():
                    raise PublishFailed("the broker connection is being restored")
                await exchange.publish(
                    aio_pika.Message(
                        message.body.encode(),
                        message_id=message.event_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        type=message.message_type,
                        headers={"type": message.message_type, "sequence": message.sequence},
                    ),
                    routing_key=message.routing_key,
                    mandatory=False,  # no queue bound yet is the subscribers' business
                    timeout=self.confirm_timeout,
                )
        except PublishFailed:
            raise
        except Exception as exc:
            raise PublishFailed(f"{type(exc).__name__}: {exc}") from exc

    async def healthy(self) -> bool:
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._ready()
        except Exception:
            return False
        return self._connection is not None and self._connection.connected.is_set()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._channel = self._exchange = None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
