"""A leak scanner, reusable by any test: card data and secrets in text.

What it finds (`leaks`):

* **Card numbers and CVCs.** It is written apart from the service's own rule
  (`tillpoint.domain.cards`) so the scans do not grade the detector with itself. A card number
  is a Luhn-valid run of 12-19 digits, plain or grouped by (up to three) spaces or dashes,
  wherever it sits (`tok_4242…`), counting every run of whole digit groups (so
  `4111111111111111 123` is found). Digits inside a longer hex token (a UUID, a SHA-256, a
  request id) are identifiers and are skipped. A CVC is a 3-4 digit value under a CVC field name
  (`"cvc": "123"`, `cvv=123`); three digits alone are not a secret.
* **Known secrets**, by value: every secret registered with `register_secret` — the suite's
  API keys and the mock gateway's webhook secret (tests/conftest.py, registered by default) and
  the keys a test makes for itself (tests/api/test_key_rotation.py, …). API keys have no shape
  of their own, so a value nobody registered cannot be found.
* **JWTs**: any compact JWS or JWE, `eyJ…` (a base64url JSON header) then `.` and at least
  two more base64url parts (an unsigned `alg: none` token, with an empty signature, counts).
* **Webhook secrets**: any `whsec_…` value (Standard Webhooks and Stripe spell them so), and
  the mock's secret without its prefix (its key is the base64 after `whsec_`).
* **Stripe keys**: `sk_test_…`, `sk_live_…`, `rk_test_…`, `rk_live_…` with at least one letter
  or digit after the prefix (a masked `sk_test_****abcd`, as Stripe's errors write it, is not
  a key). Publishable keys (`pk_…`) are public and not looked for.
* **Client secrets**: `<object>_<id>_secret_<secret>` (`pi_…_secret_…`, `seti_…_secret_…`).

The one place a secret may legitimately be: a client secret as the value of a `client_secret`
field of a JSON answer of the API. The contract (API.md, the payment object) returns it to the
`service` role and the owning customer while a payment is `REQUIRES_ACTION`, so that a
storefront can finish 3-D Secure; who may see it is tested where it is made
(tests/stripe_e2e/test_three_d_secure_webhook.py). `note_response` leaves those fields out
and scans the rest of the answer. Everywhere else — another field, a header, a log line, a
database row, a broker message (API.md: "never logged or published") — a client secret is a
leak, as is every other kind of secret anywhere.

Identifiers are not secrets and are not flagged: UUIDs, hex digests, `pay_…` and `req_…` ids,
order ids, `pm_card_visa`, publishable keys.
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


# A compact JWS (three parts) or JWE (five): a base64url JSON header (`{"` is `eyJ`), then
# base64url parts; the last part of an unsigned token is empty.
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){2,4}")
_WEBHOOK_SECRET = re.compile(r"(?<![A-Za-z0-9])whsec_[A-Za-z0-9+/=_-]+")
_STRIPE_KEY = re.compile(r"(?<![A-Za-z0-9])[sr]k_(?:test|live)_[A-Za-z0-9][A-Za-z0-9_]*")
_CLIENT_SECRET = re.compile(r"(?<![A-Za-z0-9])[a-z]+_[A-Za-z0-9]+_secret_[A-Za-z0-9]+")

# Every secret value the suite knows of, with what it is (`register_secret`).
SECRETS: dict[str, str] = {}
_SUITES_SECRETS: list[bool] = []  # [True] once the suite's own secrets are registered
_SHORTEST_SECRET = 12  # a shorter value would be found in ordinary text by chance


def register_secret(value: str, what: str) -> None:
    """Have every scan look for `value` (an API key, a signing secret a test configures),
    named `what` in a finding. Values shorter than 12 characters are refused."""
    if len(value) < _SHORTEST_SECRET:
        raise ValueError(f"{what}: a secret of {len(value)} characters is too short to scan for")
    SECRETS.setdefault(value, what)


def _register_the_suites_secrets() -> None:
    if _SUITES_SECRETS:
        return
    _SUITES_SECRETS.append(True)
    from tests import conftest  # here: importing this module never loads the conftest itself

    for key in conftest.API_KEYS:
        register_secret(str(key["key"]), f"the {key['role']} API key")
    register_secret(conftest.MOCK_WEBHOOK_SECRET, "the mock's webhook secret")
    register_secret(
        conftest.MOCK_WEBHOOK_SECRET.removeprefix("whsec_"), "the mock's webhook secret's key"
    )


def find_jwts(text: str) -> list[str]:
    """Every JWT (compact JWS or JWE) in `text`."""
    return _JWT.findall(text)


def find_webhook_secrets(text: str) -> list[str]:
    return _WEBHOOK_SECRET.findall(text)


def find_stripe_keys(text: str) -> list[str]:
    """Stripe secret and restricted keys (never the publishable `pk_…`)."""
    return _STRIPE_KEY.findall(text)


def find_client_secrets(text: str) -> list[str]:
    """Client secrets as Stripe spells them: `pi_…_secret_…`, `seti_…_secret_…`."""
    return _CLIENT_SECRET.findall(text)


def find_known_secrets(text: str) -> list[str]:
    """What each registered secret found in `text` is (`register_secret`)."""
    _register_the_suites_secrets()
    return [what for value, what in SECRETS.items() if value in text]


def _shown(secret: str) -> str:
    """Enough of a secret to find it again, not the secret."""
    return f"{secret[:12]}…"


def secrets_in(text: str) -> list[str]:
    """The secrets in `text`, labelled, for an assertion message (never the whole secret)."""
    return (
        find_known_secrets(text)
        + [f"jwt {_shown(t)}" for t in find_jwts(text)]
        + [f"webhook secret {_shown(s)}" for s in find_webhook_secrets(text)]
        + [f"stripe key {_shown(k)}" for k in find_stripe_keys(text)]
        + [f"client secret {_shown(s)}" for s in find_client_secrets(text)]
    )


def leaks(text: str) -> list[str]:
    """Card data and secrets in `text`, labelled (`card_data`, then `secrets_in`)."""
    return card_data(text) + secrets_in(text)


def without_client_secret_fields(body: str) -> str:
    """A JSON answer with the value of every `client_secret` field set to null: the one place
    the contract lets a client secret be (the module's docstring). Other text is kept as is."""
    if '"client_secret"' not in body:
        return body
    try:
        document = json.loads(body)
    except ValueError:
        return body

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: None if k == "client_secret" else scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return json.dumps(scrub(document), ensure_ascii=False)


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
    """Every leak (card data, a secret) in `values`, with where it was found."""
    return [
        f"{table}.{column}: {finding}" for table, column, text in values for finding in leaks(text)
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
    """Leaks anywhere in these databases, as `findings` lines naming the database, and the
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
    """Leaks in text files (the logs of the servers the suite ran)."""
    found: list[str] = []
    for path in paths:
        text = path.read_text(errors="replace")
        found += [f"{path.name}: {finding}" for finding in leaks(text)]
    return found


def _header(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(16)


# Leaks seen at run time by the suite's own clients and broker fixtures (every response of the
# ASGI test client, every message left in a test queue or a dead-letter queue, everything the
# event tap received, what each test wrote to its output); reported by the end-of-run scan in
# `tests/conftest.py`.
SEEN: list[str] = []


def note(source: str, text: str, sent: str = "") -> None:
    """Record the leaks in `text`, except card numbers the caller itself `sent` in the request
    line (a 404 names the id it could not find; an id in a path is the caller's identifier)."""
    echoed = set(find_card_numbers(sent))
    SEEN.extend(
        f"{source}: {finding}"
        for finding in leaks(text)
        if finding.removeprefix("card number ") not in echoed
    )


def note_response(source: str, headers: str, body: str, sent: str = "") -> None:
    """Record the leaks in an answer of the API: its headers and its body, less the
    `client_secret` fields the contract allows (`without_client_secret_fields`)."""
    note(source, f"{headers} {without_client_secret_fields(body)}", sent=sent)
