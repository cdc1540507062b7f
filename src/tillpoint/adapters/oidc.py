"""OIDC bearer tokens: JWTs from one issuer (a Keycloak realm, say), verified with `joserfc`.

Only asymmetric signatures (RS256, PS256, ES256) with a key of the issuer's JWKS are accepted;
`iss` (exact), `aud` (ours among them), `exp`, `nbf` and `iat` are checked with a leeway. The
JWKS is cached; a token whose `kid` is not in it refetches the JWKS, at most once per
`refresh_min_interval`, so the issuer's key rotation works without a restart and a flood of
made-up kids cannot hammer the issuer.

Roles are read from claim paths (`realm_access.roles`, `resource_access.*.roles`) and mapped to
ours; the most privileged one wins. A token is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import httpx
import structlog
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from tillpoint.service.identity import Principal

log = structlog.get_logger("tillpoint.oidc")

ALGORITHMS = ("RS256", "PS256", "ES256")
# Most privileged first: a token with several mapped roles acts with the first of these.
PRIVILEGE = ("admin", "service", "customer")


def looks_like_jwt(token: str) -> bool:
    """Three non-empty dot-separated parts (a JWS compact serialization)."""
    parts = token.split(".")
    return len(parts) == 3 and all(parts)


def claim_values(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings at a dotted path; a `*` segment matches every key of an object."""
    current: list[Any] = [claims]
    for segment in path.split("."):
        found: list[Any] = []
        for node in current:
            if not isinstance(node, Mapping):
                continue
            if segment == "*":
                found.extend(node.values())
            elif segment in node:
                found.append(node[segment])
        current = found
    values: list[str] = []
    for node in current:
        items = node if isinstance(node, list) else [node]
        values.extend(item for item in items if isinstance(item, str))
    return values


def _header(token: str) -> dict[str, Any] | None:
    """The unverified JOSE header, only to pick the key and refuse other algorithms early."""
    segment = token.split(".", 1)[0]
    try:
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        return None
    return value if isinstance(value, dict) else None


class OidcVerifier:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        role_map: Mapping[str, str],
        role_claims: Iterable[str] = ("realm_access.roles", "resource_access.*.roles"),
        subject_claim: str = "sub",
        jwks_url: str = "",
        leeway: float = 30.0,
        refresh_min_interval: float = 30.0,
        timeout: float = 5.0,
        http: httpx.AsyncClient | None = None,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.role_map = dict(role_map)
        self.role_claims = tuple(role_claims)
        self.subject_claim = subject_claim
        self.leeway = leeway
        self.refresh_min_interval = refresh_min_interval
        self._jwks_url = jwks_url
        self._http = http or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._now = now
        self._monotonic = monotonic
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None  # monotonic time of the last attempt
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def authenticate(self, token: str) -> Principal | None:
        """The principal a valid token stands for; None for anything else (never raises)."""
        try:
            return await self._authenticate(token)
        except (JoseError, ValueError, TypeError) as exc:
            log.info("oidc.rejected", reason=type(exc).__name__)
            return None

    async def _authenticate(self, token: str) -> Principal | None:
        if not looks_like_jwt(token):
            return None
        header = _header(token)
        if header is None or header.get("alg") not in ALGORITHMS:
            log.info("oidc.rejected", reason="algorithm")
            return None
        kid = header.get("kid")
        if not isinstance(kid, str):
            log.info("oidc.rejected", reason="no kid")
            return None
        key = await self._key(kid)
        if key is None:
            log.info("oidc.rejected", reason="unknown kid")
            return None
        decoded = jwt.decode(token, key, algorithms=list(ALGORITHMS))
        claims = decoded.claims
        jwt.JWTClaimsRegistry(
            now=int(self._now()),
            leeway=int(self.leeway),
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        ).validate(claims)
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal | None:
        names = {name for path in self.role_claims for name in claim_values(claims, path)}
        mapped = {self.role_map[name] for name in names if name in self.role_map}
        role = next((r for r in PRIVILEGE if r in mapped), None)
        if role is None:
            log.info("oidc.rejected", reason="no mapped role")
            return None
        if role == "customer":
            subject = claims.get(self.subject_claim)
            if not isinstance(subject, str) or not subject:
                log.info("oidc.rejected", reason="no subject")
                return None
            return Principal(id=f"oidc:user:{subject}", role=role, subject=subject)
        client = claims.get("azp") or claims.get("client_id")
        if isinstance(client, str) and client:
            return Principal(id=f"oidc:{client}", role=role)
        sub = claims.get("sub")
        if isinstance(sub, str) and sub:
            return Principal(id=f"oidc:user:{sub}", role=role)
        log.info("oidc.rejected", reason="no client or subject")
        return None

    # --- the JWKS ------------------------------------------------------------------------

    async def _key(self, kid: str) -> Key | None:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:  # one fetch at a time; the others then find its result
            if kid in self._keys:
                return self._keys[kid]
            last = self._fetched_at
            if last is not None and self._monotonic() - last < self.refresh_min_interval:
                return None
            self._fetched_at = self._monotonic()
            try:
                self._keys = await self._fetch_keys()
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                log.warning("oidc.jwks_unavailable", reason=f"{type(exc).__name__}: {exc}"[:300])
                return None
            return self._keys.get(kid)

    async def _fetch_keys(self) -> dict[str, Key]:
        url = self._jwks_url or await self._discover()
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        keys: dict[str, Key] = {}
        for item in document["keys"]:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            if not isinstance(item.get("kid"), str) or item.get("kty") not in ("RSA", "EC"):
                continue
            try:
                imported = KeySet.import_key_set({"keys": [item]}).keys[0]
            except (JoseError, ValueError, TypeError):
                log.warning("oidc.jwks_key_skipped", kid=item["kid"])
                continue
            keys[item["kid"]] = imported
        log.info("oidc.jwks_fetched", url=url, keys=len(keys))
        return keys

    async def _discover(self) -> str:
        url = f"{self.issuer.rstrip('/')}/.well-known/openid-configuration"
        response = await self._http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        document = response.json()
        if document.get("issuer") != self.issuer:
            raise ValueError(f"the discovery document at {url} names another issuer")
        jwks_uri = document["jwks_uri"]
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise ValueError(f"the discovery document at {url} has no jwks_uri")
        self._jwks_url = jwks_uri
        return jwks_uri
