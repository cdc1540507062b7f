"""Payment providers: what every adapter (the mock gateway, Stripe, …) does, in our terms.

Answers are domain `Outcome`s; a provider SDK's types never cross this boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, PaymentMethod


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    payment_id: str
    order_id: str
    amount: Money
    capture: bool
    payment_method: PaymentMethod


class ProviderTimeout(Exception):
    """The call took too long: the outcome is unknown until the provider is asked."""


class ProviderUnavailable(Exception):
    """The provider could not be reached; nothing happened there."""


class ProviderError(Exception):
    """The provider answered with an error that is not a decline."""


class PaymentProvider(Protocol):
    name: str

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        """Authorize (and capture when `req.capture`). A decline is a FAILED outcome."""
        ...

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome: ...

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome: ...

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome: ...

    async def get_transaction(self, idempotency_key: str) -> Outcome | None:
        """The truth about the operation sent with `idempotency_key`; None if never seen."""
        ...


class Providers(Protocol):
    def __getitem__(self, name: str) -> PaymentProvider: ...

    def __contains__(self, name: object) -> bool: ...


@runtime_checkable
class MockControl(Protocol):
    """What only the mock gateway can do: decide a pending payment's outcome on request."""

    async def complete(
        self,
        *,
        idempotency_key: str,
        payment_id: str,
        amount: Money,
        capture: bool,
        success: bool,
        failure_code: str | None,
    ) -> Outcome: ...
