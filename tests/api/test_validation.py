"""Bad input never becomes money: each refusal is a 422 (or the conflict API.md names)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.conftest import Api, assert_problem
from tests.conftest import ADMIN_KEY, SERVICE_KEY, headers, new_key
from tests.events.test_consumers import encode, stock_confirmed
from tests.security.scan import find_card_numbers
from tillpoint.entrypoints.order_messages import parse_order_created, parse_stock_confirmed
from tillpoint.service.consumers import RejectedMessage

PAN = "4242424242424242"

BAD_MONEY: list[tuple[Any, str]] = [
    (10.5, "USD"),  # a JSON float literal
    (10, "USD"),  # a JSON integer: still not a decimal string
    ("1.005", "USD"),
    ("10.5", "JPY"),
    ("1000.0", "JPY"),
    ("1.2345", "KWD"),
    ("0", "USD"),
    ("0.00", "USD"),
    ("-1.00", "USD"),
    ("abc", "USD"),
    ("1e3", "USD"),
    ("", "USD"),
    (" 1.00", "USD"),
    ("1,00", "USD"),
    ("NaN", "USD"),
    ("10.00", "usd"),
    ("10.00", "ZZZ"),
    ("10.00", "US"),
]


@pytest.mark.parametrize(("amount", "currency"), BAD_MONEY)
async def test_an_order_with_bad_money_is_422(api: Api, amount: Any, currency: str) -> None:
    response = await api.post(
        "/api/v1/orders",
        {"order_id": f"ord-{new_key()}", "buyer_id": "b", "amount": amount, "currency": currency},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"]
    assert all({"loc", "msg"} <= e.keys() for e in problem["errors"])


@pytest.mark.parametrize(("amount", "currency"), BAD_MONEY[:8])
async def test_a_payment_with_bad_money_is_422(api: Api, amount: Any, currency: str) -> None:
    order_id = await api.order()
    response = await api.post(
        "/api/v1/payments",
        {"order_id": order_id, "amount": amount, "currency": currency},
    )
    problem = assert_problem(response, 422, "validation_error")
    assert problem["errors"]


async def test_a_bad_amount_is_not_stored_under_its_idempotency_key(api: Api) -> None:
    """Body validation 422 is not stored: the corrected retry with the same key proceeds."""
    key, order_id = new_key(), f"ord-{new_key()}"
    body = {"order_id": order_id, "buyer_id": "b", "amount": "1.005", "currency": "USD"}
    assert (await api.post("/api/v1/orders", body, idem=key)).status_code == 422
    fixed = await api.post("/api/v1/orders", {**body, "amount": "1.00"}, idem=key)
    assert fixed.status_code == 201, fixed.text


class TestRawCardData:
    @pytest.mark.parametrize(
        "method",
        [
            {"number": PAN, "exp_month": 12, "exp_year": 2030},
            {"card_number": PAN},
            {"token": "pm_card_visa", "cvc": "123"},
            {"last4": "4242", "CVV": "123"},
            {"token": PAN},
            {"token": "4242 4242 4242 4242"},
        ],
    )
    async def test_is_refused_on_create_and_never_echoed(
        self, api: Api, method: dict[str, Any]
    ) -> None:
        order_id = await api.order()
        response = await api.post(
            "/api/v1/payments",
            {"order_id": order_id, "amount": "100.00", "currency": "USD", "payment_method": method},
        )
        assert_problem(response, 422, "raw_card_data_rejected")
        assert PAN not in response.text
        assert "4242 4242 4242 4242" not in response.text
        assert "123" not in response.text.replace(response.headers["x-request-id"], "")
        payments = await api.get(f"/api/v1/orders/{order_id}/payments")
        assert payments.json()["data"] == []

    async def test_is_refused_on_confirm(self, api: Api) -> None:
        created = await api.payment(await api.order())
        response = await api.confirm(
            created["payment_id"], {"payment_method": {"number": PAN, "cvc": "999"}}
        )
        assert_problem(response, 422, "raw_card_data_rejected")
        assert PAN not in response.text
        assert (await api.payment_state(created["payment_id"]))["status"] == "INITIATED"

    async def test_a_card_is_returned_only_as_display_data(self, api: Api) -> None:
        method = {
            "token": "pm_card_visa",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
            "holder_name": "Ada Lovelace",
        }
        paid = await api.confirmed(method=method)
        assert paid["payment_method"] == {
            "type": "card",
            "brand": "visa",
            "last4": "4242",
            "exp_month": 12,
            "exp_year": 2030,
        }


class TestCardNumbersInFreeText:
    """A Luhn-valid run of 12-19 digits in any free-text field is a card number: refused before
    anything is stored, the idempotency record included, and never echoed."""

    @pytest.mark.parametrize(
        "method",
        [
            {"token": "pm_card_visa", "brand": PAN},
            {"token": "tok_4242424242424242"},
            {"token": "pm_card_visa", "holder_name": "Ada 5555-5555-5555-4444"},
            {"token": "pm_card_visa", "holder_name": "4111 1111 1111 1111"},
            {"token": "pm_card_visa", "last4": "378282246310005"},
            {"token": "pm_card_visa", "nickname": "my card 4111111111111111"},
            {"token": "pm_card_visa", PAN: "a card number as a key"},
        ],
    )
    async def test_in_a_payment_method_is_refused_and_the_key_stays_free(
        self, api: Api, method: dict[str, Any]
    ) -> None:
        order_id, key = await api.order(), new_key()
        body = {"order_id": order_id, "amount": "100.00", "currency": "USD"}
        response = await api.post("/api/v1/payments", {**body, "payment_method": method}, idem=key)
        assert_problem(response, 422, "raw_card_data_rejected")
        assert not find_card_numbers(response.text)
        assert (await api.get(f"/api/v1/orders/{order_id}/payments")).json()["data"] == []
        # nothing was stored under the key: the corrected request with it goes through
        fixed = await api.post(
            "/api/v1/payments", {**body, "payment_method": {"token": "pm_card_visa"}}, idem=key
        )
        assert fixed.status_code == 201, fixed.text

    async def test_in_a_confirm_payment_method_is_refused(self, api: Api) -> None:
        created = await api.payment(await api.order())
        response = await api.confirm(
            created["payment_id"], {"payment_method": {"token": "pm_card_visa", "brand": PAN}}
        )
        assert_problem(response, 422, "raw_card_data_rejected")
        assert PAN not in response.text
        assert (await api.payment_state(created["payment_id"]))["status"] == "INITIATED"

    async def test_in_a_buyer_id_is_refused(self, api: Api) -> None:
        key = new_key()
        body = {"order_id": f"ord-{new_key()}", "amount": "1.00", "currency": "USD"}
        response = await api.post("/api/v1/orders", {**body, "buyer_id": f"b-{PAN}"}, idem=key)
        assert_problem(response, 422, "raw_card_data_rejected")
        fixed = await api.post("/api/v1/orders", {**body, "buyer_id": "b-1"}, idem=key)
        assert fixed.status_code == 201, fixed.text

    async def test_in_a_refund_void_or_mock_complete_body_is_refused(self, api: Api) -> None:
        paid = await api.confirmed()
        authorized = await api.confirmed(capture_method="manual")
        refund = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/refund",
            {"amount": "1.00", "reason": "card 4242 4242 4242 4242 was stolen"},
            key=ADMIN_KEY,
        )
        assert_problem(refund, 422, "raw_card_data_rejected")
        void = await api.post(
            f"/api/v1/payments/{authorized['payment_id']}/void", {"reason": f"dup of {PAN}"}
        )
        assert_problem(void, 422, "raw_card_data_rejected")
        complete = await api.post(
            f"/api/v1/payments/{paid['payment_id']}/mock/complete",
            {"result": "FAIL", "failure_code": PAN},
        )
        assert_problem(complete, 422, "raw_card_data_rejected")
        assert (await api.payment_state(paid["payment_id"]))["refunded_amount"] == "0.00"
        assert (await api.payment_state(authorized["payment_id"]))["status"] == "AUTHORIZED"

    async def test_as_a_quote_amount_is_refused(self, api: Api) -> None:
        order_id = await api.order()
        item = {"variant_id": "v-1", "quantity": 1, "unit_amount": "100.00"}
        response = await api.post(
            "/api/v1/checkout/quote",
            {"order_id": order_id, "items": [item], "shipping_amount": PAN},
        )
        assert_problem(response, 422, "raw_card_data_rejected")

    @pytest.mark.parametrize(("sent", "kept"), [("VISA", "visa"), ("American Express", "amex")])
    async def test_a_brand_is_normalised(self, api: Api, sent: str, kept: str) -> None:
        paid = await api.confirmed(method={"token": "pm_card_visa", "brand": sent})
        assert paid["payment_method"]["brand"] == kept

    @pytest.mark.parametrize(
        "method",
        [
            {"token": "pm_card_visa", "brand": "bitcoin"},
            {"token": "pm_card_visa", "last4": "424"},
            {"token": "pm_card_visa", "last4": "42a2"},
            {"token": "pm_card_visa", "exp_month": 13},
            {"token": "pm_card_visa", "exp_year": 1999},
        ],
    )
    async def test_display_data_outside_its_rules_is_422(
        self, api: Api, method: dict[str, Any]
    ) -> None:
        response = await api.post(
            "/api/v1/payments",
            {
                "order_id": await api.order(),
                "amount": "100.00",
                "currency": "USD",
                "payment_method": method,
            },
        )
        assert_problem(response, 422, "validation_error")


def order_created(order_id: str, method: dict[str, Any] | None) -> bytes:
    """An `order.created.v1` body: its payment method has the API's field names."""
    body: dict[str, Any] = {
        "event_id": f"evt-{new_key()}",
        "order_id": order_id,
        "buyer_id": "buyer-7",
        "amount": "100.00",
        "currency": "USD",
        "autopay": True,
    }
    return encode({**body, "payment_method": method} if method is not None else body)


