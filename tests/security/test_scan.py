"""The leak scanner itself (`tests/security/scan.py`): each detector finds what it is for, and
leaves alone the identifiers the service writes everywhere. A scan that finds nothing proves
something only if these pass."""

from __future__ import annotations

import base64
import json
import uuid
from hashlib import sha256
from pathlib import Path

import pytest

from tests.conftest import ADMIN_KEY, CUSTOMER_KEY, MOCK_WEBHOOK_SECRET, SERVICE_KEY
from tests.security import scan
from tests.support.flows import new_order_id

# A JWT as Keycloak sends them (RS256, a `kid`), and an unsigned one (`alg: none`).
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzYS0xIn0"
    ".eyJzdWIiOiI1ZjE2YzNmNi0xYjNlIiwiYXVkIjpbInRpbGxwb2ludC1hcGkiXX0"
    ".MEUCIQDn4X2N9tQ3v0wq8Xo1cYhUu7T6s2b1YmQp5Jg0kLzq_wIgR3aD-Fz7V0fL"
)
UNSIGNED_JWT = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."
CLIENT_SECRET = "pi_3MtwBwLkdIwHu7ix28a3tqPa_secret_YrKJUKribcBjcG8HVhfZluoGH"
IDENTIFIERS = [
    str(uuid.uuid4()),
    sha256(b"anything").hexdigest(),
    new_order_id(),
    "order-2001",
    str(scan.numeric_id(10**11, 10**12)),
    "pay_01M87XABC1VJFCWJHFNEJNFGAW",
    "req_82659c05f78c4c17a6a5b2700f130717",
    "mock_pi_fd73f7fbd72c4809ebd3d87e",
    "idem-0f1e2d3c4b5a6978",
    "pm_card_visa",
    "pk_test_51HxPublishableKeyIsPublic",  # a publishable key is public
    "Invalid API Key provided: sk_test_****************abcd",  # Stripe's own masking
    "key [redacted] and [redacted]",
    '{"client_secret": null, "status": "REQUIRES_ACTION"}',
    "payment.client_secret_unavailable",
    "payment_intent_client_secret=&redirect_status=succeeded",
    "eyJvZmZzZXQiOjEwfQ",  # a base64 JSON cursor: one part, not a token
    "eyJhbGciOiJSUzI1NiJ9 is a header alone",
    '{"kty": "RSA", "kid": "rsa-1", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4"}',
    "the webhook secret is set (whsec_…) in TILLPOINT_MOCK_WEBHOOK_SECRET",
    "task_test_runner and desk_live_view",
    "2026-11-24T23:12:38.812869Z",
]


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A SEEN of this test alone, so what it plants never reaches the end-of-run scan."""
    mine: list[str] = []
    monkeypatch.setattr(scan, "SEEN", mine)
    return mine


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A copy of the registry with the suite's secrets in it, dropped after the test."""
    scan.find_known_secrets("")  # the suite's own secrets are registered on first use
    mine = dict(scan.SECRETS)
    monkeypatch.setattr(scan, "SECRETS", mine)
    return mine


@pytest.mark.parametrize("text", IDENTIFIERS)
def test_identifiers_and_ordinary_text_are_no_leak(text: str) -> None:
    assert scan.leaks(text) == []


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (ADMIN_KEY, "the admin API key"),
        (SERVICE_KEY, "the service API key"),
        (CUSTOMER_KEY, "the customer API key"),
        (MOCK_WEBHOOK_SECRET, "the mock's webhook secret"),
        (MOCK_WEBHOOK_SECRET.removeprefix("whsec_"), "the mock's webhook secret's key"),
    ],
)
def test_the_suites_own_secrets_are_known_by_default(key: str, what: str) -> None:
    assert what in scan.leaks(f'{{"note": "Bearer {key}"}}')


def test_a_secret_a_test_registers_is_found_by_value(registry: dict[str, str]) -> None:
    scan.register_secret("checkout-key-made-by-a-test-42", "a test's key")
    assert scan.find_known_secrets("authorization=checkout-key-made-by-a-test-42;") == [
        "a test's key"
    ]
    assert scan.find_known_secrets("checkout-key-made-by-a-test") == []


def test_a_short_secret_is_refused_rather_than_found_everywhere() -> None:
    with pytest.raises(ValueError, match="too short"):
        scan.register_secret("abc123", "a short key")


def test_the_keys_of_the_rotation_test_are_registered() -> None:
    from tests.api import test_key_rotation

    assert scan.find_known_secrets(test_key_rotation.OLD + " " + test_key_rotation.NEW) == [
        "the rotated-out checkout API key",
        "the rotated-in checkout API key",
    ]


