"""Money as integer minor units of an ISO 4217 currency. No float ever touches it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from tillpoint.domain.errors import ValidationFailed

# Exponents of the currencies Stripe settles in. Zero- and three-decimal ones are listed
# explicitly; everything else in ISO 4217 that we accept uses two decimals.
_ZERO_DECIMAL: Final = frozenset(
    [
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
)
_THREE_DECIMAL: Final = frozenset(["BHD", "JOD", "KWD", "OMR", "TND"])
_TWO_DECIMAL: Final = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CNY",
        "COP",
        "CRC",
        "CVE",
        "CZK",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GIP",
        "GMD",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JMD",
        "KES",
        "KGS",
        "KHR",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "MAD",
        "MDL",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "SAR",
        "SBD",
        "SCR",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "STD",
        "SZL",
        "THB",
        "TJS",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "USD",
        "UYU",
        "UZS",
        "WST",
        "XCD",
        "YER",
        "ZAR",
        "ZMW",
    ]
)

CURRENCY_EXPONENTS: Final[Mapping[str, int]] = {
    **{code: 2 for code in _TWO_DECIMAL},
    **{code: 0 for code in _ZERO_DECIMAL},
    **{code: 3 for code in _THREE_DECIMAL},
}

_AMOUNT = re.compile(r"(?P<whole>0|[1-9][0-9]*)(?:\.(?P<frac>[0-9]+))?")
# Large enough for any real payment, small enough for a signed 64-bit column.
MAX_MINOR: Final = 10**15
# The database's BIGINT range: no Money outside it can ever be built, so none reaches a column.
MAX_STORABLE: Final = 2**63 - 1
# The longest amount string worth reading: MAX_MINOR's digits, a point and three decimals, with
# room to spare. Longer text is refused before `int()` sees it (Python refuses to convert more
# than 4300 digits, and converting that many is slow anyway).
MAX_AMOUNT_TEXT: Final = 32


def exponent_of(currency: str) -> int:
    """The number of decimals of `currency`; unknown or lower-case codes are refused."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise ValidationFailed(
            "currency", f"unsupported currency {currency!r}: use an ISO 4217 code"
        ) from None


@dataclass(frozen=True, slots=True, order=False)
class Money:
    """An amount in minor units (cents, yen, fils) of one currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        exponent_of(self.currency)
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise TypeError("Money.minor must be an int")
        if not -MAX_STORABLE <= self.minor <= MAX_STORABLE:
            raise ValidationFailed("amount", "amount is out of range")

    @classmethod
    def parse(cls, text: str, currency: str, *, allow_zero: bool = False) -> Money:
        """Parse a decimal string in major units (`"49.99"` USD, `"1000"` JPY, `"1.250"` KWD).

        Rejects more decimals than the currency has, signs, exponents, blanks and zero.
        """
        exponent = exponent_of(currency)
        if not isinstance(text, str):
            raise ValidationFailed("amount", 'amount must be a decimal string such as "49.99"')
        if len(text) > MAX_AMOUNT_TEXT:
            raise ValidationFailed("amount", "amount is too large")
        match = _AMOUNT.fullmatch(text)
        if match is None:
            raise ValidationFailed(
                "amount", f'amount {text!r} is not a positive decimal string such as "49.99"'
            )
        frac = match.group("frac") or ""
        if len(frac) > exponent:
            raise ValidationFailed(
                "amount", f"{currency} allows {exponent} decimals; {text!r} has {len(frac)}"
            )
        minor = int(match.group("whole")) * 10**exponent + int(frac.ljust(exponent, "0") or "0")
        if minor <= 0 and not allow_zero:
            raise ValidationFailed("amount", "amount must be greater than zero")
        if minor > MAX_MINOR:
            raise ValidationFailed("amount", "amount is too large")
        return cls(minor, currency)

    @property
    def exponent(self) -> int:
        return exponent_of(self.currency)

    def format(self) -> str:
        """The amount in major units with exactly the currency's decimals (`"100.00"`)."""
        exponent = self.exponent
        sign = "-" if self.minor < 0 else ""
        whole, frac = divmod(abs(self.minor), 10**exponent)
        return f"{sign}{whole}.{frac:0{exponent}d}" if exponent else f"{sign}{whole}"

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} vs {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor + other.minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.minor - other.minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor < other.minor

    def __le__(self, other: Money) -> bool:
        self._same(other)
        return self.minor <= other.minor

    def __gt__(self, other: Money) -> bool:
        self._same(other)
        return self.minor > other.minor

    def __ge__(self, other: Money) -> bool:
        self._same(other)
        return self.minor >= other.minor

    def __str__(self) -> str:
        return f"{self.format()} {self.currency}"
