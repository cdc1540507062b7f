"""Inbound webhook adapters: each provider's signature scheme and event format.

A verifier checks the signature over the raw bytes first and only then parses; parsing turns
the provider's event into a provider-neutral `Signal`. No SDK type leaves this package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

# Headers never stored: signatures (useless once verified, and a replay aid for an attacker)
# and anything carrying credentials.
SECRET_HEADERS: Final = frozenset(
    {"webhook-signature", "stripe-signature", "authorization", "cookie", "proxy-authorization"}
)
REDACTED: Final = "[redacted]"


def redact(headers: Mapping[str, str], secret: Iterable[str] = SECRET_HEADERS) -> dict[str, str]:
    hidden = {name.lower() for name in secret}
    return {
        name.lower(): (REDACTED if name.lower() in hidden else value)
        for name, value in headers.items()
    }
