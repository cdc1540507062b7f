"""Stripe's decline codes and customer steps in our terms, for every place they arrive: the
API adapter's answers and card errors, and the webhooks' PaymentIntents.

Stripe's `decline_code` is the more specific of the two codes, so it is read first; a code we
have no name for is a plain `card_declined` (API.md's 402 codes).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

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


MAX_REDIRECT_URL: Final = 2048


def our_next_action(raw: object) -> dict[str, Any]:
    """The customer step in our terms: a redirect URL, or "finish it with Stripe.js" (which
    needs the client secret, handed out separately and never part of `next_action`).

    Never Stripe's raw object (its `use_stripe_sdk` part is Stripe.js's business). Stripe's
    hosted 3-D Secure URLs can carry `payment_intent_client_secret` in their query: such a URL
    is never passed on (`next_action` is stored and published with the payment's events), and
    the storefront finishes that step with Stripe.js and the payment's `client_secret`."""
    if isinstance(raw, Mapping) and raw.get("type") == "redirect_to_url":
        redirect = raw.get("redirect_to_url")
        url = redirect.get("url") if isinstance(redirect, Mapping) else None
        if (
            isinstance(url, str)
            and url.startswith("https://")
            and "secret" not in url.lower()
            and len(url) <= MAX_REDIRECT_URL
        ):
            return {"type": "redirect_to_url", "redirect_url": url}
    return {"type": "use_stripe_sdk"}
