"""Manual capture, partial capture, several partial refunds and the limits around them."""

from __future__ import annotations

import sqlalchemy as sa

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY
from tillpoint.adapters.db import tables as t


async def capture(api: Api, payment_id: str, amount: str | None = None) -> dict[str, object]:
    response = await api.post(
        f"/api/v1/payments/{payment_id}/capture", {} if amount is None else {"amount": amount}
    )
    return {"status": response.status_code, "body": response.json(), "response": response}


class TestCaptureThenRefund:
    async def test_partial_capture_then_partial_refunds_down_to_refunded(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        pid, order_id = held["payment_id"], held["order_id"]

        too_much = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": "100.01"})
        assert_problem(too_much, 409, "amount_exceeds_capturable")
        assert (await api.payment_state(pid))["status"] == "AUTHORIZED"

        captured = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": "80.00"})
        assert captured.status_code == 200, captured.text
        body = captured.json()
        assert body["status"] == "CAPTURED"
        assert (body["authorized_amount"], body["captured_amount"]) == ("100.00", "80.00")
        assert (await api.order_state(order_id))["status"] == "PAID"

        first = await api.post(
            f"/api/v1/payments/{pid}/refund", {"amount": "30.00", "reason": "dented"}, key=ADMIN_KEY
        )
        assert first.status_code == 201, first.text
        refund = first.json()
        assert refund["refund_id"].startswith("re_")
        assert (refund["status"], refund["amount"], refund["currency"]) == (
            "SUCCEEDED",
            "30.00",
            "USD",
        )
        assert refund["reason"] == "dented"
        assert refund["provider_refund_id"]
        assert refund["processed_at"] is not None
        state = await api.payment_state(pid)
        assert (state["status"], state["refunded_amount"]) == ("PARTIALLY_REFUNDED", "30.00")
        assert (await api.order_state(order_id))["status"] == "PARTIALLY_REFUNDED"

        second = await api.post(
            f"/api/v1/payments/{pid}/refund", {"amount": "20.00"}, key=ADMIN_KEY
        )
        assert second.status_code == 201, second.text
        state = await api.payment_state(pid)
        assert (state["status"], state["refunded_amount"]) == ("PARTIALLY_REFUNDED", "50.00")
        assert (await api.order_state(order_id))["status"] == "PARTIALLY_REFUNDED"

        # 30.00 of the 80.00 captured is left: the 100.00 authorized does not count
        over = await api.post(f"/api/v1/payments/{pid}/refund", {"amount": "30.01"}, key=ADMIN_KEY)
        assert_problem(over, 409, "amount_exceeds_refundable")
        assert (await api.payment_state(pid))["refunded_amount"] == "50.00"

        rest = await api.post(f"/api/v1/payments/{pid}/refund", {}, key=ADMIN_KEY)
        assert rest.status_code == 201, rest.text
        assert rest.json()["amount"] == "30.00"
        state = await api.payment_state(pid)
        assert (state["status"], state["captured_amount"], state["refunded_amount"]) == (
            "REFUNDED",
            "80.00",
            "80.00",
        )
        assert (await api.order_state(order_id))["status"] == "REFUNDED"

        nothing_left = await api.post(
            f"/api/v1/payments/{pid}/refund", {"amount": "0.01"}, key=ADMIN_KEY
        )
        assert_problem(nothing_left, 409, "amount_exceeds_refundable")
        assert (await api.payment_state(pid))["refunded_amount"] == "80.00"

    async def test_one_full_refund_refunds_payment_and_order(self, api: Api) -> None:
        paid = await api.confirmed()
        response = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund", None, key=ADMIN_KEY
        )
        assert response.status_code == 201, response.text
        assert response.json()["amount"] == "100.00"
        assert (await api.payment_state(paid["payment_id"]))["status"] == "REFUNDED"
        assert (await api.order_state(paid["order_id"]))["status"] == "REFUNDED"

    async def test_capture_without_amount_takes_everything_authorized(self, api: Api) -> None:
        held = await api.confirmed("49.99", capture_method="manual")
        response = await api.post(f"/api/v1/payments/{held['payment_id']}/capture")
        assert response.status_code == 200, response.text
        assert response.json()["captured_amount"] == "49.99"

    async def test_a_second_capture_is_refused(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        pid = held["payment_id"]
        first = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": "10.00"})
        assert first.status_code == 200, first.text
        second = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": "10.00"})
        assert_problem(second, 409, "invalid_state_transition")
        assert (await api.payment_state(pid))["captured_amount"] == "10.00"

    async def test_refund_before_capture_is_refused(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        response = await api.post(
            f"/api/v1/payments/{held['payment_id']}/refund", {"amount": "1.00"}, key=ADMIN_KEY
        )
        assert_problem(response, 409, "invalid_state_transition")

    async def test_an_invalid_capture_amount_is_422(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        pid = held["payment_id"]
        for amount in ("80.001", "0", "-1.00", "abc"):
            response = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": amount})
            assert_problem(response, 422, "validation_error")
        float_amount = await api.post(f"/api/v1/payments/{pid}/capture", {"amount": 80.0})
        assert_problem(float_amount, 422, "validation_error")
        assert (await api.payment_state(pid))["status"] == "AUTHORIZED"

    async def test_an_invalid_refund_amount_is_422(self, api: Api) -> None:
        paid = await api.confirmed()
        response = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund", {"amount": "1.001"}, key=ADMIN_KEY
        )
        assert_problem(response, 422, "validation_error")


class TestVoid:
    async def test_void_of_an_authorized_payment_cancels_it(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        response = await api.post(
            f"/api/v1/payments/{held['payment_id']}/void", {"reason": "out of stock"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELED"
        assert response.json()["captured_amount"] == "0.00"
        # keep_pending: the order may still be paid with a new payment
        assert (await api.order_state(held["order_id"]))["status"] == "PAYMENT_PENDING"
        again = await api.payment(held["order_id"])
        assert again["status"] == "INITIATED"

    async def test_void_after_capture_is_refused(self, api: Api) -> None:
        paid = await api.confirmed()
        response = await api.post(f"/api/v1/payments/{paid['payment_id']}/void", {})
        assert_problem(response, 409, "invalid_state_transition")
        assert (await api.payment_state(paid["payment_id"]))["status"] == "CAPTURED"
        assert (await api.order_state(paid["order_id"]))["status"] == "PAID"

    async def test_capture_after_void_is_refused(self, api: Api) -> None:
        held = await api.confirmed(capture_method="manual")
        pid = held["payment_id"]
        assert (await api.post(f"/api/v1/payments/{pid}/void")).status_code == 200
        response = await api.post(f"/api/v1/payments/{pid}/capture", key=SERVICE_KEY)
        assert_problem(response, 409, "invalid_state_transition")

    async def test_void_of_an_initiated_payment_needs_no_provider(self, api: Api) -> None:
        order_id = await api.order()
        created = await api.payment(order_id)
        response = await api.post(f"/api/v1/payments/{created['payment_id']}/void")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "CANCELED"
        [entry] = await api.ledger(order_id)
        # Recorded as a finished void that never reached the provider (so a retry of the same
        # request finds it), and the mock gateway's own ledger saw nothing.
        [void] = entry["transactions"]
        assert (void["kind"], void["status"]) == ("VOID", "SUCCEEDED")
        assert void["provider_reference"] is None
        ledger = t.mock_gateway_ledger
        async with api.container.engine.connect() as conn:
            seen = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(ledger)
                .where(ledger.c.payment_id == created["payment_id"])
            )
        assert seen == 0
