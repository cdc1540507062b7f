"""The Keycloak realm of docs/auth.md, as its example file, works with the settings the page
gives: tokens shaped the way that realm issues them verify and act with the right roles.

`docs/examples/keycloak-realm-shop.json` is read for what Keycloak would put in a token (the
audience mapper's audience, the service account's realm roles, the calling client's id);
the settings are read from the page's own `TILLPOINT_OIDC_*` lines. The fake issuer stands in
for the realm's signing keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import headers, new_key, settings_for
from tests.support.asgi import asgi_client
from tests.support.flows import new_order_id
from tests.support.oidc import FakeIssuer, serve
from tillpoint.bootstrap import build

DOCS = Path(__file__).parent.parent.parent / "docs"
REALM: dict[str, Any] = json.loads((DOCS / "examples" / "keycloak-realm-shop.json").read_text())
PAGE = (DOCS / "auth.md").read_text()


def documented(name: str) -> str:
    match = re.search(rf"^{name}=(.+)$", PAGE, re.MULTILINE)
    assert match is not None, f"docs/auth.md sets no {name}"
    return match.group(1).strip().strip("'")


AUDIENCE = documented("TILLPOINT_OIDC_AUDIENCE")
ROLE_MAP: dict[str, str] = json.loads(documented("TILLPOINT_OIDC_ROLE_MAP"))


def client(client_id: str) -> dict[str, Any]:
    return next(c for c in REALM["clients"] if c["clientId"] == client_id)


def audiences(client_id: str) -> list[str]:
    """What the client's audience mappers add to its access tokens' `aud`."""
    return [
        m["config"]["included.client.audience"]
        for m in client(client_id).get("protocolMappers", [])
        if m["protocolMapper"] == "oidc-audience-mapper"
        and m["config"].get("access.token.claim") == "true"
    ]


def test_the_realm_has_every_mapped_role_and_the_audience_client() -> None:
    realm_roles = {role["name"] for role in REALM["roles"]["realm"]}

    assert set(ROLE_MAP) <= realm_roles
    assert set(ROLE_MAP.values()) == {"admin", "service", "customer"}
    assert client(AUDIENCE)["serviceAccountsEnabled"] is False  # it logs nobody in
    for calling in ("order-service", "shop-frontend"):
        assert AUDIENCE in audiences(calling), calling


def test_the_example_holds_no_secret() -> None:
    text = json.dumps(REALM)
    assert '"secret"' not in text
    assert "password" not in text.lower()


@pytest.fixture
async def issuer() -> AsyncIterator[FakeIssuer]:
    async with serve(FakeIssuer()) as running:
        yield running


@pytest.fixture
def realm_settings(database_url: str, issuer: FakeIssuer) -> Any:
    return settings_for(
        database_url,
        oidc_issuer=issuer.issuer,
        oidc_audience=AUDIENCE,
        oidc_role_map=ROLE_MAP,
    )


async def test_a_token_of_the_realms_service_account_acts_as_service(
    realm_settings: Any, issuer: FakeIssuer
) -> None:
    account = next(u for u in REALM["users"] if u.get("serviceAccountClientId") == "order-service")
    token = issuer.token(
        issuer.claims(
            account["realmRoles"],
            azp="order-service",
            aud=[*audiences("order-service"), "account"],
        )
    )
    body = {"order_id": new_order_id(), "buyer_id": "b-1", "amount": "10.00", "currency": "USD"}
    container = build(realm_settings)
    try:
        async with asgi_client(container) as http:
            created = await http.post(
                "/api/v1/orders", json=body, headers=headers(token, new_key())
            )
            read = await http.get(f"/api/v1/orders/{body['order_id']}", headers=headers(token))
            admin_only = await http.get("/api/v1/payments", headers=headers(token))
    finally:
        await container.aclose()

    assert created.status_code == 201, created.text
    assert [entry["actor"] for entry in read.json()["history"]] == ["oidc:order-service"]
    assert admin_only.status_code == 403


async def test_a_token_without_the_audience_mapper_is_refused(
    realm_settings: Any, issuer: FakeIssuer
) -> None:
    token = issuer.token(issuer.claims(["order-service"], azp="order-service", aud=["account"]))
    container = build(realm_settings)
    try:
        async with asgi_client(container) as http:
            refused = await http.get("/api/v1/orders/ord-x", headers=headers(token))
    finally:
        await container.aclose()

    assert refused.status_code == 401
