"""No Stripe secret anywhere: after a Stripe flow through a real `tillpoint serve` (a sale, an
authorization and a partial capture, a refund, 3-D Secure finished through localstripe's signed
webhook, a decline), neither the API key, nor the webhook signing secret, nor any `sk_`/`whsec_`
key, nor a PaymentIntent client secret, nor a card number is in any row of the database (the
provider call audit, the webhook inbox, the outbox and the payment events among them), in any
answer the test received, or in the server's log (at DEBUG, where the SDK logs the most).

The one place a client secret may appear is the `client_secret` field of a payment answered to
the `service` role, as the contract says (docs/api.md); only that field is left out of the scan.
The scan is shown to find each kind of secret planted in a copy of what it scanned, so a test
that finds nothing proves something.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import (
    ADMIN_KEY,
    SERVICE_KEY,
    create_database,
    drop_database,
    headers,
    need_service,
    new_key,
)
from tests.security import scan
from tests.stripe_e2e.support import (
    DECLINED,
    THREE_D_SECURE,
    VISA,
    confirm,
    stripe_payment,
    until,
    webhook_to,
)
from tests.support import flows
from tests.support.asgi import scan_response
from tests.support.localstripe import LocalStripe
from tests.support.server import Server, migrate, start_server
from tillpoint.domain.cards import find_card_numbers

pytestmark = pytest.mark.slow

API_KEY = f"sk_test_tillpoint_noleak_{secrets.token_hex(12)}"
WEBHOOK_SECRET = f"whsec_tillpoint_noleak_{secrets.token_hex(16)}"
PREFIXES = re.compile(r"(?:sk|rk)_(?:test|live)_|whsec_")
# A PaymentIntent's (`pi_…_secret_…`) or a SetupIntent's (`seti_…_secret_…`) client secret.
CLIENT_SECRET = re.compile(r"\b(?:pi|seti)_[A-Za-z0-9]+_secret_[A-Za-z0-9]+")
CARDS = (VISA, DECLINED, THREE_D_SECURE)


@dataclass
class Findings:
    """What the scan looks for, and what it found where."""

    client_secrets: set[str] = field(default_factory=set)  # every one the test learnt of
    found: list[str] = field(default_factory=list)

    def scan(self, where: str, text: str) -> None:
        for secret, what in (
            (API_KEY, "the Stripe API key"),
            (WEBHOOK_SECRET, "the webhook secret"),
        ):
            if secret in text:
                self.found.append(f"{where}: {what}")
        self.found += [f"{where}: key prefix {m}" for m in PREFIXES.findall(text)]
        self.found += [f"{where}: client secret {m[:12]}…" for m in CLIENT_SECRET.findall(text)]
        self.found += [
            f"{where}: client secret {s[:12]}…" for s in self.client_secrets if s in text
        ]
        numbers = set(find_card_numbers(text)) | set(scan.find_card_numbers(text))
        self.found += [f"{where}: card number ending {n[-4:]}" for n in sorted(numbers)]
        self.found += [f"{where}: {n}" for n in scan.find_cvc_values(text)]
        self.found += [f"{where}: card number {c[-4:]}" for c in CARDS if c in text]


@dataclass(frozen=True)
class Seen:
    """One answer the test got: what it scans."""

    source: str
    text: str


def without_allowed_secret(request: httpx.Request, body: str) -> str:
    """The answer's text, minus the one field the contract allows: `client_secret` of a
    payment answered to the service role."""
    if request.headers.get("authorization") != f"Bearer {SERVICE_KEY}":
        return body
    try:
        document = json.loads(body)
    except ValueError:
        return body
    if isinstance(document, dict) and "payment_id" in document and "client_secret" in document:
        document["client_secret"] = None
    return json.dumps(document)


@dataclass
class Recorder:
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, response: httpx.Response) -> None:
        body = (await response.aread()).decode("utf-8", "replace")
        request = response.request
        text = f"{dict(response.headers)} {without_allowed_secret(request, body)}"
        self.seen.append(
            Seen(f"{request.method} {request.url.path} → {response.status_code}", text)
        )


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test alone, so every row in it is this test's to scan."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'noleak.db'}"
        migrate(url, tmp_path)
        yield url
        return
    need_service("PostgreSQL", "127.0.0.1", 5432)
    url = create_database()
    try:
        migrate(url, tmp_path)
        yield url
    finally:
        drop_database(make_url(url).database or "")


@pytest.fixture
def server(fresh_database: str, tmp_path: Path, clean_localstripe: LocalStripe) -> Iterator[Server]:
    process = start_server(
        fresh_database,
        tmp_path,
        stripe_api_key=API_KEY,
        stripe_api_base=clean_localstripe.url,
        stripe_webhook_secrets=WEBHOOK_SECRET,
        log_level="DEBUG",
        log_format="json",
        run_workers_in_api="true",
    )
    try:
        yield process
    finally:
        process.kill()


@pytest.fixture
async def recorded(server: Server) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    recorder = Recorder()
    async with httpx.AsyncClient(
        base_url=server.base_url,
        timeout=30,
        event_hooks={"response": [recorder, scan_response]},
    ) as http:
        yield http, recorder


async def stripe_flow(
    http: httpx.AsyncClient, localstripe: LocalStripe, server: Server
) -> set[str]:
    """Every kind of Stripe call, through the API, localstripe delivering its signed webhooks
    to the server all along; returns the client secrets it saw."""
    async with webhook_to(localstripe, f"{server.base_url}/api/v1/webhooks/stripe", WEBHOOK_SECRET):
        return await _flow(http, localstripe)


async def _flow(http: httpx.AsyncClient, localstripe: LocalStripe) -> set[str]:
    sale = await stripe_payment(http, localstripe, VISA, "80.00")
    assert (await confirm(http, sale)).json()["status"] == "CAPTURED"
    refund = await http.post(
        f"/api/v1/payments/{sale}/refund",
        json={"amount": "30.00"},
        headers=headers(ADMIN_KEY, new_key()),
    )
    assert refund.status_code == 201, refund.text

    held = await stripe_payment(http, localstripe, VISA, "100.00", manual=True)
    assert (await confirm(http, held)).json()["status"] == "AUTHORIZED"
    captured = await http.post(
        f"/api/v1/payments/{held}/capture",
        json={"amount": "60.00"},
        headers=headers(SERVICE_KEY, new_key()),
    )
    assert captured.json()["status"] == "CAPTURED", captured.text

    declined = await stripe_payment(http, localstripe, DECLINED, "15.00")
    refused = await confirm(http, declined)
    assert (refused.status_code, refused.json()["code"]) == (402, "card_declined")

    three_ds = await stripe_payment(http, localstripe, THREE_D_SECURE, "42.00")
    waiting = await confirm(http, three_ds)
    assert waiting.json()["status"] == "REQUIRES_ACTION", waiting.text
    pi_id, client_secret = waiting.json()["provider_payment_id"], waiting.json()["client_secret"]
    assert client_secret.startswith(f"{pi_id}_secret_")
    again = await flows.payment(http, three_ds)  # a read asks Stripe for it once more
    assert again["client_secret"] == client_secret
    await localstripe.authenticate(pi_id, client_secret, success=True)

    async def captured_by_webhook() -> bool:
        state = await flows.payment(http, three_ds)
        events = await flows.event_types(http, three_ds)
        return state["status"] == "CAPTURED" and "WEBHOOK_RECEIVED" in events

    await until(captured_by_webhook, "the 3-D Secure payment never reached CAPTURED")

    for payment_id in (sale, held, declined, three_ds):  # every record an operator reads
        for path in ("", "/events"):
            response = await http.get(
                f"/api/v1/payments/{payment_id}{path}", headers=headers(SERVICE_KEY)
            )
            assert response.status_code == 200
        listed = await http.get(
            f"/api/v1/admin/payments/{payment_id}/provider-calls", headers=headers(ADMIN_KEY)
        )
        assert listed.status_code == 200, listed.text
        assert listed.json()["data"], listed.text
    hooks = await http.get(
        "/api/v1/admin/webhooks/events", params={"provider": "stripe"}, headers=headers(ADMIN_KEY)
    )
    received = hooks.json()["data"]
    assert all(e["signature_valid"] for e in received), received
    assert "PROCESSED" in {e["status"] for e in received}, received
    return {client_secret}


async def rows(url: str) -> set[tuple[str, str, str]]:
    engine = create_async_engine(url)
    try:
        return await scan.database_values(engine)
    finally:
        await engine.dispose()


def tables_of(values: Iterable[tuple[str, str, str]]) -> set[str]:
    return {table for table, _, _ in values}


async def test_no_stripe_key_signing_key_client_key_or_card_number_is_left_anywhere(
    fresh_database: str,
    server: Server,
    recorded: tuple[httpx.AsyncClient, Recorder],
    clean_localstripe: LocalStripe,
) -> None:
    http, recorder = recorded
    client_secrets = await stripe_flow(http, clean_localstripe, server)
    values = await rows(fresh_database)
    log = server.log.read_text(errors="replace")
    # Everything that should be there to scan is there.
    assert {"provider_call_audit", "webhook_events", "outbox", "payment_events"} <= tables_of(
        values
    )
    assert len([v for v in values if v[0] == "provider_call_audit"]) > 20
    assert len(recorder.seen) > 20
    # The log at DEBUG, the Stripe SDK's own lines and the webhooks' among them.
    assert '"level": "debug"' in log, server.log_tail()
    assert "Request to Stripe api" in log, server.log_tail()
    assert '"event": "webhook.processed"' in log, server.log_tail()

    findings = Findings(client_secrets)
    for table, column, text in values:
        findings.scan(f"{table}.{column}", text)
    for seen in recorder.seen:
        findings.scan(seen.source, seen.text)
    findings.scan("server log", log)

    assert not findings.found, "\n".join(findings.found[:40])

    # The scan can fail: each kind of secret, planted in a copy of what was scanned, is found
    # (after a separator: digits glued to the end of an id are part of that id).
    (secret,) = client_secrets
    audit = next(text for table, _, text in values if table == "provider_call_audit")
    plants = {
        "the Stripe API key": f"{audit} Bearer {API_KEY}",
        "the webhook secret": f"{recorder.seen[-1].text} {WEBHOOK_SECRET}",
        "key prefix sk_live_": f"{log} sk_live_51Habc",
        "key prefix whsec_": f"{log} whsec_other",
        "client secret": f'{recorder.seen[0].text} {{"client_secret": "{secret}"}}',
        "card number ending 4242": f"{audit}, pan=4242 4242 4242 4242",
        "card number ending 3155": f"{log}, pan=4000-0025-0000-3155",
    }
    for what, text in plants.items():
        planted = Findings(client_secrets)
        planted.scan("copy", text)
        assert any(what in line for line in planted.found), (what, planted.found)
    # …and the one allowance is exactly that field, for that role.
    request = httpx.Request("GET", "http://x", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    answer = json.dumps({"payment_id": "pay_1", "client_secret": secret})
    planted = Findings(client_secrets)
    planted.scan("copy", without_allowed_secret(request, answer))
    assert planted.found
