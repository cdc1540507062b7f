"""The mock gateway's dashboard (`POST /api/v1/mock/dashboard/{provider_payment_id}/{action}`):
a support agent acting in the provider's console. It changes the mock's own records only — the
mock's view (`MockGateway.payment`) shows the effect, tillpoint's payment stays as it was — and
tells tillpoint only when asked to, by the mock's usual signed webhook."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, SERVICE_KEY, headers, new_key
from tillpoint.adapters.db import tables as t
from tillpoint.domain.payment import ProviderStatus
from tillpoint.service.webhooks import process_due_webhooks


def dashboard(provider_payment_id: str, action: str) -> str:
    return f"/api/v1/mock/dashboard/{provider_payment_id}/{action}"


async def act(
    api: Api, provider_payment_id: str, action: str, body: Any = None, *, key: str = ADMIN_KEY
) -> httpx.Response:
    """The dashboard action, telling tillpoint nothing unless `body` names a `webhook`."""
    sent = {"webhook": "never", **(body or {})} if body is None or isinstance(body, dict) else body
    return await api.post(dashboard(provider_payment_id, action), sent, key=key)


async def stored_webhook_types(api: Api, provider_payment_id: str) -> list[str]:
    """The mock webhooks tillpoint has received about this payment, once the simulator has sent
    what it had (the database is shared with other tests: their payments' events are not ours)."""
    assert api.container.mock_webhooks is not None
    async with asyncio.timeout(10):
        await api.container.mock_webhooks.wait_idle()
    w = t.webhook_events
    async with api.container.engine.connect() as conn:
        rows = await conn.execute(
            sa.select(w.c.event_type).where(
                w.c.provider == "mock", w.c.provider_payment_id == provider_payment_id
            )
        )
        return sorted(r.event_type for r in rows)


async def test_a_refund_in_the_dashboard_shows_at_the_mock_and_not_in_tillpoint(api: Api) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]

    response = await act(api, pi, "refund", {"amount": "30.00", "reason": "goodwill"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["captured_amount"], body["refunded_amount"]) == (
        "CAPTURED",
        "100.00",
        "30.00",
    )
    assert body["payment_id"] == paid["payment_id"]
    [refund] = body["refunds"]
    assert (refund["amount"], refund["status"], refund["idempotency_key"]) == (
        "30.00",
        "REFUNDED",
        None,
    )
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert (view.refunded_minor, view.refunds[0].idempotency_key) == (3000, None)
    ours = await api.payment_state(paid["payment_id"])
    assert (ours["status"], ours["refunded_amount"]) == ("CAPTURED", "0.00")
    assert await stored_webhook_types(api, pi) == []  # "never": tillpoint is not told


async def test_refunding_the_rest_makes_it_refunded_and_more_is_refused(api: Api) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]
    assert (await act(api, pi, "refund", {"amount": "40.00"})).status_code == 200

    whole = await act(api, pi, "refund")  # no amount: what is left

    assert whole.status_code == 200, whole.text
    assert (whole.json()["status"], whole.json()["refunded_amount"]) == ("REFUNDED", "100.00")
    more = await act(api, pi, "refund", {"amount": "0.01"})
    assert_problem(more, 409, "invalid_state_transition")


async def test_a_refund_beyond_what_was_captured_is_refused(api: Api) -> None:
    paid = await api.confirmed("100.00")

    response = await act(api, paid["provider_payment_id"], "refund", {"amount": "100.01"})

    assert_problem(response, 409, "invalid_state_transition")
    view = await api.container.mock.payment(paid["provider_payment_id"])
    assert view is not None
    assert view.refunds == ()


async def test_a_held_payment_captured_in_the_dashboard(api: Api) -> None:
    held = await api.confirmed("100.00", capture_method="manual")
    pi = held["provider_payment_id"]

    response = await act(api, pi, "capture", {"amount": "60.00"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["captured_amount"], body["authorized_amount"]) == (
        "CAPTURED",
        "60.00",
        "0.00",
    )
    assert (await api.payment_state(held["payment_id"]))["status"] == "AUTHORIZED"
    again = await act(api, pi, "capture")
    assert_problem(again, 409, "invalid_state_transition")


async def test_a_held_payment_canceled_in_the_dashboard(api: Api) -> None:
    held = await api.confirmed("100.00", capture_method="manual")
    pi = held["provider_payment_id"]

    response = await act(api, pi, "cancel", {"reason": "customer asked"})

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["authorized_amount"]) == (
        "CANCELED",
        "0.00",
    )
    assert (await api.payment_state(held["payment_id"]))["status"] == "AUTHORIZED"
    assert_problem(await act(api, pi, "capture"), 409, "invalid_state_transition")


async def test_a_captured_payment_cannot_be_canceled(api: Api) -> None:
    paid = await api.confirmed("100.00")
    response = await act(api, paid["provider_payment_id"], "cancel")
    assert_problem(response, 409, "invalid_state_transition")


async def test_a_dispute_opened_in_the_dashboard(api: Api) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]
    before = api.container.deps.clock.now()

    response = await act(api, pi, "dispute", {"reason": "product_not_received"})

    assert response.status_code == 200, response.text
    [dispute] = response.json()["disputes"]
    assert (dispute["amount"], dispute["reason"], dispute["status"]) == (
        "100.00",
        "product_not_received",
        "needs_response",
    )
    due = datetime.fromisoformat(dispute["evidence_due_by"])
    assert due >= before + timedelta(days=7) - timedelta(seconds=1)
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert view.status is ProviderStatus.CAPTURED
    assert [d.status for d in view.disputes] == ["needs_response"]


