"""Payment providers: what every adapter (the mock gateway, Stripe, …) does, in our terms.

Answers are domain `Outcome`s; a provider SDK's types never cross this boundary. What an adapter
can do is declared in its `Capabilities`, checked before a payment is created, so a payment the
provider would refuse for its currency, amount or capture method is a 422 before any call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    CaptureMethod,
    OperationKind,
    Outcome,
    PaymentMethod,
    ProviderStatus,
)


@dataclass(frozen=True, slots=True)
class AuthorizeRequest:
    payment_id: str
    order_id: str
    amount: Money
    capture: bool
    payment_method: PaymentMethod


@dataclass(frozen=True, slots=True)
class Lookup:
    """What we know of an operation whose outcome we ask for (`get_transaction`): the
    provider key it was sent with, and the provider's payment id when the payment has one."""

    idempotency_key: str
    kind: OperationKind
    payment_id: str
    provider_payment_id: str | None
    amount: Money
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ProviderRefund:
    """A refund as the provider keeps it, whoever made it (our call or its dashboard)."""

    reference: str  # the provider's refund id (`re_…`)
    amount_minor: int
    status: ProviderStatus  # REFUNDED (succeeded), PROCESSING (pending) or FAILED
    # The provider idempotency key we sent it with (`pay_…:refund:3`), when we made it; None
    # for a refund made at the provider (a support agent in its dashboard).
    idempotency_key: str | None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderDispute:
    """A chargeback as the provider reports it."""

    reference: str  # the provider's dispute id (`dp_…`)
    amount_minor: int
    reason: str
    status: str  # needs_response | under_review | won | lost
    evidence_due_by: datetime | None = None


@dataclass(frozen=True, slots=True)
class ProviderPayment:
    """The provider's whole view of one payment, for reconciliation: where it stands, how much
    money moved, and every refund and dispute it has, made by us or not."""

    provider_payment_id: str
    status: ProviderStatus  # REQUIRES_ACTION, PROCESSING, AUTHORIZED, CAPTURED, REFUNDED, …
    currency: str
    amount_minor: int  # what was asked for
    authorized_minor: int  # held and not yet captured or released
    captured_minor: int
    refunded_minor: int  # succeeded refunds
    created_at: datetime
    # Our payment id, when the provider carries it (metadata); None for a payment we never
    # made (created in the provider's dashboard or by another integration).
    payment_id: str | None = None
    refunds: tuple[ProviderRefund, ...] = ()
    disputes: tuple[ProviderDispute, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """The smallest and largest charge a provider takes in a currency, in minor units."""

    minimum: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter supports (the capability matrix of docs/providers.md)."""

    manual_capture: bool
    partial_capture: bool
    multiple_partial_refunds: bool
    async_outcomes: bool
    three_d_secure: bool
    cancel_after_authorization: bool
    # Currencies the provider charges in, with their limits; empty: every currency we know.
    currencies: Mapping[str, Limits] = field(default_factory=dict)
    # What `payment_method.token` must start with (Stripe: a PaymentMethod id, `pm_`); None:
    # the provider takes a payment without a token, and any token.
    token_prefix: str | None = None
    # Whether `payments(...)` lists the provider's payments of a window (so reconciliation
    # finds payments we do not know); without it only our own are looked up one by one.
    lists_payments: bool = False

    def check_token(self, provider: str, token: str | None, *, confirming: bool) -> None:
        """Refuse (422) a payment method this provider cannot charge: a token of the wrong
        kind, or, when the payment is being confirmed, none at all."""
        if self.token_prefix is None or (token is None and not confirming):
            return
        if token is None or not token.startswith(self.token_prefix):
            raise ValidationFailed(
                "payment_method.token",
                f"provider {provider!r} needs a payment method token starting with "
                f"{self.token_prefix!r} (made by the provider's client library)",
            )

    def check(self, provider: str, amount: Money, capture_method: CaptureMethod) -> None:
        """Refuse (422) a payment this provider would reject, before anything is stored."""
        if capture_method is CaptureMethod.MANUAL and not self.manual_capture:
            raise ValidationFailed(
                "capture_method", f"provider {provider!r} does not support manual capture"
            )
        if not self.currencies:
            return
        limits = self.currencies.get(amount.currency)
        if limits is None:
            raise ValidationFailed(
                "amount.currency", f"provider {provider!r} does not charge in {amount.currency}"
            )
        if not limits.minimum <= amount.minor <= limits.maximum:
            low = Money(limits.minimum, amount.currency).format()
            high = Money(limits.maximum, amount.currency).format()
            raise ValidationFailed(
                "amount",
                f"provider {provider!r} charges between {low} and {high} {amount.currency}",
            )


class ProviderTimeout(Exception):
    """No answer in time: the call may have acted; unknown until the provider is asked.
    Not retried (the janitor asks instead of sending the call again)."""


class ProviderServerError(ProviderTimeout):
    """The provider answered with a server error (5xx) or asked us to slow down (429): the
    outcome is unknown, and re-sending with the same idempotency key is safe, so it is retried."""


class ProviderUnavailable(Exception):
    """The provider could not be reached: nothing happened there. Retried."""


class CircuitOpen(ProviderUnavailable):
    """The provider's circuit breaker is open: the call was not made at all."""


class ProviderError(Exception):
    """The provider refused the call itself (not a decline): nothing happened there."""


class PaymentProvider(Protocol):
    name: str
    capabilities: Capabilities

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

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        """The truth about the operation sent with `lookup.idempotency_key`; None if the
        provider never saw it."""
        ...

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        """The provider's view of one payment; None if it has no such payment."""
        ...

    def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        """Every payment the provider has created in [created_from, created_to), page by page
        (only when `capabilities.lists_payments`; otherwise it yields nothing)."""
        ...

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        """The secret a storefront needs to finish a customer step with the provider's own
        client library (Stripe.js); None when the provider has none. Never stored."""
        ...

    def available(self) -> bool:
        """False while the provider's circuit is open: a call now would fail fast."""
        ...

    async def aclose(self) -> None:
        """Release the adapter's connections (the service is stopping)."""
        ...


class Providers(Protocol):
    def __getitem__(self, name: str) -> PaymentProvider: ...

    def __contains__(self, name: object) -> bool: ...

    def __iter__(self) -> Iterator[str]: ...


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


@dataclass(frozen=True, slots=True)
class ProviderCall:
    """One outbound call to a provider, as the audit keeps it (`provider_call_audit`).
    Bodies are redacted before they get here: no secrets, no card data beyond brand/last4."""

    id: str
    provider: str
    # authorize | capture | void | refund | get_transaction | payment | payments | client_secret
    # | complete
    operation: str
    payment_id: str | None
    idempotency_key: str | None
    provider_request_id: str | None
    http_status: int | None
    outcome: str  # the provider status, or the error class (timeout, unavailable, …)
    latency_ms: int
    correlation_id: str | None
    request_body: Mapping[str, object] | None
    response_body: Mapping[str, object] | None
    created_at: datetime


class ProviderCallLog(Protocol):
    """The provider call audit: written by the resilient call layer, one row per attempt."""

    async def record(self, call: ProviderCall) -> None: ...

    async def for_payment(self, payment_id: str) -> list[ProviderCall]: ...