@pytest.mark.parametrize(
    "text",
    [
        JWT,
        UNSIGNED_JWT,
        f"Authorization: Bearer {JWT}",
        f'{{"token":"{JWT}"}}',
        f"token={UNSIGNED_JWT}&next=1",
        f"{JWT}.ZW5jcnlwdGVk.dGFn",  # five parts: a JWE
    ],
)
def test_a_jwt_is_found_wherever_it_sits(text: str) -> None:
    found = scan.find_jwts(text)
    assert len(found) == 1, found
    assert found[0] in (JWT, UNSIGNED_JWT, f"{JWT}.ZW5jcnlwdGVk.dGFn")
    assert [f for f in scan.leaks(text) if f.startswith("jwt ")] == [f"jwt {found[0][:12]}…"]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (MOCK_WEBHOOK_SECRET, MOCK_WEBHOOK_SECRET),
        ("secret=whsec_tillpoint_3ds_0a1b2c3d4e5f6071", "whsec_tillpoint_3ds_0a1b2c3d4e5f6071"),
        ('"whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"', "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"),
    ],
)
def test_a_webhook_secret_is_found(text: str, found: str) -> None:
    assert scan.find_webhook_secrets(text) == [found]


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("sk_test_tillpoint_localstripe", "sk_test_tillpoint_localstripe"),
        ("Bearer sk_live_51HxAbCdEf0123", "sk_live_51HxAbCdEf0123"),
        ("key=rk_test_notakeylocalstripetakes", "rk_test_notakeylocalstripetakes"),
        ("stripe_rk_live_abc", "rk_live_abc"),  # after an underscore too
    ],
)
def test_a_stripe_secret_key_is_found(text: str, found: str) -> None:
    assert scan.find_stripe_keys(text) == [found]


@pytest.mark.parametrize(
    "text",
    [
        CLIENT_SECRET,
        f'{{"next": "{CLIENT_SECRET}"}}',
        "seti_1NxAbC_secret_OpQrStUv",
        "src_client_secret_Ab12Cd34",
    ],
)
def test_a_client_secret_is_found(text: str) -> None:
    assert len(scan.find_client_secrets(text)) == 1


def test_a_finding_never_prints_the_whole_secret() -> None:
    text = f"{JWT} {CLIENT_SECRET} {MOCK_WEBHOOK_SECRET} sk_live_51HxAbCdEf0123"
    found = scan.leaks(text)
    assert len(found) == 6  # the mock's secret is also known by value, with and without whsec_
    for secret in (JWT, CLIENT_SECRET, MOCK_WEBHOOK_SECRET, "sk_live_51HxAbCdEf0123"):
        assert not any(secret in line for line in found)


def test_leaks_include_card_data() -> None:
    assert scan.leaks('{"cvc": "123", "token": "tok_4242424242424242"}') == [
        "card number 4242424242424242",
        "cvc 123",
    ]


def test_a_response_may_hold_a_client_secret_in_its_client_secret_field_only(
    seen: list[str],
) -> None:
    payment = {"payment_id": "pay_01M87XABC1VJFCWJHFNEJNFGAW", "client_secret": CLIENT_SECRET}
    scan.note_response("GET /api/v1/payments/x", "Headers({})", json.dumps(payment))
    scan.note_response("GET /list", "Headers({})", json.dumps({"data": [payment]}))
    assert seen == []

    scan.note_response("GET /x", "Headers({})", json.dumps({"note": CLIENT_SECRET}))
    scan.note_response("GET /y", f"Headers({{'location': '{CLIENT_SECRET}'}})", "{}")
    scan.note_response("GET /z", "Headers({})", f"not json {CLIENT_SECRET}")
    scan.note("published payment.updated", json.dumps(payment))  # never published
    assert [line.split(":")[0] for line in seen] == [
        "GET /x",
        "GET /y",
        "GET /z",
        "published payment.updated",
    ]


def test_the_client_secret_field_hides_nothing_else(seen: list[str]) -> None:
    body = {"client_secret": CLIENT_SECRET, "token": JWT, "cvc": "123"}
    scan.note_response("POST /p", "Headers({})", json.dumps(body))
    assert seen == ["POST /p: cvc 123", f"POST /p: jwt {JWT[:12]}…"]


def test_a_card_number_the_caller_sent_in_the_path_is_no_finding_but_a_secret_is(
    seen: list[str],
) -> None:
    sent = f"http://t/api/v1/orders/4242424242424242?t={UNSIGNED_JWT}"
    body = f'{{"detail": "order 4242424242424242 not found ({UNSIGNED_JWT})"}}'
    scan.note_response("GET /api/v1/orders/x", "Headers({})", body, sent=sent)
    assert seen == [f"GET /api/v1/orders/x: jwt {UNSIGNED_JWT[:12]}…"]


def test_database_rows_and_log_files_are_scanned_for_secrets(tmp_path: Path) -> None:
    rows = {
        ("webhook_events", "body", json.dumps({"client_secret": CLIENT_SECRET})),
        ("provider_calls", "request_body", f"Bearer {SERVICE_KEY}"),
        ("payments", "payment_id", "pay_01M87XABC1VJFCWJHFNEJNFGAW"),
    }
    assert sorted(scan.findings(rows)) == [
        "provider_calls.request_body: the service API key",
        f"webhook_events.body: client secret {CLIENT_SECRET[:12]}…",  # a row is no answer
    ]
    log = tmp_path / "server.txt"  # not `*.log`: the end-of-run scan would find the plant
    encoded = base64.b64encode(b"not a secret").decode()
    log.write_text(f'{{"event": "oidc.refused", "token": "{JWT}", "note": "{encoded}"}}\n')
    assert scan.scan_files([log]) == [f"server.txt: jwt {JWT[:12]}…"]