async def test_a_dispute_is_announced_by_webhook_and_opens_one_in_tillpoint(api: Api) -> None:
    paid = await api.confirmed("100.00")

    response = await act(
        api, paid["provider_payment_id"], "dispute", {"amount": "30.00", "webhook": "now"}
    )

    assert response.status_code == 200, response.text
    assert await stored_webhook_types(api, paid["provider_payment_id"]) == ["payment.disputed"]
    inbox = api.container.webhooks
    assert inbox is not None
    await process_due_webhooks(deps=api.container.deps, inbox=inbox)
    state = await api.payment_state(paid["payment_id"])
    assert state["disputed_amount"] == "30.00"


async def test_the_default_is_to_send_the_webhook_now(api: Api) -> None:
    paid = await api.confirmed("100.00")

    response = await api.post(dashboard(paid["provider_payment_id"], "refund"), {}, key=ADMIN_KEY)

    assert response.status_code == 200, response.text
    assert await stored_webhook_types(api, paid["provider_payment_id"]) == ["refund.succeeded"]


async def test_webhook_now_sends_the_mock_s_signed_webhook(api: Api) -> None:
    paid = await api.confirmed("100.00")

    response = await act(
        api, paid["provider_payment_id"], "refund", {"amount": "10.00", "webhook": "now"}
    )

    assert response.status_code == 200, response.text
    assert await stored_webhook_types(api, paid["provider_payment_id"]) == ["refund.succeeded"]


async def test_only_an_admin_may_use_it(api: Api) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]

    as_service = await act(api, pi, "refund", key=SERVICE_KEY)
    as_customer = await act(api, pi, "refund", key=CUSTOMER_KEY)

    assert_problem(as_service, 403, "forbidden")
    assert_problem(as_customer, 404, "not_found")
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert view.refunds == ()


async def test_an_unknown_provider_payment_is_404(api: Api) -> None:
    response = await act(api, "mock_pi_nope", "refund")
    assert_problem(response, 404, "not_found")


async def test_an_unknown_action_or_a_malformed_amount_is_422(api: Api) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]
    assert_problem(await act(api, pi, "chargeback"), 422, "validation_error")
    assert_problem(await act(api, pi, "refund", {"amount": "1.001"}), 422, "validation_error")
    assert_problem(await act(api, pi, "refund", {"webhook": "soon"}), 422, "validation_error")


async def test_it_needs_an_idempotency_key_and_a_replay_acts_once(api: Api) -> None:
    paid = await api.confirmed("100.00")
    path = dashboard(paid["provider_payment_id"], "refund")
    missing = await api.client.post(path, json={"amount": "5.00"}, headers=headers(ADMIN_KEY))
    assert_problem(missing, 400, "idempotency_key_missing")

    key = new_key()
    first = await api.post(path, {"amount": "5.00"}, key=ADMIN_KEY, idem=key)
    again = await api.post(path, {"amount": "5.00"}, key=ADMIN_KEY, idem=key)

    assert first.status_code == again.status_code == 200
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    view = await api.container.mock.payment(paid["provider_payment_id"])
    assert view is not None
    assert [r.amount_minor for r in view.refunds] == [500]


async def test_after_a_cancel_in_the_dashboard_the_mock_refuses_tillpoint_s_capture(
    api: Api,
) -> None:
    """The mock answers from its own records, dashboard included, as a provider would."""
    held = await api.confirmed("100.00", capture_method="manual")
    pi = held["provider_payment_id"]
    assert (await act(api, pi, "cancel")).status_code == 200

    response = await api.post(f"/api/v1/payments/{held['payment_id']}/capture", {})

    assert_problem(response, 502, "provider_error")
    assert (await api.payment_state(held["payment_id"]))["status"] == "AUTHORIZED"
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert (view.status, view.captured_minor) == (ProviderStatus.CANCELED, 0)


async def test_after_a_full_refund_in_the_dashboard_the_mock_refuses_tillpoint_s_refund(
    api: Api,
) -> None:
    paid = await api.confirmed("100.00")
    pi = paid["provider_payment_id"]
    assert (await act(api, pi, "refund")).status_code == 200

    response = await api.post(
        f"/api/v1/payments/{paid['payment_id']}/refund", {"amount": "10.00"}, key=ADMIN_KEY
    )

    assert response.status_code == 201, response.text
    assert response.json()["status"] == "FAILED"
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert view.refunded_minor == 10_000
    assert [r.status for r in view.refunds if r.idempotency_key] == [ProviderStatus.FAILED]


async def test_after_a_capture_in_the_dashboard_the_mock_refuses_tillpoint_s_void(
    api: Api,
) -> None:
    held = await api.confirmed("100.00", capture_method="manual")
    pi = held["provider_payment_id"]
    assert (await act(api, pi, "capture")).status_code == 200

    response = await api.post(f"/api/v1/payments/{held['payment_id']}/void", {})

    assert_problem(response, 502, "provider_error")
    view = await api.container.mock.payment(pi)
    assert view is not None
    assert (view.status, view.captured_minor) == (ProviderStatus.CAPTURED, 10_000)
