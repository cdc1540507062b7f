"""A scanner for card data, reusable by any test: card numbers and CVC values in text.

It is written apart from the service's own rule (`tillpoint.domain.cards`) so the scans do not
grade the detector with itself. A card number is a Luhn-valid run of 12-19 digits, plain or
grouped by (up to three) spaces or dashes, wherever it sits (`tok_4242…`), counting every run
of whole digit groups (so `4111111111111111 123` is found). Digits inside a longer hex token
(a UUID, a SHA-256, a request id) are identifiers and are skipped. A CVC is a 3-4 digit value
under a CVC field name (`"cvc": "123"`, `cvv=123`); three digits alone are not a secret.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

_RUN = re.compile(r"\d(?:[\s\-\u2010-\u2015\u2212]{0,3}\d)*")
_HEX_AROUND = re.compile(r"[0-9A-Fa-f-]*")
_CVC = re.compile(
    r"""(?ix)
    ["']?\b(?:cvc2?|cvv2?|cvn|cid|card[\s_-]?(?:security[\s_-]?|verification[\s_-]?)?code
        |security[\s_-]?code)["']?
    \s*[:=]\s*["']?(\d{3,4})(?!\d)
    """
)


def numeric_id(low: int, high: int) -> int:
    """A random numeric id in [low, high) that is never a Luhn-valid number, so the suite's
    card-data scan of the databases never mistakes a test's order id for a card number."""
    number = low + secrets.randbelow(high - low)
    while luhn(str(number)):
        number += 1
    return number


def luhn(digits: str) -> bool:
    values = [int(d) for d in reversed(digits)]
    odd = sum(values[0::2])
    even = sum(sum(divmod(2 * v, 10)) for v in values[1::2])
    return (odd + even) % 10 == 0


def _inside_hex_token(text: str, start: int, end: int) -> bool:
    left = _HEX_AROUND.match(text[max(0, start - 100) : start][::-1])
    right = _HEX_AROUND.match(text[end : end + 100])
    around = (left.group() if left else "") + (right.group() if right else "")
    if not any(c.isalpha() for c in around):
        return False
    # A random hex reference (`mock_ch_48486704264736249ab1e2`) may hold a long run of digits
    # with a few hex letters beside it: a token of 16 or more with 4 of them is an identifier.
    return len(around) >= 8 or (len(around) >= 4 and len(around) + end - start >= 16)


def find_card_numbers(text: str) -> list[str]:
    """The digits of every card number in `text` (empty when there is none)."""
    found: list[str] = []
    for run in _RUN.finditer(text):
        if _inside_hex_token(text, run.start(), run.end()):
            continue
        groups = re.findall(r"\d+", run.group())
        for first in range(len(groups)):
            digits = ""
            for group in groups[first : first + 19]:
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 12 and luhn(digits):
                    found.append(digits)
    return found


def find_cvc_values(text: str) -> list[str]:
    """Every 3-4 digit value written under a CVC field name."""
    return _CVC.findall(text)


def card_data(text: str) -> list[str]:
    """Card numbers and CVC values in `text`, labelled, for an assertion message."""
    return [f"card number {n}" for n in find_card_numbers(text)] + [
        f"cvc {c}" for c in find_cvc_values(text)
    ]


def as_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


async def database_values(engine: AsyncEngine) -> set[tuple[str, str, str]]:
    """`(table, column, value as text)` for every non-null value of every column of every
    table (reflected, so tables added later are scanned too)."""
    metadata = sa.MetaData()
    async with engine.connect() as conn:
        await conn.run_sync(metadata.reflect)
        values: set[tuple[str, str, str]] = set()
        for table in metadata.sorted_tables:
            rows = await conn.execute(sa.select(table))
            for row in rows.mappings():
                for column, value in row.items():
                    if value is not None:
                        values.add((table.name, str(column), as_text(value)))
    return values


def findings(values: Iterable[tuple[str, str, str]]) -> list[str]:
    """Every card number or CVC in `values`, with where it was found."""
    return [
        f"{table}.{column}: {finding}"
        for table, column, text in values
        for finding in card_data(text)
    ]


# Where the caller's own identifiers are kept: the service does not check identifiers for card
# numbers (docs/operations.md, "Card data"), and the suite's fuzzing (Schemathesis) generates
# numeric ones, some of them Luhn-valid.
CALLER_IDENTIFIERS = frozenset(
    {
        ("orders", "order_id"),
        ("idempotency_keys", "key"),
        ("payments", "snapshot_id"),
        ("checkout_snapshots", "items"),  # variant ids
    }
)


async def scan_databases(urls: Iterable[str]) -> tuple[list[str], set[str]]:
    """Card data anywhere in these databases, as `findings` lines naming the database, and the
    digits of every caller identifier they hold (`CALLER_IDENTIFIERS`).

    A 12-digit numeric order id or Idempotency-Key is Luhn-valid one time in ten, and the
    service deliberately does not check identifiers: a "card number" that is such an
    identifier is that identifier, found wherever it is echoed."""
    from sqlalchemy.ext.asyncio import create_async_engine

    found: list[str] = []
    order_ids: set[str] = set()
    for url in urls:
        engine = create_async_engine(url)
        try:
            name = engine.url.database or url
            values = await database_values(engine)
            found += [f"{name}: {line}" for line in findings(values)]
            order_ids |= {
                "".join(c for c in text if c.isdigit())
                for table, column, text in values
                if (table, column) in CALLER_IDENTIFIERS
            }
        finally:
            await engine.dispose()
    return found, order_ids - {""}


def not_order_ids(found: Iterable[str], order_ids: set[str]) -> list[str]:
    """The findings whose card number is not the digits of a known order id."""
    kept = []
    for line in found:
        number = line.rsplit("card number ", 1)[-1] if "card number " in line else None
        if number is None or not any(number in ident for ident in order_ids):
            kept.append(line)
    return kept


def sqlite_urls(folder: Path) -> list[str]:
    """Read-only URLs of the SQLite databases below `folder` (what is a real SQLite file)."""
    urls = []
    for path in sorted(folder.rglob("*.db")):
        if path.is_file() and _header(path) == b"SQLite format 3\x00":
            urls.append(f"sqlite+aiosqlite:///file:{path}?mode=ro&uri=true")
    return urls


def scan_files(paths: Iterable[Path]) -> list[str]:
    """Card data in text files (the logs of the servers the suite ran)."""
    found: list[str] = []
    for path in paths:
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {finding}" for finding in card_data(text)]
    return found


def _header(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(16)


# Card data seen at run time by the suite's own clients and broker fixtures (every response of
# the ASGI test client, every message left in a test queue or a dead-letter queue, everything
# the event tap received); reported by the end-of-run scan in `tests/conftest.py`.
SEEN: list[str] = []


def note(source: str, text: str, sent: str = "") -> None:
    """Record the card data in `text`, except numbers the caller itself `sent` in the request
    line (a 404 names the id it could not find; an id in a path is the caller's identifier)."""
    echoed = set(find_card_numbers(sent))
    SEEN.extend(
        f"{source}: {finding}"
        for finding in card_data(text)
        if finding.removeprefix("card number ") not in echoed
    )
