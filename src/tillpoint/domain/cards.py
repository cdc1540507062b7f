"""Card data we must never accept, store, return or publish, and how to recognise it.

A card number (PAN) is a Luhn-valid run of 12-19 digits, written plain or grouped by spaces or
dashes (`4242 4242 4242 4242`, `5555-5555-5555-4444`), wherever it sits in a string
(`tok_4242424242424242`). A CVC is recognised by its field name only: three digits are not
a secret on their own. Pure functions, no I/O: the API, the consumers, the dead-letter copies
and the logs all use these. The brands we know and the limits of a payment method's display
fields (brand, last four, expiry, holder name, token) are here too, for the same two edges.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, Final

MIN_DIGITS: Final = 12
MAX_DIGITS: Final = 19
REDACTED: Final = "[REDACTED]"

# Between two digits of one number: up to three spaces or dashes (`4111 - 1111 …`).
_SEPARATOR: Final = r"[\s\-\u2010-\u2015\u2212]"
_RUN: Final = re.compile(rf"\d(?:{_SEPARATOR}{{0,3}}\d)*")
_GROUP: Final = re.compile(r"\d+")
_HEXISH: Final = re.compile(r"[0-9A-Fa-f-]")
# Digits inside a longer hex token (a UUID, a hash) are part of an identifier, not a card:
# the token must reach this many characters past the digits and hold a hex letter.
_HEX_MARGIN: Final = 8
_GLUED: Final = 4

# Field names that hold a card number or a CVC, compared without case, `_`, `-` or spaces.
RAW_CARD_FIELDS: Final = frozenset(
    {
        "cardnumber",
        "primaryaccountnumber",
        "cvc",
        "cvv",
        "cvc2",
        "cvv2",
        "cardcvc",
        "cardcvv",
        "securitycode",
        "cardsecuritycode",
        "cardverificationvalue",
        "cardcode",
    }
)
# Names that mean a card number only inside a card or a payment method (`{"card": {"number":
# …}}`); elsewhere (`items[].number`) they are ordinary fields.
CARD_ONLY_FIELDS: Final = frozenset({"number", "pan"})
# Identifiers are not free text: they follow their own patterns, and a numeric order or event
# id (seed 004's ids are numbers) may be Luhn-valid by chance. Their values are not checked.
IDENTIFIER_FIELDS: Final = frozenset(
    {
        "orderid",
        "eventid",
        "messageid",
        "snapshotid",
        "variantid",
        "paymentid",
        "idempotencykey",
        "correlationid",
        "requestid",
    }
)

CARD_BRANDS: Final = frozenset(
    {
        "visa",
        "mastercard",
        "amex",
        "discover",
        "diners",
        "jcb",
        "unionpay",
        "maestro",
        "cartes_bancaires",
        "interac",
        "eftpos",
        "unknown",
    }
)
_BRAND_ALIASES: Final[Mapping[str, str]] = {
    "american_express": "amex",
    "americanexpress": "amex",
    "master_card": "mastercard",
    "mc": "mastercard",
    "diners_club": "diners",
    "dinersclub": "diners",
    "union_pay": "unionpay",
    "china_unionpay": "unionpay",
    "cb": "cartes_bancaires",
    "cartesbancaires": "cartes_bancaires",
}


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check every card number passes; `digits` holds only digits."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _in_hex_token(text: str, start: int, end: int) -> bool:
    # Looks at most 64 characters each way: enough to tell a UUID or a hash, and linear time
    # however long a hostile string is.
    begin, finish = start, end
    while begin > max(0, start - 64) and _HEXISH.match(text[begin - 1]):
        begin -= 1
    while finish < min(len(text), end + 64) and _HEXISH.match(text[finish]):
        finish += 1
    around = text[begin:start] + text[end:finish]
    if not any(c.isalpha() for c in around):
        return False
    # A random hex reference (`mock_pi_cb8aff673615737833067547`) may hold a long run of
    # digits with only a few hex letters beside it: a token of 16 or more characters with at
    # least `_GLUED` of them around the digits is an identifier too.
    return len(around) >= _HEX_MARGIN or (len(around) >= _GLUED and finish - begin >= 16)


_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # a digit's Luhn value when it is doubled


def _spans(text: str) -> Iterator[tuple[int, int]]:
    """Where card numbers are: every run of whole digit groups holding 12-19 digits that
    passes Luhn (so `4111111111111111 123`, a number and its CVC, is still found), unless
    it is a piece of a hex identifier such as a UUID or a hash.

    Linear in the length of `text`: each window's Luhn sum comes from prefix sums."""
    for run in _RUN.finditer(text):
        if len(run[0]) < MIN_DIGITS:
            continue
        groups = [(m.start() + run.start(), m.end() + run.start()) for m in _GROUP.finditer(run[0])]
        digits = [int(c) for begin, end in groups for c in text[begin:end]]
        if len(digits) < MIN_DIGITS or _in_hex_token(text, run.start(), run.end()):
            continue
        # sums[p][i]: Luhn values of digits[:i] for a window whose last digit has parity p
        sums: tuple[list[int], list[int]] = ([0], [0])
        for index, digit in enumerate(digits):
            for parity in (0, 1):
                value = digit if index % 2 == parity else _DOUBLED[digit]
                sums[parity].append(sums[parity][-1] + value)
        bounds = [0]  # digits before each group, then all of them
        for begin, end in groups:
            bounds.append(bounds[-1] + end - begin)
        for first, (start, _) in enumerate(groups):
            low = bisect.bisect_left(bounds, bounds[first] + MIN_DIGITS)
            high = bisect.bisect_right(bounds, bounds[first] + MAX_DIGITS)
            for after in range(low, high):  # the window is groups[first:after]
                stop = bounds[after]
                parity = (stop - 1) % 2
                if (sums[parity][stop] - sums[parity][bounds[first]]) % 10 == 0:
                    yield start, groups[after - 1][1]


