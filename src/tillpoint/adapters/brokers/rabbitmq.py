"""RabbitMQ publisher: a robust aio-pika connection, a durable topic exchange, persistent
messages and publisher confirms (API.md "Published events").

The connection is opened on first use, so a worker starts (and keeps creating nothing but
backlog) while the broker is down; the robust connection reconnects in the background and
restores the channel and exchange. A publish that the broker does not confirm in time raises,
and the relay retries it later.

Nothing published is lost for want of a binding: the events exchange has an alternate exchange
`<exchange>.unrouted` (fanout) with a durable queue of the same name, where RabbitMQ puts every
message no binding matched (docs/events.md, docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractRobustConnection,
)
from aio_pika.exceptions import ChannelPreconditionFailed

from tillpoint.service.ports import OutboxMessage, PublishFailed

log = structlog.get_logger("tillpoint.broker")


AlternateExchangeMode = Literal["argument", "policy"]


def unrouted_name(exchange: str) -> str:
    """The alternate exchange of `exchange`, and the durable queue bound to it."""
    return f"{exchange}.unrouted"


async def declare_events_exchange(
    connection: AbstractConnection,
    channel: AbstractChannel,
    name: str,
    *,
    alternate: AlternateExchangeMode = "argument",
) -> AbstractExchange:
    """Declare the durable topic exchange `name` with `<name>.unrouted` as its alternate
    exchange, and that fanout exchange with its durable queue, so unroutable messages are kept.

    RabbitMQ refuses to redeclare an existing exchange with other arguments
    (PRECONDITION_FAILED, which closes the channel). The arguments are therefore tried on a
    throwaway channel first: an exchange made before the alternate exchange existed is used as
    it is, with one error line saying how to migrate (docs/operations.md). With
    `alternate="policy"` the operator's policy sets `alternate-exchange` instead (no argument).
    """
    unrouted = unrouted_name(name)
    fallback = await channel.declare_exchange(unrouted, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(unrouted, durable=True)
    await queue.bind(fallback)
    with_argument: dict[str, Any] = {"alternate-exchange": unrouted}
    without: dict[str, Any] = {}
    preferred, other = (
        (with_argument, without) if alternate == "argument" else (without, with_argument)
    )
    chosen = preferred
    probe = await connection.channel()
    try:
        try:
            await probe.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True, arguments=preferred or None
            )
        except ChannelPreconditionFailed:
            chosen = other
    finally:
        with contextlib.suppress(Exception):
            await probe.close()
    if chosen is not preferred:
        if alternate == "argument":
            log.error(
                "broker.exchange_without_alternate_exchange",
                exchange=name,
                alternate_exchange=unrouted,
                detail="the exchange was declared without `alternate-exchange`, so messages no "
                "queue is bound for are dropped; set a policy and TILLPOINT_EVENTS_ALTERNATE_"
                "EXCHANGE=policy, or re-create the exchange (docs/operations.md)",
            )
        else:
            log.info("broker.exchange_has_alternate_argument", exchange=name)
    return await channel.declare_exchange(
        name, aio_pika.ExchangeType.TOPIC, durable=True, arguments=chosen or None
    )


class RabbitPublisher:
    def __init__(
        self,
        url: str,
        exchange: str,
        *,
        alternate: AlternateExchangeMode = "argument",
        confirm_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect_interval: float = 2.0,
    ) -> None:
        self.url = url
        self.exchange_name = exchange
        self.alternate: AlternateExchangeMode = alternate
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
                    exchange = await declare_events_exchange(
                        connection, channel, self.exchange_name, alternate=self.alternate
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
                    mandatory=False,  # unroutable messages go to the alternate exchange
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
