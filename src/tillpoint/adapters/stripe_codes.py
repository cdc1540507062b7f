"""Stripe's decline and error codes in our terms (API.md's 402 codes).

One table for every place a Stripe failure arrives: the API adapter's card errors and the
webhooks' `last_payment_error`. Stripe's `decline_code` is the more specific of the two, so it
is read first; a code we have no name for is a plain `card_declined`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

CARD_DECLINED: Final = "card_declined"

OUR_CODES: Final[Mapping[str, str]] = {
    "card_declined": CARD_DECLINED,
    "payment_intent_authentication_failure": CARD_DECLINED,
    "insufficient_funds": "insufficient_funds",
    "fraudulent": "fraud_suspected",
    "stolen_card": "fraud_suspected",
    "lost_card": "fraud_suspected",
    "expired_card": "expired_card",
    "incorrect_number": "invalid_card",
    "invalid_number": "invalid_card",
    "invalid_cvc": "invalid_card",
    "incorrect_cvc": "invalid_card",
    "invalid_expiry_month": "invalid_card",
    "invalid_expiry_year": "invalid_card",
}


def our_code(code: str | None, decline_code: str | None) -> str:
    """Our failure code for Stripe's `code` and `decline_code` (either may be missing)."""
    for candidate in (decline_code, code):
        if candidate and candidate in OUR_CODES and OUR_CODES[candidate] != CARD_DECLINED:
            return OUR_CODES[candidate]
    return CARD_DECLINED