def find_card_numbers(text: str) -> list[str]:
    """The card numbers in `text`, as written there."""
    return [text[start:end] for start, end in _spans(text)]


def mask_card_numbers(text: str, replacement: str = REDACTED) -> str:
    """`text` with every card number replaced (overlapping finds are merged)."""
    merged: list[list[int]] = []
    for start, end in sorted(_spans(text)):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    pieces, done = [], 0
    for start, end in merged:
        pieces += [text[done:start], replacement]
        done = end
    return "".join([*pieces, text[done:]])


def field_key(name: object) -> str:
    return re.sub(r"[\s_-]", "", str(name)).lower()


def is_raw_card_field(name: object, *, in_card: bool = True) -> bool:
    """A field for a card number or a CVC; `in_card`: inside a card or a payment method."""
    key = field_key(name)
    return key in RAW_CARD_FIELDS or (in_card and key in CARD_ONLY_FIELDS)


def _holds_a_card(name: object) -> bool:
    key = field_key(name)
    return "card" in key or "paymentmethod" in key or key == "method"


def _scalar_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    return None


def carries_raw_card_data(
    value: Any, *, identifiers: frozenset[str] = IDENTIFIER_FIELDS, in_card: bool = False
) -> bool:
    """True when `value` (a parsed JSON document, at any depth) holds a card-number or CVC
    field, or a card number in any key, string or number outside the identifier fields.
    `in_card`: `value` is itself a card or a payment method. Walks without recursion, so no
    nesting depth makes it fail."""
    pending: list[tuple[Any, bool]] = [(value, in_card)]
    while pending:
        current, card = pending.pop()
        if isinstance(current, Mapping):
            for key, item in current.items():
                if is_raw_card_field(key, in_card=card) or find_card_numbers(str(key)):
                    return True
                nested = isinstance(item, Mapping | list | tuple)
                if field_key(key) in identifiers and not nested:
                    continue
                pending.append((item, card or _holds_a_card(key)))
        elif isinstance(current, list | tuple):
            pending.extend((item, card) for item in current)
        else:
            text = _scalar_text(current)
            if text is not None and find_card_numbers(text):
                return True
    return False


