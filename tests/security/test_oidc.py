"""OIDC bearer tokens through the HTTP API, against a fake Keycloak realm served on loopback.

The issuer (tests/support/oidc.py) is a real HTTP server serving a discovery document and a
JWKS of generated RSA and EC keys; tokens carry Keycloak's claims. Every attack is a
401; the issuer's key rotation works without a restart and an unknown-kid flood is one fetch.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from tests.api.conftest import assert_problem
from tests.conftest import ADMIN_KEY, headers, new_key, settings_for
from tests.support import flows
from tests.support.flows import new_order_id
from tests.support.oidc import AUDIENCE, ROLE_MAP, FakeIssuer, oidc_client, serve
from tillpoint.bootstrap import build, preflight
from tillpoint.config import ConfigurationRefused


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with serve(FakeIssuer()) as running:
        yield running


@pytest.fixture
async def http(database_url: str, issuer: FakeIssuer) -> AsyncIterator[httpx.AsyncClient]:
    async with oidc_client(database_url, issuer) as (client, _):
        yield client


async def ledger_path(http: httpx.AsyncClient) -> str:
    """The admin ledger of a new order (made with the service API key): 200 for an admin."""
    return f"/api/v1/admin/orders/{await flows.create_order(http)}/payments"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature)]
    )


async def create_order(http: httpx.AsyncClient, token: str, buyer_id: str) -> httpx.Response:
    body = {"order_id": new_order_id(), "buyer_id": buyer_id, "amount": "10.00", "currency": "EUR"}
    return await http.post("/api/v1/orders", json=body, headers=headers(token, new_key()))


def assert_unauthenticated(response: httpx.Response) -> None:
    assert_problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


# --- the three roles -------------------------------------------------------------------------


async def test_a_service_token_creates_orders_and_an_admin_token_reads_the_ledger(
    http: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    service = issuer.token(issuer.claims(["order-service"], azp="order-service"))
    created = await create_order(http, service, buyer_id="buyer-x")
    assert created.status_code == 201, created.text
    order_id = created.json()["order_id"]
    payment = await http.post(
        "/api/v1/payments",
        json={
            "order_id": order_id,
            "amount": "10.00",
            "currency": "EUR",
            "payment_method": {"token": "pm_card_visa"},
        },
        headers=headers(service, new_key()),
    )
    assert payment.status_code == 201, payment.text

    # An admin user's client role (resource_access), signed with the realm's EC key.
    admin_claims = issuer.claims(
        [], azp="backoffice", resource_access={"backoffice": {"roles": ["payments-admin"]}}
    )
    admin = issuer.token(admin_claims, key=issuer.ec)
    ledger = await http.get(f"/api/v1/admin/orders/{order_id}/payments", headers=headers(admin))
    assert ledger.status_code == 200, ledger.text
    assert [p["payment_id"] for p in ledger.json()["data"]] == [payment.json()["payment_id"]]

    # The service role is no admin.
    refused = await http.get(f"/api/v1/admin/orders/{order_id}/payments", headers=headers(service))
    assert_problem(refused, 403, "forbidden")


async def test_a_customer_token_reads_its_own_order_and_no_other_buyers(
    http: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    service = issuer.token(issuer.claims(["order-service"]))
    claims = issuer.claims(["customer"], azp="shop-frontend")
    customer = issuer.token(claims)
    mine = (await create_order(http, service, buyer_id=claims["sub"])).json()["order_id"]
    theirs = (await create_order(http, service, buyer_id=str(uuid.uuid4()))).json()["order_id"]

    own = await http.get(f"/api/v1/orders/{mine}", headers=headers(customer))
    assert own.status_code == 200, own.text
    assert own.json()["buyer_id"] == claims["sub"]
    other = await http.get(f"/api/v1/orders/{theirs}", headers=headers(customer))
    assert_problem(other, 404, "not_found")
    # A customer may not create orders (outside its routes: 404, as for API keys).
    assert_problem(await create_order(http, customer, claims["sub"]), 404, "not_found")


async def test_api_keys_still_work_next_to_oidc_and_garbage_is_a_401(
    http: httpx.AsyncClient,
) -> None:
    ok = await http.get(await ledger_path(http), headers=headers(ADMIN_KEY))
    assert ok.status_code == 200, ok.text
    assert_unauthenticated(await http.get("/api/v1/orders/x", headers=headers("a.b.c")))
    assert_unauthenticated(await http.get("/api/v1/orders/x", headers=headers("not-a-key")))


# --- attacks: each is a 401 ----------------------------------------------------------------


def attacks(issuer: FakeIssuer) -> dict[str, str]:
    admin = issuer.claims(["payments-admin"])
    header = {"alg": "RS256", "kid": issuer.rsa.kid, "typ": "JWT"}
    now = int(time.time())
    public_pem = issuer.rsa.as_bytes(private=False)
    hs_header = {"alg": "HS256", "kid": issuer.rsa.kid, "typ": "JWT"}
    hs_input = unsigned(hs_header, admin).rsplit(".", 1)[0]
    hs_signature = hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest()
    valid = issuer.token(issuer.claims(["customer"]))
    head, _, signature = valid.split(".")
    escalated = b64(json.dumps(admin).encode())
    our_kid = issuer.rsa.kid
    assert our_kid is not None
    stranger = RSAKey.generate_key(2048, parameters={"kid": our_kid})  # same kid
    other_kid = RSAKey.generate_key(2048, parameters={"kid": "kid-of-another-realm"})
    return {
        "alg none": unsigned({"alg": "none", "kid": issuer.rsa.kid, "typ": "JWT"}, admin),
        "alg none, a signature": unsigned({"alg": "none", "kid": issuer.rsa.kid}, admin, b"x"),
        "alg none, upper case": unsigned({"alg": "NONE", "typ": "JWT"}, admin),
        "HS256 with the public key": f"{hs_input}.{b64(hs_signature)}",
        "expired": issuer.token(issuer.claims(["payments-admin"], iat=now - 900, exp=now - 300)),
        "not yet valid": issuer.token(issuer.claims(["payments-admin"], nbf=now + 600)),
        "issued in the future": issuer.token(issuer.claims(["payments-admin"], iat=now + 600)),
        "no exp": issuer.token({k: v for k, v in admin.items() if k != "exp"}),
        "wrong aud": issuer.token(issuer.claims(["payments-admin"], aud=["account"])),
        "no aud": issuer.token({k: v for k, v in admin.items() if k != "aud"}),
        "wrong iss": issuer.token(
            issuer.claims(["payments-admin"], iss=issuer.issuer.replace("/shop", "/other"))
        ),
        "unknown kid": unsigned({**header, "kid": "nope"}, admin, b"x" * 256),
        "tampered payload": f"{head}.{escalated}.{signature}",
        "second issuer's key, our kid": jwt.encode(header, admin, stranger),
        "second issuer's key and kid": jwt.encode(
            {**header, "kid": other_kid.kid}, admin, other_kid
        ),
        "no mapped role": issuer.token(issuer.claims(["offline_access", "uma_authorization"])),
        "customer without a subject": issuer.token(
            {k: v for k, v in issuer.claims(["customer"]).items() if k != "sub"}
        ),
        "RSA key with an EC algorithm": unsigned({**header, "alg": "ES256"}, admin, b"x" * 64),
    }


async def test_every_attack_is_a_401(http: httpx.AsyncClient, issuer: FakeIssuer) -> None:
    path = await ledger_path(http)
    # The same admin claims signed properly pass, so each refusal is the attack's own.
    good = issuer.token(issuer.claims(["payments-admin"]))
    baseline = await http.get(path, headers=headers(good))
    assert baseline.status_code == 200, baseline.text
    for name, token in attacks(issuer).items():
        response = await http.get(path, headers=headers(token))
        assert response.status_code == 401, (name, response.text)
        assert_unauthenticated(response)
        assert token not in response.text


async def test_the_leeway_accepts_small_clock_skew(
    http: httpx.AsyncClient, issuer: FakeIssuer
) -> None:
    now = int(time.time())
    skewed = issuer.token(issuer.claims(["payments-admin"], iat=now + 10, nbf=now + 10))
    response = await http.get(await ledger_path(http), headers=headers(skewed))
    assert response.status_code == 200, response.text


# --- the JWKS: rotation and refetch bounds -------------------------------------------------


async def test_the_issuers_key_rotation_works_without_a_restart(
    database_url: str, issuer: FakeIssuer
) -> None:
    async with oidc_client(database_url, issuer, oidc_jwks_refresh_min_interval=timedelta(0)) as (
        http,
        _,
    ):
        path = await ledger_path(http)
        old = issuer.token(issuer.claims(["payments-admin"]))
        assert (await http.get(path, headers=headers(old))).status_code == 200
        service_claims = issuer.claims(["order-service"], azp="order-service")
        body = {"order_id": new_order_id(), "buyer_id": "b-1", "amount": "5.00", "currency": "USD"}
        key = new_key()
        first = await http.post(
            "/api/v1/orders", json=body, headers=headers(issuer.token(service_claims), key)
        )
        assert first.status_code == 201, first.text

        # The realm rotates: a new key, the old one withdrawn.
        new_key_ = RSAKey.generate_key(2048, parameters={"kid": f"rsa-{secrets.token_hex(4)}"})
        issuer.published = [new_key_]
        fresh = issuer.token(issuer.claims(["payments-admin"]), key=new_key_)
        assert (await http.get(path, headers=headers(fresh))).status_code == 200
        assert issuer.jwks_requests == 2
        assert_unauthenticated(await http.get(path, headers=headers(old)))

        # The client's principal is its id, not the key: its retry is still a replay.
        retry = await http.post(
            "/api/v1/orders",
            json=body,
            headers=headers(issuer.token(service_claims, key=new_key_), key),
        )
        assert (retry.status_code, retry.headers.get("idempotent-replayed")) == (201, "true")
        assert retry.content == first.content


async def test_a_flood_of_unknown_kids_fetches_the_jwks_at_most_once_per_interval(
    database_url: str, issuer: FakeIssuer
) -> None:
    async with oidc_client(
        database_url, issuer, oidc_jwks_refresh_min_interval=timedelta(hours=1)
    ) as (http, _):
        path = await ledger_path(http)
        good = issuer.token(issuer.claims(["payments-admin"]))
        assert (await http.get(path, headers=headers(good))).status_code == 200
        assert issuer.jwks_requests == 1
        for _ in range(20):
            rogue = RSAKey.generate_key(2048, parameters={"kid": secrets.token_hex(8)})
            token = jwt.encode(
                {"alg": "RS256", "kid": rogue.kid}, issuer.claims(["payments-admin"]), rogue
            )
            assert_unauthenticated(await http.get(path, headers=headers(token)))
        assert issuer.jwks_requests == 1
        # The cached keys still verify the issuer's tokens.
        assert (await http.get(path, headers=headers(good))).status_code == 200
        assert issuer.jwks_requests == 1


async def test_an_explicit_jwks_url_skips_discovery(database_url: str, issuer: FakeIssuer) -> None:
    async with oidc_client(
        database_url, issuer, oidc_jwks_url=f"{issuer.issuer}/protocol/openid-connect/certs"
    ) as (http, _):
        token = issuer.token(issuer.claims(["order-service"]))
        created = await create_order(http, token, buyer_id="b")
        assert created.status_code == 201, created.text
        assert issuer.jwks_requests == 1


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "setting"),
    [({"oidc_audience": ""}, "AUDIENCE"), ({"oidc_role_map": {}}, "ROLE_MAP")],
)
def test_an_issuer_without_audience_or_role_map_refuses_startup(
    tmp_path: Path, missing: dict[str, Any], setting: str
) -> None:
    values: dict[str, Any] = {
        "oidc_issuer": "https://idp.example/realms/shop",
        "oidc_audience": AUDIENCE,
        "oidc_role_map": ROLE_MAP,
        **missing,
    }
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", **values)
    with pytest.raises(ConfigurationRefused, match=f"TILLPOINT_OIDC_{setting} is empty"):
        preflight(settings)
    with pytest.raises(ConfigurationRefused, match=f"TILLPOINT_OIDC_{setting} is empty"):
        build(settings)


async def test_without_an_issuer_there_is_no_verifier(tmp_path: Path) -> None:
    settings = settings_for(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    preflight(settings)
    container = build(settings)
    try:
        assert container.oidc is None
    finally:
        await container.aclose()
