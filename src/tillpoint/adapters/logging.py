"""Structured logs: one JSON object per line, context from contextvars, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

from tillpoint.domain.cards import is_raw_card_field, mask_card_numbers

_SECRET_KEYS: Final = frozenset(
    {
        "authorization",
        "token",
        "secret",
        "api_key",
        "key",
        "password",
        "card_number",
        "cvc",
        "number",
        "webhook-signature",
        "stripe-signature",
    }
)
# 12-19 digit runs, optionally grouped by spaces or dashes, even inside a word
# (`tok_4242…`): anything that looks like a PAN, Luhn-valid or not.
_PAN: Final = re.compile(r"(?<!\d)(?:\d[ -]?){11,18}\d(?!\d)")


def _mask(value: str) -> str:
    masked = _PAN.sub(lambda m: "****" + re.sub(r"\D", "", m.group())[-4:], value)
    return mask_card_numbers(masked, "****")  # the rest of what the API refuses as a card


def _secret(key: object) -> bool:
    return str(key).lower() in _SECRET_KEYS or is_raw_card_field(key)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _mask(value)
    if isinstance(value, dict):
        return {k: "[redacted]" if _secret(k) else _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if _secret(key) and value is not None:
            event[key] = "[redacted]"
        else:
            event[key] = _masked(value)
    return event


def processors(fmt: str = "json") -> list[Any]:
    """The chain every log line goes through, ending in its renderer."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Tracebacks are rendered before masking, so a card number in one is masked too.
        structlog.processors.format_exc_info,
        redact,
        renderer,
    ]


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    structlog.configure(
        processors=processors(fmt),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stdout, format="%(message)s", force=True)
    for noisy in ("uvicorn.access", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # The Stripe SDK logs each request's form and each response's whole body at DEBUG, client
    # secrets included: its logger never goes below INFO (method, path and status only).
    logging.getLogger("stripe").setLevel(max(logging.INFO, logging.getLevelName(level)))
