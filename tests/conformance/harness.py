"""What the conformance suite needs to know of each adapter, and nothing else: how a storefront
would name a test card for it, how to read what happened on the provider's side, how to lose
a call's answer after the provider acted (a timeout "at the transport"), and how to act at the
provider behind tillpoint's back, as its dashboard or another integration would (the mock: its
dashboard; Stripe: the SDK straight at localstripe).

A new adapter (Adyen) joins the suite by adding a `Harness` here; the tests stay as they are.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import httpx
import pytest
import sqlalchemy as sa
import stripe

from tests.support.localstripe import LocalStripe
from tillpoint.adapters.db import tables as t
from tillpoint.adapters.providers.mock import MockGateway
from tillpoint.adapters.providers.resilient import Resilient
from tillpoint.adapters.providers.stripe import METADATA_KEY, HTTPClient, StripeGateway
from tillpoint.bootstrap import Container
from tillpoint.domain.money import Money
from tillpoint.domain.payment import PaymentMethod
from tillpoint.service.ports import AuthorizeRequest, PaymentProvider, ProviderTimeout

Card = Literal["success", "decline", "three_d_secure"]
Operation = Literal["authorize", "capture", "void", "refund"]
Elsewhere = Literal["refund", "capture", "cancel", "dispute"]


@dataclass(frozen=True)
class ProviderSide:
    """A payment as the provider's own records show it."""

    captured_minor: int  # money taken and kept (before refunds)
    refunds: list[int]  # our refunds, in minor units (never the provider's own releases)
    canceled: bool