def with_card(field: str, value: Any) -> bytes:
    """An `order.stock-confirmed` body whose `paymentMethod` has `field` set to `value`."""
    body = stock_confirmed(f"ord-{new_key()}", "4242")
    body["paymentMethod"][field] = value
    return encode(body)


# (the API's and order.created.v1's field, order.stock-confirmed's field or None, a value one past
# the limit): the limits of domain/cards.py, the same on every path in.
OVER_THE_LIMIT: list[tuple[str, str | None, Any]] = [
    ("holder_name", "cardHolderName", "A" * 129),
    ("token", None, "tok_" + "a" * 252),
    ("brand", "cardBrand", "v" * 33),
    ("last4", "cardLastFour", "42424"),
    ("exp_month", "expirationMonth", 13),
    ("exp_month", "expirationMonth", 0),
    ("exp_year", "expirationYear", 2101),
    ("exp_year", "expirationYear", 1999),
]


class TestOneSetOfLimits:
    """An API request and a consumed order message are held to the same payment-method limits
    and the same order-id rule: what one refuses, the other refuses too."""

    @pytest.mark.parametrize(
        ("field", "message_field", "value"),
        OVER_THE_LIMIT,
        ids=[f"{f}={v if isinstance(v, int) else len(v)}" for f, _, v in OVER_THE_LIMIT],
    )
    async def test_a_card_field_over_its_limit_is_refused_by_the_api_and_the_consumers(
        self, api: Api, field: str, message_field: str | None, value: Any
    ) -> None:
        method = {"token": "pm_card_visa", field: value}
        response = await api.post(
            "/api/v1/payments",
            {
                "order_id": await api.order(),
                "amount": "100.00",
                "currency": "USD",
                "payment_method": method,
            },
        )
        assert_problem(response, 422, "validation_error")
        with pytest.raises(RejectedMessage, match=rf"^validation_error: payment_method\.{field}"):
            parse_order_created(order_created(f"ord-{new_key()}", method), "order-created")
        if message_field is not None:
            with pytest.raises(
                RejectedMessage, match=rf"^validation_error: paymentMethod\.{message_field}"
            ):
                parse_stock_confirmed(with_card(message_field, value), "stock-confirmed")

    async def test_a_holder_name_at_the_limit_is_accepted_by_both(self, api: Api) -> None:
        name = "A" * 128
        created = await api.payment(
            await api.order(), method={"token": "pm_card_visa", "holder_name": name}
        )
        assert created["status"] == "INITIATED"
        method = {"token": "pm_card_visa", "holder_name": name}
        event = parse_order_created(order_created(f"ord-{new_key()}", method), "order-created")
        assert event.payment_method.holder_name == name
        confirmed = parse_stock_confirmed(with_card("cardHolderName", name), "stock-confirmed")
        assert confirmed.payment_method.holder_name == name

    @pytest.mark.parametrize("order_id", ["o" * 65, "ord 1", "ord/1", ""])
    async def test_an_order_id_outside_its_rule_is_refused_by_the_api_and_the_consumers(
        self, api: Api, order_id: str
    ) -> None:
        response = await api.post(
            "/api/v1/orders",
            {"order_id": order_id, "buyer_id": "b", "amount": "100.00", "currency": "USD"},
        )
        assert_problem(response, 422, "validation_error")
        with pytest.raises(RejectedMessage, match=r"^validation_error: order_id"):
            parse_order_created(order_created(order_id, None), "order-created")
        with pytest.raises(RejectedMessage, match=r"^validation_error: orderId"):
            parse_stock_confirmed(encode(stock_confirmed(order_id, "4242")), "stock-confirmed")


