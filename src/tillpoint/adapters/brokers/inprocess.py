"""The embedded broker: no server needed. Every published event is logged (`event.published`),
so `tillpoint serve` on the embedded defaults shows what a real broker would carry."""

from __future__ import annotations

import structlog

from tillpoint.service.ports import OutboxMessage

log = structlog.get_logger("tillpoint.broker")


class InProcessBroker:
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

    async def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None
