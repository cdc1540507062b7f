"""Money: the exponent table, and parse/format as exact inverses that refuse excess precision."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import CURRENCY_EXPONENTS, MAX_MINOR, Money, exponent_of

# Stripe's lists, as NOTES.md quotes them.
ZERO_DECIMAL = [
    "BIF",
    "CLP",
    "DJF",
    "GNF",
    "JPY",
    "KMF",
    "KRW",
    "MGA",
    "PYG",
    "RWF",
    "UGX",
    "VND",
    "VUV",
    "XAF",
    "XOF",
    "XPF",
]
THREE_DECIMAL = ["BHD", "JOD", "KWD", "OMR", "TND"]
SAMPLE = ["JPY", "KRW", "USD", "EUR", "KWD", "BHD"]

currencies = st.sampled_from(SAMPLE)


class TestExponentTable:
    @pytest.mark.parametrize("code", ZERO_DECIMAL)
    def test_zero_decimal_currencies(self, code: str) -> None:
        assert exponent_of(code) == 0

    @pytest.mark.parametrize("code", THREE_DECIMAL)
    def test_three_decimal_currencies(self, code: str) -> None:
        assert exponent_of(code) == 3

    @pytest.mark.parametrize("code", ["USD", "EUR", "GBP", "CHF", "SEK", "CAD", "AUD"])
    def test_common_currencies_have_two(self, code: str) -> None:
        assert exponent_of(code) == 2

    def test_only_the_listed_currencies_differ_from_two(self) -> None:
        odd = {code: e for code, e in CURRENCY_EXPONENTS.items() if e != 2}
        assert odd == {**dict.fromkeys(ZERO_DECIMAL, 0), **dict.fromkeys(THREE_DECIMAL, 3)}

    @pytest.mark.parametrize("code", ["usd", "Usd", "ZZZ", "US", "USDX", ""])
    def test_unknown_or_lower_case_codes_are_refused(self, code: str) -> None:
        with pytest.raises(ValidationFailed):
            exponent_of(code)
        with pytest.raises(ValidationFailed):
            Money.parse("1", code)


class TestParseAndFormat:
    @settings(max_examples=200)
    @given(minor=st.integers(0, MAX_MINOR), currency=currencies)
    def test_parse_undoes_format(self, minor: int, currency: str) -> None:
        money = Money(minor, currency)
        text = money.format()
        decimals = text.partition(".")[2]
        assert len(decimals) == exponent_of(currency)
        assert Money.parse(text, currency, allow_zero=True) == money

    @settings(max_examples=200)
    @given(
        whole=st.integers(0, 10**9),
        currency=currencies,
        extra=st.integers(1, 4),
        data=st.data(),
    )
    def test_excess_precision_is_always_refused(
        self, whole: int, currency: str, extra: int, data: st.DataObject
    ) -> None:
        places = exponent_of(currency) + extra
        frac = data.draw(st.text("0123456789", min_size=places, max_size=places))
        with pytest.raises(ValidationFailed, match="decimals"):
            Money.parse(f"{whole}.{frac}", currency, allow_zero=True)

    @settings(max_examples=100)
    @given(whole=st.integers(0, 10**6), frac=st.text("0123456789", max_size=3), currency=currencies)
    def test_fewer_decimals_are_padded(self, whole: int, frac: str, currency: str) -> None:
        exponent = exponent_of(currency)
        if len(frac) > exponent or (whole == 0 and not frac.strip("0")):
            return
        text = f"{whole}.{frac}" if frac else str(whole)
        money = Money.parse(text, currency)
        assert money.minor == whole * 10**exponent + int(frac.ljust(exponent, "0") or "0")

    @pytest.mark.parametrize(
        ("text", "currency", "minor"),
        [("49.99", "USD", 4999), ("1000", "JPY", 1000), ("1.250", "KWD", 1250), ("0.1", "EUR", 10)],
    )
    def test_known_values(self, text: str, currency: str, minor: int) -> None:
        assert Money.parse(text, currency) == Money(minor, currency)

    @pytest.mark.parametrize(
        "text", ["0", "0.00", "-1", "-0.01", "+1", "1e2", "1.", ".5", "01", " 1", "1 ", "", "½"]
    )
    def test_zero_signs_and_odd_spellings_are_refused(self, text: str) -> None:
        with pytest.raises(ValidationFailed):
            Money.parse(text, "USD")

    def test_too_large_is_refused(self) -> None:
        with pytest.raises(ValidationFailed, match="too large"):
            Money.parse(str(MAX_MINOR + 1), "JPY")

    def test_a_float_is_never_money(self) -> None:
        with pytest.raises((ValidationFailed, TypeError)):
            Money.parse(10.5, "USD")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Money(10.5, "USD")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Money(True, "USD")

    def test_arithmetic_refuses_mixed_currencies(self) -> None:
        assert Money(150, "USD") - Money(50, "USD") == Money(100, "USD")
        with pytest.raises(ValueError, match="currency mismatch"):
            _ = Money(1, "USD") + Money(1, "EUR")
        with pytest.raises(ValueError, match="currency mismatch"):
            _ = Money(1, "USD") < Money(1, "EUR")