def redact_card_data(value: Any, *, in_card: bool = False) -> tuple[Any, bool]:
    """A copy of `value` with card-number and CVC fields replaced by `[REDACTED]` and card
    numbers masked in every key and string (identifiers included), and whether anything
    changed. Numbers that are card numbers become `[REDACTED]` too."""
    if isinstance(value, Mapping):
        changed = False
        copy: dict[str, Any] = {}
        for key, item in value.items():
            new_key = mask_card_numbers(str(key))
            if is_raw_card_field(key, in_card=in_card):
                new_item, item_changed = REDACTED, True
            else:
                nested = in_card or _holds_a_card(key)
                new_item, item_changed = redact_card_data(item, in_card=nested)
            changed |= item_changed or new_key != str(key)
            copy[new_key] = new_item
        return copy, changed
    if isinstance(value, list | tuple):
        pairs = [redact_card_data(item, in_card=in_card) for item in value]
        return [item for item, _ in pairs], any(changed for _, changed in pairs)
    if isinstance(value, str):
        masked = redact_card_text(value)
        return masked, masked != value
    if isinstance(value, bytes):
        decoded = value.decode("utf-8", errors="replace")
        masked = redact_card_text(decoded)
        return (masked.encode(), True) if masked != decoded else (value, False)
    text = _scalar_text(value)
    if text is not None and find_card_numbers(text):
        return REDACTED, True
    return value, False


# `name: value` / `"name": "value"` / `name=value` in text that is not JSON.
_FIELD_VALUE: Final = re.compile(
    r"""(?P<key>["']?(?P<name>[A-Za-z][\w\- ]{0,39}?)["']?\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&}\]]+)"""
)


def redact_card_text(text: str) -> str:
    """`text` (not necessarily JSON) with card numbers masked and the values of card-number
    and CVC fields (`cvv: 123`, `"cardNumber": "…"`, `cvc=123`) replaced."""

    def field(match: re.Match[str]) -> str:
        if is_raw_card_field(match["name"]):
            return f'{match["key"]}"{REDACTED}"'
        return match[0]

    return mask_card_numbers(_FIELD_VALUE.sub(field, text))


def redact_card_json(body: bytes) -> tuple[bytes, bool]:
    """What a refused message or a stored webhook may keep of `body`: card-number and CVC
    fields replaced by `[REDACTED]` and card numbers masked in every key and string, JSON or
    not. The body unchanged (and False) when it holds no card data."""
    try:
        copy, changed = redact_card_data(json.loads(body))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # not JSON, or too deep
        text = body.decode("utf-8", errors="replace")
        redacted = redact_card_text(text)
        return (redacted.encode(), True) if redacted != text else (body, False)
    if not changed:
        return body, False
    return json.dumps(copy, separators=(",", ":"), ensure_ascii=False).encode(), True


def card_brand(name: str) -> str | None:
    """The brand in our fixed set (`visa`, `mastercard`, `amex`, …) that `name` spells, in any
    case and with spaces, dashes or underscores; None when it is none of them."""
    key = re.sub(r"[\s-]+", "_", name.strip()).lower()
    key = _BRAND_ALIASES.get(key, key)
    return key if key in CARD_BRANDS else None


# -- what a payment method may hold ---------------------------------------------------------------
# The limits of a payment method's token and display fields (API.md `payment_method`). The API's
# request schemas and the consumed order messages both use these, so a card one path refuses is
# refused by the other too; they are the API's documented limits.
TOKEN_MAX_LENGTH: Final = 255
BRAND_MAX_LENGTH: Final = 32
LAST4_PATTERN: Final = r"^[0-9]{4}$"
EXP_MONTH_MIN: Final = 1
EXP_MONTH_MAX: Final = 12
EXP_YEAR_MIN: Final = 2000
EXP_YEAR_MAX: Final = 2100
HOLDER_NAME_MAX_LENGTH: Final = 128
# The API accepts only `"card"`; consumed messages name the type in their own words
# (`CREDIT_CARD`), bounded like a brand.
METHOD_TYPE_MAX_LENGTH: Final = 32
