"""Every mock test card gives the outcome API.md promises at confirm, in both its forms."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem

FORMS = ["token", "last4"]


def method(form: str, token: str, last4: str) -> dict[str, Any]:
    return {"token": token} if form == "token" else {"last4": last4, "brand": "visa"}


@pytest.mark.parametrize("form", FORMS)
class TestSuccess:
    async def test_automatic_capture_is_captured_and_the_order_paid(
        self, api: Api, form: str
    ) -> None:
        paid = await api.confirmed(method=method(form, "pm_card_visa", "4242"))
        assert paid["status"] == "CAPTURED"
        assert paid["captured_amount"] == paid["authorized_amount"] == "100.00"
        assert paid["provider_payment_id"]
        assert (await api.order_state(paid["order_id"]))["status"] == "PAID"

    async def test_manual_capture_stops_at_authorized(self, api: Api, form: str) -> None:
        held = await api.confirmed(
            method=method(form, "pm_card_visa", "4242"), capture_method="manual"
        )
        assert held["status"] == "AUTHORIZED"
        assert held["authorized_amount"] == "100.00"
        assert held["captured_amount"] == "0.00"
        assert (await api.order_state(held["order_id"]))["status"] == "PAYMENT_PENDING"

    async def test_an_unknown_card_succeeds(self, api: Api, form: str) -> None:
        """Any other token or last four; an unknown `pm_card_…` test token is refused instead
        (tests/api/test_hostile_input.py)."""
        paid = await api.confirmed(method=method(form, "tok_mastercard", "4444"))
        assert paid["status"] == "CAPTURED"


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("token", "last4", "code"),
    [
        ("pm_card_chargeDeclined", "0000", "card_declined"),
        ("pm_card_insufficientFunds", "1111", "insufficient_funds"),
        ("pm_card_expired", "2222", "expired_card"),
        ("pm_card_fraud", "3333", "fraud_suspected"),
    ],
)
async def test_a_decline_is_402_with_the_failed_payment(
    api: Api, form: str, token: str, last4: str, code: str
) -> None:
    order_id = await api.order()
    created = await api.payment(order_id, method=method(form, token, last4))
    response = await api.confirm(created["payment_id"])
    problem = assert_problem(response, 402, code)
    payment = problem["payment"]
    assert payment["payment_id"] == created["payment_id"]
    assert payment["status"] == "FAILED"
    assert payment["failure_code"] == code
    assert payment["failure_message"]
    assert payment["captured_amount"] == "0.00"
    assert (await api.payment_state(created["payment_id"]))["status"] == "FAILED"
    # keep_pending: the buyer may try again with another card
    assert (await api.order_state(order_id))["status"] == "PAYMENT_PENDING"
    retry = await api.payment(order_id)
    assert (await api.confirm(retry["payment_id"])).json()["status"] == "CAPTURED"


@pytest.mark.parametrize("form", FORMS)
async def test_three_d_secure_waits_for_the_customer_then_captures(api: Api, form: str) -> None:
    waiting = await api.confirmed(method=method(form, "pm_card_threeDSecure", "3155"))
    assert waiting["status"] == "REQUIRES_ACTION"
    assert waiting["next_action"]["type"] == "three_d_secure"
    assert (await api.order_state(waiting["order_id"]))["status"] == "PAYMENT_PENDING"

    done = await api.post(
        f"/api/v1/payments/{waiting['payment_id']}/mock/complete", {"result": "SUCCESS"}
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "CAPTURED"
    assert done.json()["next_action"] is None
    assert done.json()["captured_amount"] == "100.00"
    assert (await api.order_state(waiting["order_id"]))["status"] == "PAID"


@pytest.mark.parametrize("form", FORMS)
async def test_three_d_secure_can_fail_with_a_chosen_code(api: Api, form: str) -> None:
    waiting = await api.confirmed(method=method(form, "pm_card_threeDSecure", "3155"))
    done = await api.post(
        f"/api/v1/payments/{waiting['payment_id']}/mock/complete",
        {"result": "FAIL", "failure_code": "insufficient_funds"},
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "FAILED"
    assert done.json()["failure_code"] == "insufficient_funds"


@pytest.mark.parametrize("form", FORMS)
async def test_the_async_card_is_processing(api: Api, form: str) -> None:
    pending = await api.confirmed(method=method(form, "pm_card_async", "5555"))
    assert pending["status"] == "PROCESSING"
    assert pending["captured_amount"] == "0.00"
    assert (await api.order_state(pending["order_id"]))["status"] == "PAYMENT_PENDING"


@pytest.mark.parametrize("form", FORMS)
async def test_a_provider_timeout_leaves_processing_and_an_unknown_transaction(
    api: Api, form: str
) -> None:
    pending = await api.confirmed(method=method(form, "pm_card_timeout", "9999"))
    assert pending["status"] == "PROCESSING"
    [entry] = await api.ledger(pending["order_id"])
    [txn] = entry["transactions"]
    assert (txn["kind"], txn["status"], txn["amount"]) == ("SALE", "UNKNOWN", "100.00")
    assert txn["provider_idempotency_key"] == f"{pending['payment_id']}:sale:1"
    assert txn["next_check_at"] is not None  # the janitor will ask the provider
    assert (await api.order_state(pending["order_id"]))["status"] == "PAYMENT_PENDING"


async def test_mock_complete_after_authorization_is_refused(api: Api) -> None:
    paid = await api.confirmed()
    again = await api.post(
        f"/api/v1/payments/{paid['payment_id']}/mock/complete", {"result": "FAIL"}
    )
    assert_problem(again, 409, "invalid_state_transition")
    assert (await api.payment_state(paid["payment_id"]))["status"] == "CAPTURED"


async def test_confirming_twice_is_refused(api: Api) -> None:
    paid = await api.confirmed()
    assert_problem(await api.confirm(paid["payment_id"]), 409, "invalid_state_transition")


async def test_the_card_sent_at_confirm_wins(api: Api) -> None:
    order_id = await api.order()
    created = await api.payment(order_id, method={"token": "pm_card_visa"})
    response = await api.confirm(
        created["payment_id"], {"payment_method": {"token": "pm_card_chargeDeclined"}}
    )
    problem = assert_problem(response, 402, "card_declined")
    assert problem["payment"]["status"] == "FAILED"
