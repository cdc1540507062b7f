"""The mock gateway's webhook simulator: announces outcomes the way a real provider does.

When the mock decides an outcome that a real provider would only announce later (an async card
settling, a 3-D Secure challenge completed), the simulator signs a Standard Webhooks event and
POSTs it to `TILLPOINT_MOCK_WEBHOOK_URL` after `TILLPOINT_MOCK_DELAY_MS` — or, with no URL,
hands the signed bytes to the in-process receiver, which verifies them like any delivery.

Like a provider's test mode, the mock can rehearse the deliveries real providers make
(`TILLPOINT_MOCK_WEBHOOK_FAULTS`), so a shop sees its integration cope with them before it
meets them in production: `duplicate` delivers every event twice, `reorder` announces a capture
as authorized-then-captured and delivers the two in reverse, `late` delivers after an extra
delay. They change only the mock's own deliveries; no real provider is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import httpx
import structlog
from standardwebhooks import Webhook

from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, ProviderStatus

log = structlog.get_logger("tillpoint.mock.webhooks")

EVENT_TYPES: Final[Mapping[ProviderStatus, str]] = {
    ProviderStatus.AUTHORIZED: "payment.authorized",
    ProviderStatus.CAPTURED: "payment.captured",
    ProviderStatus.FAILED: "payment.failed",
    ProviderStatus.CANCELED: "payment.canceled",
    ProviderStatus.REFUNDED: "refund.succeeded",
    ProviderStatus.DISPUTED: "payment.disputed",
}
FAULTS: Final = frozenset({"duplicate", "reorder", "late"})
DELIVERY_ATTEMPTS: Final = 5

# Receives signed bytes and headers; raises if the delivery was refused.
Receiver = Callable[[bytes, Mapping[str, str]], Awaitable[None]]


class MockWebhookSimulator:
    def __init__(
        self,
        *,
        secret: str,
        url: str = "",
        delay_ms: int = 0,
        faults: frozenset[str] = frozenset(),
        receiver: Receiver | None = None,
        late_seconds: float = 2.0,
    ) -> None:
        unknown = faults - FAULTS
        if unknown:
            raise ValueError(f"unknown mock webhook faults: {sorted(unknown)}")
        if not url and receiver is None:
            raise ValueError("the simulator needs a URL or an in-process receiver")
        self._signer = Webhook(secret)
        self._url = url
        self._delay = delay_ms / 1000
        self._faults = faults
        self._receiver = receiver
        self._late = late_seconds
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- building events --------------------------------------------------------------------

    def events_for(self, result: Outcome) -> list[dict[str, Any]]:
        """The events a provider would send for this outcome, in the order it would send them."""
        event_type = EVENT_TYPES.get(result.status)
        if event_type is None or not result.provider_payment_id:
            return []
        types = [event_type]
        if result.status is ProviderStatus.CAPTURED and "reorder" in self._faults:
            types = ["payment.authorized", event_type]
        data: dict[str, Any] = {
            "provider_payment_id": result.provider_payment_id,
            "amount": Money(result.amount_minor, result.currency).format(),
            "currency": result.currency,
        }
        if result.failure_code:
            data["failure_code"] = result.failure_code
        if result.status is ProviderStatus.REFUNDED and result.reference:
            data["provider_refund_id"] = result.reference
        if result.status is ProviderStatus.DISPUTED:  # a dispute the dashboard opened
            data.pop("failure_code", None)
            data |= {
                "provider_dispute_id": result.reference,
                "reason": result.failure_code or "fraudulent",
                "status": "needs_response",
            }
        created = int(datetime.now(UTC).timestamp())
        return [
            {"id": new_id("evt"), "type": kind, "created": created, "data": dict(data)}
            for kind in types
        ]

    def sign(self, event: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The exact bytes and Standard Webhooks headers of one delivery (signed now: the
        receiver checks the timestamp against its own clock)."""
        body = json.dumps(event, separators=(",", ":"))
        now = datetime.now(UTC)
        headers = {
            "content-type": "application/json",
            "webhook-id": str(event["id"]),
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(str(event["id"]), now, body),
        }
        return body.encode(), headers

    # -- delivering ---------------------------------------------------------------------------

    def listener(self, idempotency_key: str, result: Outcome, *, late: bool = False) -> None:
        """A `MockGateway` outcome listener: schedules the delivery, never blocks the caller.
        `late` (a dashboard action told late) adds the `late` fault's extra delay to this one."""
        events = self.events_for(result)
        if not events:
            return
        if "reorder" in self._faults:
            events.reverse()
        if "duplicate" in self._faults:
            events = [e for event in events for e in (event, event)]
        late = late or "late" in self._faults
        task = asyncio.get_running_loop().create_task(self._deliver_all(events, late=late))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.debug("mock.webhook_scheduled", idempotency_key=idempotency_key, events=len(events))

    async def _deliver_all(self, events: list[dict[str, Any]], *, late: bool) -> None:
        delay = self._delay + (self._late if late else 0.0)
        if delay:
            await asyncio.sleep(delay)
        for event in events:
            await self._deliver(event)

    async def _deliver(self, event: Mapping[str, Any]) -> None:
        """Retried with backoff like a provider's delivery, then given up (reconciliation and
        the janitor still find the truth)."""
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            body, headers = self.sign(event)
            try:
                await self._send(body, headers)
            except Exception as exc:
                log.warning(
                    "mock.webhook_delivery_failed",
                    event_id=event["id"],
                    attempt=attempt,
                    error=f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            log.info("mock.webhook_delivered", event_id=event["id"], type=event["type"])
            return

    async def _send(self, body: bytes, headers: Mapping[str, str]) -> None:
        if not self._url:
            assert self._receiver is not None
            await self._receiver(body, headers)
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=10.0)
        response = await self._http.post(self._url, content=body, headers=dict(headers))
        response.raise_for_status()

    async def wait_idle(self) -> None:
        """Wait for every scheduled delivery (bound it with `asyncio.timeout`)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self, grace: float = 2.0) -> None:
        """Deliver what is scheduled (for up to `grace` seconds), then cancel the rest: a mock
        payment's webhook is not lost to a clean shutdown."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.wait_idle()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
