"""What one outbound provider call looked like on the wire, for the audit (`provider_call_audit`).

The resilient call layer (`resilient.py`) opens an `Exchange` around every attempt; the adapter
making the call fills in what only it can see — the redacted request and response bodies, the
HTTP status, the provider's request id — through `exchange()`. A context variable carries it,
so adapter methods keep their port signatures.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from tillpoint.domain.cards import redact_card_data

REDACTED: Final = "[redacted]"
# Keys whose values never reach the audit, whatever object they sit in.
SECRET_KEYS: Final = frozenset(
    {
        "client_secret",
        "secret",
        "api_key",
        "key",
        "password",
        "authorization",
        "number",
        "cvc",
        "cvv",
        "card_number",
        "ephemeral_key",
    }
)


@dataclass(slots=True)
class Exchange:
    request: Mapping[str, Any] | None = None
    response: Mapping[str, Any] | None = None
    http_status: int | None = None
    provider_request_id: str | None = None

    def sent(self, body: Mapping[str, Any]) -> None:
        self.request = redact_body(body)

    def answered(
        self,
        body: Mapping[str, Any] | None,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.response = redact_body(body) if body is not None else None
        self.http_status = http_status
        self.provider_request_id = request_id


_CURRENT: ContextVar[Exchange | None] = ContextVar("tillpoint_provider_exchange", default=None)


def exchange() -> Exchange:
    """The exchange of the call being made (a throwaway one outside the resilient layer)."""
    return _CURRENT.get() or Exchange()


@contextmanager
def recording() -> Iterator[Exchange]:
    current = Exchange()
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


def redact_body(value: Any) -> Any:
    """A JSON-like value with secrets replaced and card numbers masked (brand/last4 stay)."""
    cleaned, _ = redact_card_data(_drop_secrets(value))
    return cleaned


def _drop_secrets(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _secret_key(k) and v is not None else _drop_secrets(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_drop_secrets(v) for v in value]
    if isinstance(value, str) and _secret_text(value):
        return REDACTED
    return value


def _secret_key(name: object) -> bool:
    key = str(name).lower()
    if key.endswith("idempotency_key"):
        return False
    return key in SECRET_KEYS or key.endswith(("_secret", "_key", "_token"))


def _secret_text(text: str) -> bool:
    """Values that are secrets whatever key holds them (Stripe's key and secret prefixes)."""
    return text.startswith(("sk_", "rk_", "whsec_")) or "_secret_" in text
