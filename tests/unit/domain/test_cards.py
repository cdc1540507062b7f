"""The card-number rule: a Luhn-valid run of 12-19 digits, however it is written or hidden."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.security import scan
from tillpoint.domain.cards import (
    REDACTED,
    card_brand,
    carries_raw_card_data,
    find_card_numbers,
    luhn_valid,
    mask_card_numbers,
    redact_card_data,
    redact_card_text,
)

FULL_WIDTH = "4111111111111111".translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
TEST_CARDS = ["4111111111111111", "4242424242424242", "5555555555554444", "378282246310005"]


def check_digit(body: str) -> str:
    """The digit that makes `body + digit` pass Luhn."""
    for digit in "0123456789":
        if luhn_valid(body + digit):
            return digit
    raise AssertionError("unreachable")


@st.composite
def card_numbers(draw: st.DrawFn) -> str:
    length = draw(st.integers(12, 19))
    body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
    return body + check_digit(body)


@st.composite
def written(draw: st.DrawFn, number: str) -> str:
    """`number` with spaces or dashes (1-3 of them) between some of its digits."""
    out = number[0]
    for digit in number[1:]:
        out += draw(st.sampled_from(["", "", "", " ", "-", " - ", "  "])) + digit
    return out


# Text around a number that does not touch it with a digit, a separator or a long hex token.
SURROUNDING = st.text(
    st.characters(codec="utf-8", categories=["L", "P", "S", "Zs"], exclude_characters="-"),
    max_size=30,
).map(lambda s: s.strip())


@settings(max_examples=300)
@given(data=st.data(), number=card_numbers())
def test_any_luhn_valid_number_in_any_text_is_found(data: st.DataObject, number: str) -> None:
    text = data.draw(written(number))
    before = data.draw(SURROUNDING.map(lambda s: s + " " if s else s))
    after = data.draw(SURROUNDING.map(lambda s: " " + s if s else s))
    embedded = before + text + after
    assert text in find_card_numbers(embedded)
    assert carries_raw_card_data({"holder_name": embedded})
    masked = mask_card_numbers(embedded)
    assert not find_card_numbers(masked)
    assert REDACTED in masked


@settings(max_examples=300)
@given(number=card_numbers(), change=st.integers(1, 9), position=st.integers(0, 18))
def test_a_number_that_fails_luhn_is_not_a_card(number: str, change: int, position: int) -> None:
    at = position % len(number)
    broken = number[:at] + str((int(number[at]) + change) % 10) + number[at + 1 :]
    assert not luhn_valid(broken)
    assert find_card_numbers(f"order {broken} shipped") == []


@settings(max_examples=500)
@given(
    text=st.text(
        st.sampled_from([*"0123456789", *"0123456789", " ", "-", " ", "a", "x", "_", "/"]),
        max_size=80,
    )
)
def test_the_rule_agrees_with_the_test_suites_own_scanner(text: str) -> None:
    """Two implementations written apart find the same card numbers in digit-heavy text."""
    found = ["".join(c for c in n if c.isdigit()) for n in find_card_numbers(text)]
    assert sorted(found) == sorted(scan.find_card_numbers(text))


@given(digits=st.text("0123456789", min_size=1, max_size=11))
def test_fewer_than_12_digits_is_never_a_card(digits: str) -> None:
    assert find_card_numbers(f"ref {digits}") == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("4111111111111111", "4111111111111111"),
        ("tok_4242424242424242", "4242424242424242"),
        ("pm-4242424242424242", "4242424242424242"),
        ("4242 4242 4242 4242", "4242 4242 4242 4242"),
        ("5555-5555-5555-4444", "5555-5555-5555-4444"),
        ("amex 378282246310005 exp", "378282246310005"),
        ("4111111111111111 123", "4111111111111111"),  # a number and its CVC
        ("ref 12 4111 1111 1111 1111", "4111 1111 1111 1111"),
        (FULL_WIDTH, FULL_WIDTH),
    ],
)
def test_examples_are_found(text: str, found: str) -> None:
    assert found in find_card_numbers(text)


@pytest.mark.parametrize(
    "text",
    [
        "pm_card_visa",
        "1234",
        "4111111111111112",  # fails Luhn
        "2026-11-23T10:30:00Z",
        "+1 555-555-0100",
        "req_0f1e2d3c4b5a69788796a5b4c3d2e1f0",
        "sha 1234567890123456abcdef0123456789abcdef0123456789abcdef01234567",
        "a1b2c3d4-1234-4111-9111-111111111111",  # a UUID
        # Random hex references with a long run of digits (a mock id once redacted so its
        # webhook never found the payment).
        "mock_pi_cb8aff673615737833067547",
        "mock_ch_48486704264736249ab1e2",
    ],
)
def test_identifiers_and_ordinary_text_are_not_cards(text: str) -> None:
    assert find_card_numbers(text) == []


class TestCarriesRawCardData:
    """One rule for the API and the consumers: no card number or CVC, under any spelling."""

    @pytest.mark.parametrize(
        "value",
        [
            {"number": "4242424242424242"},
            {"cardNumber": "x"},
            {"CVV2": "123"},
            {"security_code": "123"},
            {"card-security-code": "123"},
            {"token": "4242 4242 4242 4242"},
            {"token": "tok_4242424242424242"},
            {"brand": "4111111111111111"},
            {"holder_name": "Ada 5555-5555-5555-4444"},
            {"paymentMethod": {"cardHolderName": "378282246310005"}},
            {"items": [{"note": "4111111111111111"}]},
            {"4111111111111111": "as a key"},
            {"amount": 4111111111111111},
            {"amount": 4111111111111111.0},
            {"order_id": "ord-1", "meta": {"cvc": None}},
            {"payment_method": {"number": "1234"}},
            {"paymentMethod": {"pan": "x"}},
            {"card": {"number": "x"}},
        ],
    )
    def test_refuses(self, value: dict[str, object]) -> None:
        assert carries_raw_card_data(value)

    @pytest.mark.parametrize(
        "value",
        [
            {"token": "pm_card_visa"},
            {"last4": "4242", "brand": "visa", "exp_month": 12, "exp_year": 2030},
            {"token": "1234"},
            {},
            {"orderId": 4111111111111111},  # identifiers are not free text
            {"order_id": "4111111111111111", "eventId": "4242424242424242"},
            {"autopay": True, "amount": "12.50"},
            {"items": [{"number": 2, "variant": "v-1"}]},  # `number` is a card's only in a card
        ],
    )
    def test_accepts(self, value: dict[str, object]) -> None:
        assert not carries_raw_card_data(value)

    def test_a_payment_method_itself_has_no_number_field(self) -> None:
        assert carries_raw_card_data({"number": "x", "exp_month": 12}, in_card=True)


def test_a_redacted_copy_keeps_no_card_data() -> None:
    message = {
        "eventId": "evt-1",
        "orderId": 4111111111111111,
        "paymentMethod": {
            "cardNumber": "4242424242424242",
            "cvv": 123,
            "cardHolderName": "Ada 5555 5555 5555 4444",
            "cardLastFour": "4242",
        },
    }
    copy, changed = redact_card_data(message)
    assert changed
    assert copy == {
        "eventId": "evt-1",
        "orderId": REDACTED,
        "paymentMethod": {
            "cardNumber": REDACTED,
            "cvv": REDACTED,
            "cardHolderName": f"Ada {REDACTED}",
            "cardLastFour": "4242",
        },
    }
    assert redact_card_data({"a": "b", "n": 3}) == ({"a": "b", "n": 3}, False)


def test_text_that_is_not_json_is_redacted_too() -> None:
    text = "{cardNumber: 4111111111111111, cvv: 123, note: 'ok'}"
    assert (
        redact_card_text(text) == f'{{cardNumber: "{REDACTED}", cvv: "{REDACTED}", note: \'ok\'}}'
    )


@pytest.mark.parametrize(
    ("name", "brand"),
    [
        ("visa", "visa"),
        ("VISA", "visa"),
        ("MasterCard", "mastercard"),
        ("American Express", "amex"),
        ("cartes-bancaires", "cartes_bancaires"),
        ("unknown", "unknown"),
        ("4111111111111111", None),
        ("bitcoin", None),
    ],
)
def test_brands_come_from_a_fixed_set(name: str, brand: str | None) -> None:
    assert card_brand(name) == brand


@pytest.mark.parametrize("number", TEST_CARDS)
def test_the_test_cards_pass_luhn(number: str) -> None:
    assert luhn_valid(number)
