"""A fake Keycloak realm on loopback and the tokens it mints, for the OIDC-driven suites.

The issuer is a real HTTP server (aiohttp on a kernel-chosen port) serving a discovery document
and a JWKS of generated RSA and EC keys; tokens carry Keycloak's claims (`aud` list, `azp`, a
UUID `sub`, `realm_access.roles`, `resource_access.<client>.roles`). `ROLE_MAP` is what the
service is configured with (`TILLPOINT_OIDC_ROLE_MAP`): the realm's role names, mapped to ours.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.conftest import settings_for
from tests.support.asgi import asgi_client
from tillpoint.bootstrap import Container, build
from tillpoint.config import Settings

AUDIENCE: Final = "tillpoint-api"
ROLE_MAP: Final = {"payments-admin": "admin", "order-service": "service", "customer": "customer"}
# Our role -> the realm role that maps to it.
REALM_ROLE: Final = {ours: theirs for theirs, ours in ROLE_MAP.items()}

Signer = RSAKey | ECKey


class FakeIssuer:
    """A Keycloak realm's discovery document and JWKS; counts the JWKS requests."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": f"rsa-{secrets.token_hex(4)}"})
        self.ec = ECKey.generate_key("P-256", parameters={"kid": f"ec-{secrets.token_hex(4)}"})
        self.published: list[Signer] = [self.rsa, self.ec]
        self.jwks_requests = 0
        self.issuer = ""

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**k.as_dict(private=False), "use": "sig"} for k in self.published]}

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/protocol/openid-connect/certs",
                "id_token_signing_alg_values_supported": ["RS256", "ES256", "PS256"],
            }
        )

    async def certs(self, request: web.Request) -> web.Response:
        self.jwks_requests += 1
        return web.json_response(self.jwks())

    def claims(self, roles: list[str], **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        values: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [AUDIENCE, "account"],
            "azp": "checkout",
            "sub": str(uuid.uuid4()),
            "typ": "Bearer",
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": ["offline_access", *roles]},
            "resource_access": {"account": {"roles": ["view-profile"]}},
        }
        values.update(overrides)
        return values

    def token(self, claims: dict[str, Any], key: Signer | None = None, alg: str = "") -> str:
        key = key or self.rsa
        alg = alg or ("ES256" if isinstance(key, ECKey) else "RS256")
        return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)

    def token_for(self, role: str, *, subject: str | None = None, **overrides: Any) -> str:
        """A valid token whose realm role maps to our `role` (`admin`, `service`, `customer`);
        a customer's `subject` is its buyer_id. Valid for 5 minutes."""
        claims = self.claims([REALM_ROLE[role]], **overrides)
        if subject is not None:
            claims["sub"] = subject
        return self.token(claims)


@asynccontextmanager
async def serve(issuer: FakeIssuer) -> AsyncIterator[FakeIssuer]:
    app = web.Application()
    app.router.add_get("/realms/shop/.well-known/openid-configuration", issuer.discovery)
    app.router.add_get("/realms/shop/protocol/openid-connect/certs", issuer.certs)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        issuer.issuer = f"http://127.0.0.1:{port}/realms/shop"
        yield issuer
    finally:
        await runner.cleanup()


def oidc_settings(database_url: str, issuer: FakeIssuer, **overrides: Any) -> Settings:
    """The suite's settings (API keys included) with `issuer` as the OIDC issuer."""
    return settings_for(
        database_url,
        oidc_issuer=issuer.issuer,
        oidc_audience=AUDIENCE,
        oidc_role_map=ROLE_MAP,
        **overrides,
    )


@asynccontextmanager
async def oidc_client(
    database_url: str, issuer: FakeIssuer, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Container]]:
    """An in-process client of the API trusting `issuer`, and the container behind it."""
    container = build(oidc_settings(database_url, issuer, **overrides))
    try:
        async with asgi_client(container) as http:
            yield http, container
    finally:
        await container.aclose()
