"""FastAPI dependencies: the container, the authenticated principal and role checks.

Dependencies only read: nothing commits here. They are `async def` so FastAPI calls them on
the event loop instead of hopping through its thread pool on every request.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tillpoint.bootstrap import Container
from tillpoint.domain.order import ChangeContext
from tillpoint.entrypoints.api.context import correlation_id_var
from tillpoint.service.context import Deps
from tillpoint.service.identity import Principal


class ApiError(Exception):
    """An HTTP-level refusal (auth, idempotency headers) rendered as a problem document."""

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers


async def get_container(request: Request) -> Container:
    container: Container = request.app.state.container
    return container


ContainerDep = Annotated[Container, Depends(get_container)]


async def get_deps(container: ContainerDep) -> Deps:
    return container.deps


DepsDep = Annotated[Deps, Depends(get_deps)]


BEARER = HTTPBearer(
    scheme_name="bearer",
    description=(
        "an API key (`TILLPOINT_API_KEYS`) or, when `TILLPOINT_OIDC_ISSUER` is set, an access "
        "token (JWT) of that OIDC issuer; the key's or the token's role decides what it may do"
    ),
    auto_error=False,
)


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


async def admit(request: Request, container: Container, rate_class: str, caller: str) -> None:
    """Count the request against its rate limit; over it, 429 `rate_limited`. Runs before the
    route's body, so before the idempotency layer: a 429 is never stored under a key."""
    verdict = await container.rate_limiter.hit(rate_class, caller)
    if verdict is None:
        return
    headers = verdict.headers()
    request.state.rate_limit_headers = headers  # put on the answer by RequestContextMiddleware
    if not verdict.allowed:
        raise ApiError(
            "rate_limited",
            f"too many requests; retry in {headers['Retry-After']} s",
            headers=headers,
        )


async def limit_webhooks(request: Request, container: ContainerDep) -> None:
    """Webhooks carry no token: their senders are counted per address."""
    await admit(request, container, "webhooks", f"address:{client_address(request)}")


async def authenticate(
    request: Request,
    container: ContainerDep,
    declared: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
) -> Principal:
    """`BEARER` only declares the scheme in the OpenAPI document; the header is read here."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    principal = None
    if scheme.lower() == "bearer" and token:
        principal = container.keys.authenticate(token)
        if principal is None and container.oidc is not None:
            # Not a known key: an OIDC access token, if it is a valid JWT of the issuer.
            principal = await container.oidc.authenticate(token)
    if principal is None:
        # Failed attempts are counted per address: guessing keys is slow.
        await admit(request, container, "anonymous", f"address:{client_address(request)}")
        if scheme.lower() != "bearer" or not token:
            detail = "send `Authorization: Bearer <api key>`"
        elif container.oidc is None:
            detail = "unknown API key"
        else:
            detail = "unknown API key or bad token"
        raise ApiError("unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"})
    await admit(request, container, principal.role, principal.id)
    return principal


def require(*roles: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """Admin may do everything; a customer outside its routes sees 404, not 403."""
    allowed = {"admin", *roles}

    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if principal.role in allowed:
            return principal
        if principal.role == "customer":
            raise ApiError("not_found", "not found")
        raise ApiError("forbidden", f"the {principal.role} role may not do this")

    return check


Service = Annotated[Principal, Depends(require("service"))]
Admin = Annotated[Principal, Depends(require())]
ServiceOrCustomer = Annotated[Principal, Depends(require("service", "customer"))]


def change_context(principal: Principal, source: str = "api") -> ChangeContext:
    return ChangeContext(source=source, actor=principal.id, correlation_id=correlation_id_var.get())


def buyer_scope(principal: Principal) -> str | None:
    """A customer sees only its own orders and payments."""
    if principal.role == "customer":
        return principal.subject or "\x00no-subject"
    return None
