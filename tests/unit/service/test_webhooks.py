"""Webhook signals (service/webhooks.py) against fakes: a verified event is stored, then the
worker applies its signal through the same rule as every other outcome."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.fakes import World
from tests.unit.service.steps import API, confirmed, eur
from tillpoint.domain.errors import ProviderFailure
from tillpoint.domain.order import OrderStatus
from tillpoint.domain.payment import (
    OperationKind,
    OperationStatus,
    PaymentStatus,
    ProviderStatus,
    RefundStatus,
)
from tillpoint.service.payments import capture_payment, refund_payment
from tillpoint.service.ports import (
    ParsedEvent,
    ProviderTimeout,
    Signal,
    WebhookStatus,
    WebhookVerifier,
)
from tillpoint.service.webhooks import WebhookInbox, process_due_webhooks, receive_webhook

S = PaymentStatus
P = ProviderStatus


class StubVerifier:
    """Trusts every body: `{"id", "type", "kind"?, "payment"?, "minor"?, "refund"?}`."""

    provider = "fake"

    def verify(self, body: bytes, headers: Mapping[str, str]) -> ParsedEvent:
        return self.parse(body)

    def parse(self, body: bytes) -> ParsedEvent:
        data: dict[str, Any] = json.loads(body)
        signal = None
        if "kind" in data:
            signal = Signal(
                kind=ProviderStatus(data["kind"]),
                provider_payment_id=data["payment"],
                amount=eur(data["minor"]) if "minor" in data else None,
                provider_refund_id=data.get("refund"),
            )
        return ParsedEvent(data["id"], data["type"], signal)

    def redact(self, headers: Mapping[str, str]) -> dict[str, str]:
        return dict(headers)


VERIFIER: WebhookVerifier = StubVerifier()
INBOX = WebhookInbox(verifiers={"fake": VERIFIER}, jitter=lambda: 0.0)


async def deliver(
    w: World, event_id: str, kind: ProviderStatus | None, about: str | None, **fields: Any
) -> bool:
    """The provider delivers an event about its payment `about`; True for a duplicate."""
    body: dict[str, Any] = {"id": event_id, "type": f"payment.{kind or 'noted'}", **fields}
    if kind is not None:
        body.update(kind=kind.value, payment=about)
    return await receive_webhook("fake", json.dumps(body).encode(), {}, deps=w.deps, inbox=INBOX)


async def process(w: World) -> list[WebhookStatus]:
    await process_due_webhooks(deps=w.deps, inbox=INBOX)
    return [e.status for e in w.store.webhooks.values()]


class TestWebhookSignal:
    async def test_a_capture_signal_settles_the_open_capture(self, w: World) -> None:
        payment = await confirmed(w, manual=True)
        w.provider.will("capture", ProviderTimeout("slow"))
        with pytest.raises(ProviderFailure):
            await capture_payment(payment.id, None, API, deps=w.deps)
        capture = w.store.operations_of(payment.id)[-1]
        assert (capture.kind, capture.status) == (OperationKind.CAPTURE, OperationStatus.UNKNOWN)

        assert not await deliver(w, "evt_1", P.CAPTURED, payment.provider_payment_id, minor=1_000)
        assert w.store.payment(payment.id).status is S.AUTHORIZED  # stored, not yet applied
        assert await process(w) == [WebhookStatus.PROCESSED]

        stored = w.store.payment(payment.id)
        assert (stored.status, stored.captured_minor) == (S.CAPTURED, 1_000)
        settled = w.store.operations[capture.id]
        assert (settled.status, settled.next_check_at) == (OperationStatus.SUCCEEDED, None)
        succeeded = w.store.messages(payment.id)[-1]
        assert succeeded.routing_key == "payment.succeeded"
        assert json.loads(succeeded.body)["transaction_id"] == capture.id
        assert w.store.orders[payment.order_id].status is OrderStatus.PAID
        types = w.store.event_types(payment.id)
        assert types[-2:] == ["WEBHOOK_RECEIVED", "CAPTURE_SUCCEEDED"]
        assert w.telemetry.counted("payment_webhook_total", status="PROCESSED") == 1

    async def test_a_stale_signal_is_recorded_and_changes_nothing(self, w: World) -> None:
        payment = await confirmed(w)  # captured
        messages = w.store.messages(payment.id)

        await deliver(w, "evt_late", P.AUTHORIZED, payment.provider_payment_id, minor=1_000)
        assert await process(w) == [WebhookStatus.IGNORED]

        stored = w.store.payment(payment.id)
        assert (stored.status, stored.captured_minor) == (S.CAPTURED, 1_000)
        assert w.store.event_types(payment.id)[-2:] == ["WEBHOOK_RECEIVED", "STALE_SIGNAL_IGNORED"]
        assert w.store.messages(payment.id) == messages

    async def test_a_duplicate_delivery_is_answered_without_applying_it(self, w: World) -> None:
        payment = await confirmed(w, manual=True)

        assert not await deliver(w, "evt_1", P.CANCELED, payment.provider_payment_id)
        assert await deliver(w, "evt_1", P.CANCELED, payment.provider_payment_id)

        assert len(w.store.webhooks) == 1
        assert await process(w) == [WebhookStatus.PROCESSED]
        assert w.store.payment(payment.id).status is S.CANCELED
        assert w.store.routing_keys(payment.id).count("payment.canceled") == 1

    async def test_an_event_we_have_nothing_to_do_for_is_ignored(self, w: World) -> None:
        payment = await confirmed(w)

        await deliver(w, "evt_note", None, payment.provider_payment_id)

        assert await process(w) == [WebhookStatus.IGNORED]
        assert "WEBHOOK_RECEIVED" not in w.store.event_types(payment.id)

    async def test_a_signal_before_our_own_record_waits_for_its_next_attempt(
        self, w: World
    ) -> None:
        await deliver(w, "evt_early", P.CAPTURED, "fp_not_yet_known")
        assert await process(w) == [WebhookStatus.FAILED]

        [event] = w.store.webhooks.values()
        assert event.attempt_count == 1
        assert event.last_error is not None
        assert event.last_error.startswith("PaymentNotKnownYet")
        assert event.next_attempt_at == w.clock.now() + INBOX.backoff(1)
        w.clock.advance(timedelta(seconds=1))
        assert await process(w) == [WebhookStatus.FAILED]
        [event] = w.store.webhooks.values()
        assert event.attempt_count == 1  # not due yet: not attempted again
        w.clock.advance(INBOX.backoff(1))
        await process(w)
        [event] = w.store.webhooks.values()
        assert event.attempt_count == 2

    async def test_a_refund_signal_settles_the_refund_that_timed_out(self, w: World) -> None:
        payment = await confirmed(w)
        w.provider.will("refund", ProviderTimeout("slow"))
        with pytest.raises(ProviderFailure):
            await refund_payment(payment.id, None, None, API, deps=w.deps)

        await deliver(
            w, "evt_refund", P.REFUNDED, payment.provider_payment_id, minor=1_000, refund="re_9"
        )
        assert await process(w) == [WebhookStatus.PROCESSED]

        [refund] = w.store.refunds_of(payment.id)
        assert (refund.status, refund.provider_refund_id) == (RefundStatus.SUCCEEDED, "re_9")
        assert w.store.payment(payment.id).status is S.REFUNDED
        assert not w.store.operations_of(payment.id)[-1].open
        assert w.store.orders[payment.order_id].status is OrderStatus.REFUNDED