class Harness(Protocol):
    name: str
    prefix: str  # of its provider payment ids
    currency: str

    def settings(self) -> dict[str, Any]: ...

    async def card(self, kind: Card) -> dict[str, Any]: ...

    async def side(self, container: Container, provider_payment_id: str) -> ProviderSide: ...

    def losing_the_answer(
        self, container: Container, monkeypatch: pytest.MonkeyPatch, operation: Operation
    ) -> AbstractContextManager[None]: ...

    async def out_of_band(
        self,
        container: Container,
        provider_payment_id: str,
        action: Elsewhere,
        minor: int | None = None,
    ) -> None:
        """Act on the payment at the provider, as a support agent in its dashboard would:
        tillpoint makes no call and hears nothing."""
        ...

    async def created_out_of_band(self, container: Container, minor: int) -> str:
        """A sale made at the provider without tillpoint; its provider payment id."""
        ...

    async def completed_without_webhook(
        self, container: Container, payment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The customer finishes the payment's 3-D Secure step at the provider; the webhook
        that would tell tillpoint is lost."""
        ...


def adapter_of(container: Container, name: str) -> PaymentProvider:
    """The adapter itself, under the resilient call layer."""
    provider = container.deps.providers[name]
    assert isinstance(provider, Resilient)
    return provider.inner


@dataclass
class MockHarness:
    name: str = "mock"
    prefix: str = "mock_pi_"
    currency: str = "EUR"

    def settings(self) -> dict[str, Any]:
        return {}

    async def card(self, kind: Card) -> dict[str, Any]:
        token = {
            "success": "pm_card_visa",
            "decline": "pm_card_chargeDeclined",
            "three_d_secure": "pm_card_threeDSecure",
        }[kind]
        return {"type": "card", "token": token}

    async def side(self, container: Container, provider_payment_id: str) -> ProviderSide:
        ledger = t.mock_gateway_ledger
        async with container.engine.connect() as conn:
            rows = (
                await conn.execute(
                    sa.select(ledger.c.operation, ledger.c.status, ledger.c.amount_minor).where(
                        ledger.c.provider_payment_id == provider_payment_id
                    )
                )
            ).all()
        captured = sum(
            r.amount_minor
            for r in rows
            if r.status == "CAPTURED" and r.operation in ("authorize", "capture")
        )
        return ProviderSide(
            captured_minor=captured,
            refunds=sorted(r.amount_minor for r in rows if r.operation == "refund"),
            canceled=any(r.operation == "void" and r.status == "CANCELED" for r in rows),
        )

    @contextmanager
    def losing_the_answer(
        self, container: Container, monkeypatch: pytest.MonkeyPatch, operation: Operation
    ) -> Iterator[None]:
        """The mock has no transport: its call acts (records its effect), then the answer is
        lost as a timeout, exactly what a transport timeout after the provider acted is."""
        mock = adapter_of(container, self.name)
        act: Callable[..., Awaitable[Any]] = getattr(mock, operation)

        async def acts_then_times_out(*args: Any, **kwargs: Any) -> Any:
            await act(*args, **kwargs)
            raise ProviderTimeout(f"mock {operation}: the answer was lost")

        monkeypatch.setattr(mock, operation, acts_then_times_out)
        try:
            yield
        finally:
            monkeypatch.setattr(mock, operation, act)

    async def out_of_band(
        self,
        container: Container,
        provider_payment_id: str,
        action: Elsewhere,
        minor: int | None = None,
    ) -> None:
        amount = Money(minor, self.currency).format() if minor is not None else None
        await container.mock.dashboard(
            provider_payment_id, action, key=secrets.token_hex(16), amount=amount, webhook="never"
        )

    async def created_out_of_band(self, container: Container, minor: int) -> str:
        """Another integration's sale on the same mock account: no payment id of ours."""
        mock = adapter_of(container, self.name)
        assert isinstance(mock, MockGateway)
        request = AuthorizeRequest(
            payment_id="",
            order_id="elsewhere",
            amount=Money(minor, self.currency),
            capture=True,
            payment_method=PaymentMethod(token="pm_card_visa"),
        )
        outcome = await mock.authorize(request, idempotency_key=f"elsewhere:{secrets.token_hex(8)}")
        assert outcome.provider_payment_id is not None
        return outcome.provider_payment_id

    async def completed_without_webhook(
        self, container: Container, payment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        mock = adapter_of(container, self.name)
        assert isinstance(mock, MockGateway)
        monkeypatch.setattr(mock, "listeners", [])  # the webhook simulator hears nothing
        async with container.engine.connect() as conn:
            ledger = t.mock_gateway_ledger
            key = (
                await conn.execute(
                    sa.select(ledger.c.idempotency_key).where(
                        ledger.c.provider_payment_id == payment["provider_payment_id"],
                        ledger.c.operation == "authorize",
                    )
                )
            ).scalar_one()
        await mock.complete(
            idempotency_key=key,
            payment_id=payment["payment_id"],
            amount=Money.parse(payment["amount"], payment["currency"]),
            capture=True,
            success=True,
            failure_code=None,
        )


class LosingTransport(httpx.AsyncBaseTransport):
    """Forwards every request; for the first one whose path matches, reads Stripe's answer
    and then raises a read timeout, as a connection that dies on the way back would."""

    def __init__(self, inner: httpx.AsyncBaseTransport, path_part: str) -> None:
        self.inner = inner
        self.path_part = path_part
        self.lost: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.lost and request.method == "POST" and self.path_part in request.url.path:
            await response.aread()
            self.lost.append(request.url.path)
            raise httpx.ReadTimeout("the answer was lost on the way back", request=request)
        return response


STRIPE_PATHS: dict[Operation, str] = {
    "authorize": "/v1/payment_intents",
    "capture": "/capture",
    "void": "/cancel",
    "refund": "/v1/refunds",
}
STRIPE_CARDS: dict[Card, str] = {
    "success": "4242424242424242",
    "decline": "4000000000000341",
    "three_d_secure": "4000002500003155",
}


@dataclass
class StripeHarness:
    localstripe: LocalStripe
    name: str = "stripe"
    prefix: str = "pi_"
    currency: str = "USD"
    _methods: dict[Card, str] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        return {
            "stripe_api_key": self.localstripe.api_key,
            "stripe_api_base": self.localstripe.url,
        }

    async def card(self, kind: Card) -> dict[str, Any]:
        """A PaymentMethod made at localstripe from Stripe's test card, as Stripe.js would:
        tillpoint only ever sees the `pm_…` id and display data."""
        token = await self.localstripe.payment_method(STRIPE_CARDS[kind])
        return {"type": "card", "token": token, "brand": "visa", "last4": STRIPE_CARDS[kind][-4:]}

    async def side(self, container: Container, provider_payment_id: str) -> ProviderSide:
        pi = await self.localstripe.payment_intent(provider_payment_id)
        charge = pi.get("latest_charge") or {}
        refunds = await self.localstripe.refunds(provider_payment_id)
        ours = [r for r in refunds if (r.get("metadata") or {}).get(METADATA_KEY)]
        # localstripe records the uncaptured rest of a partial capture as a refund of its own
        released = sum(r["amount"] for r in refunds if r not in ours)
        captured = charge.get("amount", 0) - released if charge.get("captured") else 0
        return ProviderSide(
            captured_minor=captured,
            refunds=sorted(r["amount"] for r in ours),
            canceled=pi["status"] == "canceled",
        )

    @contextmanager
    def losing_the_answer(
        self, container: Container, monkeypatch: pytest.MonkeyPatch, operation: Operation
    ) -> Iterator[None]:
        gateway = adapter_of(container, self.name)
        assert isinstance(gateway, StripeGateway)
        client: httpx.AsyncClient = gateway._http._client_async
        transport = LosingTransport(client._transport, STRIPE_PATHS[operation])
        monkeypatch.setattr(client, "_transport", transport)
        try:
            yield
        finally:
            monkeypatch.setattr(client, "_transport", transport.inner)
        assert transport.lost, f"no {operation} request went to localstripe"

    @asynccontextmanager
    async def _dashboard(self) -> AsyncIterator[stripe.StripeClient]:
        """The SDK pointed at localstripe, not through tillpoint: what Stripe's Dashboard (or
        another integration on the account) does."""
        http = HTTPClient(timeout=30)
        try:
            yield stripe.StripeClient(
                self.localstripe.api_key,
                base_addresses={"api": self.localstripe.url},
                max_network_retries=0,
                http_client=http,
            )
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]

    async def out_of_band(
        self,
        container: Container,
        provider_payment_id: str,
        action: Elsewhere,
        minor: int | None = None,
    ) -> None:
        if action == "dispute":  # Stripe: the card network opens it (test card …0259)
            body: dict[str, Any] = {"payment_intent": provider_payment_id}
            if minor is not None:
                body["amount"] = minor
            async with httpx.AsyncClient(base_url=self.localstripe.url, timeout=30) as http:
                (await http.post("/_config/disputes", json=body)).raise_for_status()
            return
        async with self._dashboard() as client:
            pis = client.v1.payment_intents
            if action == "refund":
                params: dict[str, Any] = {"payment_intent": provider_payment_id}
                if minor is not None:
                    params["amount"] = minor
                await client.v1.refunds.create_async(params)  # type: ignore[arg-type]
            elif action == "capture":
                capture = {"amount_to_capture": minor} if minor is not None else {}
                await pis.capture_async(provider_payment_id, capture)  # type: ignore[arg-type]
            else:
                await pis.cancel_async(provider_payment_id)

    async def completed_without_webhook(
        self, container: Container, payment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # localstripe sends no webhooks: the 3-D Secure step finished there is heard by nobody.
        await self.localstripe.authenticate(
            payment["provider_payment_id"], payment["client_secret"], success=True
        )

    async def created_out_of_band(self, container: Container, minor: int) -> str:
        token = await self.localstripe.payment_method(STRIPE_CARDS["success"])
        async with self._dashboard() as client:
            pi = await client.v1.payment_intents.create_async(
                {
                    "amount": minor,
                    "currency": self.currency.lower(),
                    "payment_method": token,
                    "confirm": True,
                }
            )
        return str(pi.id)