class TestOrderAndPaymentRules:
    async def test_an_amount_other_than_the_order_is_422(self, api: Api) -> None:
        order_id = await api.order("100.00", "USD")
        for amount, currency in (("99.99", "USD"), ("100.00", "EUR")):
            response = await api.post(
                "/api/v1/payments", {"order_id": order_id, "amount": amount, "currency": currency}
            )
            assert_problem(response, 422, "amount_mismatch")

    async def test_an_unknown_order_is_404(self, api: Api) -> None:
        response = await api.post(
            "/api/v1/payments", {"order_id": "no-such-order", "amount": "1.00", "currency": "USD"}
        )
        assert_problem(response, 404, "not_found")
        assert_problem(await api.get("/api/v1/orders/no-such-order"), 404, "not_found")
        assert_problem(await api.get("/api/v1/payments/pay_nope"), 404, "not_found")

    async def test_a_second_active_payment_is_409(self, api: Api) -> None:
        order_id = await api.order()
        await api.payment(order_id)
        response = await api.post(
            "/api/v1/payments", {"order_id": order_id, "amount": "100.00", "currency": "USD"}
        )
        assert_problem(response, 409, "active_payment_exists")

    async def test_a_paid_order_is_not_payable(self, api: Api) -> None:
        paid = await api.confirmed()
        response = await api.post(
            "/api/v1/payments",
            {"order_id": paid["order_id"], "amount": "100.00", "currency": "USD"},
        )
        assert_problem(response, 409, "order_not_payable")

    async def test_a_duplicate_order_id_is_409(self, api: Api) -> None:
        order_id = await api.order()
        response = await api.post(
            "/api/v1/orders",
            {"order_id": order_id, "buyer_id": "other", "amount": "5.00", "currency": "USD"},
        )
        assert_problem(response, 409, "order_exists")
        assert (await api.order_state(order_id))["amount"] == "100.00"

    @pytest.mark.parametrize("order_id", ["", "has space", "x" * 65, "semi;colon"])
    async def test_a_malformed_order_id_is_422(self, api: Api, order_id: str) -> None:
        response = await api.post(
            "/api/v1/orders",
            {"order_id": order_id, "buyer_id": "b", "amount": "1.00", "currency": "USD"},
        )
        assert_problem(response, 422, "validation_error")

    async def test_the_amount_changes_only_while_payment_is_pending(self, api: Api) -> None:
        order_id = await api.order("100.00")
        patched = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": "120.50"}, headers=headers(SERVICE_KEY)
        )
        assert patched.status_code == 200, patched.text
        assert (patched.json()["amount"], patched.json()["status"]) == ("120.50", "PAYMENT_PENDING")

        created = await api.payment(order_id, "120.50")
        assert (await api.confirm(created["payment_id"])).status_code == 200
        late = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": "1.00"}, headers=headers(SERVICE_KEY)
        )
        assert_problem(late, 409, "invalid_state_transition")
        assert (await api.order_state(order_id))["amount"] == "120.50"

    async def test_the_amount_is_fixed_while_a_payment_is_active(self, api: Api) -> None:
        """Otherwise the order would be PAID at an amount its payment never charged."""
        order_id = await api.order("100.00")
        created = await api.payment(order_id)
        patched = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": "120.00"}, headers=headers(SERVICE_KEY)
        )
        assert_problem(patched, 409, "active_payment_exists")
        assert (await api.confirm(created["payment_id"])).json()["captured_amount"] == "100.00"
        assert (await api.order_state(order_id))["amount"] == "100.00"

    async def test_the_amount_may_change_after_a_failed_payment(self, api: Api) -> None:
        order_id = await api.order("100.00")
        declined = await api.payment(order_id, method={"token": "pm_card_chargeDeclined"})
        assert (await api.confirm(declined["payment_id"])).status_code == 402
        patched = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": "90.00"}, headers=headers(SERVICE_KEY)
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["amount"] == "90.00"

    @pytest.mark.parametrize("amount", ["1.001", "", "0", "-5", "x"])
    async def test_a_bad_patch_amount_is_422(self, api: Api, amount: str) -> None:
        order_id = await api.order("100.00")
        response = await api.client.patch(
            f"/api/v1/orders/{order_id}", json={"amount": amount}, headers=headers(SERVICE_KEY)
        )
        assert_problem(response, 422, "validation_error")
        assert (await api.order_state(order_id))["amount"] == "100.00"


class TestExactDecimals:
    @pytest.mark.parametrize(
        ("sent", "currency", "shown"),
        [
            ("1000", "JPY", "1000"),
            ("1.250", "KWD", "1.250"),
            ("1.25", "KWD", "1.250"),
            ("7", "BHD", "7.000"),
            ("10", "USD", "10.00"),
            ("10.5", "EUR", "10.50"),
        ],
    )
    async def test_amounts_round_trip_with_the_currency_decimals(
        self, api: Api, sent: str, currency: str, shown: str
    ) -> None:
        order_id = await api.order(sent, currency)
        assert (await api.order_state(order_id))["amount"] == shown
        paid = await api.confirmed(sent, currency, capture_method="manual")
        assert (paid["amount"], paid["authorized_amount"], paid["currency"]) == (
            shown,
            shown,
            currency,
        )
        zero = "0" if currency == "JPY" else "0." + "0" * (len(shown.split(".")[1]))
        assert paid["captured_amount"] == zero
        captured = await api.post(f"/api/v1/payments/{paid['payment_id']}/capture")
        assert captured.json()["captured_amount"] == shown
