"""Structured logs: one JSON object per line, context from contextvars, secrets masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final

import structlog

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
# 13-19 digit runs, optionally grouped by spaces or dashes: anything that looks like a PAN.
_PAN: Final = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _mask(value: str) -> str:
    return _PAN.sub(lambda m: "****" + re.sub(r"\D", "", m.group())[-4:], value)


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS and value is not None:
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = _mask(value)
    return event


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stdout, format="%(message)s", force=True)
    for noisy in ("uvicorn.access", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
