"""The mock gateway's test card tokens (API.md "The mock gateway").

They are part of the contract: a client picks an outcome by naming one. A mistyped one
(`pm_card_visaa`) used to fall through to "anything else: success", so a test meant to see a
decline saw a payment succeed; now any `pm_card_…` token the mock does not know is refused
before the provider is called.
"""

from __future__ import annotations

from typing import Final

from tillpoint.domain.errors import ValidationFailed

MOCK_PROVIDER: Final = "mock"
TEST_CARD_PREFIX: Final = "pm_card_"
TEST_CARDS: Final = (
    "pm_card_visa",
    "pm_card_chargeDeclined",
    "pm_card_insufficientFunds",
    "pm_card_expired",
    "pm_card_fraud",
    "pm_card_threeDSecure",
    "pm_card_async",
    "pm_card_timeout",
)


def check_test_card(provider: str, token: str | None) -> None:
    """Refuse an unknown `pm_card_…` token for the mock (422 `validation_error`)."""
    if (
        provider == MOCK_PROVIDER
        and token is not None
        and token.startswith(TEST_CARD_PREFIX)
        and token not in TEST_CARDS
    ):
        raise ValidationFailed(
            "payment_method",
            f"unknown mock test card {token!r}; the known test cards are {', '.join(TEST_CARDS)}",
        )
