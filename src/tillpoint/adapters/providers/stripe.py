"""Stripe, through the official SDK's async methods (`stripe.StripeClient`, PaymentIntents).

One PaymentIntent per payment, created and confirmed in one call with the customer's
PaymentMethod (`payment_method.token`, a `pm_…` id): `capture_method` automatic for a sale,
manual for an authorization; `capture` always sends `amount_to_capture`, so a partial capture
reaches Stripe; `void` cancels; refunds are Refund objects on the PaymentIntent. Every call
carries the operation's provider idempotency key (`Idempotency-Key`), and the key also goes into
the object's metadata (`tillpoint_idempotency_key`), which is how `get_transaction` finds an
operation whose answer never reached us.

What Stripe says becomes a domain `Outcome` here; SDK objects and errors never leave this
module. Declines are FAILED outcomes with our codes (`failure_code`); everything else maps onto
the port's exceptions:

* the connection could not be made (refused, DNS, connect timeout): `ProviderUnavailable` —
  nothing reached Stripe;
* the connection broke after the request went out (read timeout, reset): `ProviderTimeout` —
  the outcome is unknown and is asked for later, never guessed;
* HTTP 5xx, 429, 409 (`idempotency_key_in_use`): `ProviderServerError` — unknown, and safe to
  send again with the same key;
* any other refusal (401, 403, 400, 404): `ProviderError` — nothing happened.

The SDK does no retries of its own (`max_network_retries=0`): the resilient layer above retries.
No message built here contains an API key, a client secret or a card number.

Amounts: Stripe's minor units are ours for every currency in our table (the same zero-decimal
list; three-decimal currencies in thousandths). Stripe adds steps — a three-decimal amount must
end in 0, an ISK amount must be whole krónur — which are refused here rather than rounded.
The conversion lives in `to_stripe_amount` / `from_stripe_amount` only.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import httpx
import stripe
from stripe.params import (
    DisputeListParams,
    PaymentIntentCaptureParams,
    PaymentIntentCreateParams,
    PaymentIntentListParams,
    PaymentIntentListParamsCreated,
    PaymentIntentRetrieveParams,
    RefundCreateParams,
    RefundListParams,
)

from tillpoint.adapters.providers.exchange import exchange
from tillpoint.adapters.stripe_codes import our_code, our_next_action
from tillpoint.domain.money import Money, exponent_of
from tillpoint.domain.payment import OperationKind, Outcome, ProviderStatus
from tillpoint.service.ports import (
    AuthorizeRequest,
    Capabilities,
    Limits,
    Lookup,
    ProviderDispute,
    ProviderError,
    ProviderPayment,
    ProviderRefund,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)

NAME: Final = "stripe"
METADATA_KEY: Final = "tillpoint_idempotency_key"
METADATA_PAYMENT: Final = "tillpoint_payment_id"

# -- currencies ----------------------------------------------------------------------------------

# Stripe's published minimum charge per currency (docs.stripe.com/currencies, "Minimum and
# maximum charge amounts"), in our minor units. Only these currencies are offered: for any
# other, Stripe's minimum is "the equivalent of 0.50 USD" in the settlement currency, which
# moves with the exchange rate, so we cannot promise it before the call.
MINIMUM_CHARGE: Final[Mapping[str, int]] = {
    "USD": 50,
    "AED": 200,
    "AUD": 50,
    "BGN": 100,
    "BRL": 50,
    "CAD": 50,
    "CHF": 50,
    "CZK": 1500,
    "DKK": 250,
    "EUR": 50,
    "GBP": 30,
    "HKD": 400,
    "HUF": 17500,
    "INR": 50,
    "JPY": 50,
    "MXN": 1000,
    "MYR": 200,
    "NOK": 300,
    "NZD": 50,
    "PLN": 200,
    "RON": 200,
    "SEK": 300,
    "SGD": 50,
    "THB": 1000,
}
# "The amount value supports up to eight digits" (INR, IDR and COP allow more; we keep 8).
MAXIMUM_CHARGE: Final = 99_999_999

# Stripe's decimals where they differ from our table (none today: both follow ISO 4217 for the
# currencies we list, with Stripe's zero-decimal list equal to ours). Kept so that a difference
# is converted here, and only here, the day one appears.
STRIPE_EXPONENTS: Final[Mapping[str, int]] = {}
# Amounts Stripe takes only in multiples of a step (in its minor units): three-decimal
# currencies must end in 0 ("round to the nearest ten"); ISK is effectively zero-decimal but
# still sent with two decimals, so in multiples of 100.
STRIPE_STEPS: Final[Mapping[str, int]] = {
    "BHD": 10,
    "JOD": 10,
    "KWD": 10,
    "OMR": 10,
    "TND": 10,
    "ISK": 100,
}


def to_stripe_amount(money: Money) -> tuple[int, str]:
    """Our amount as Stripe's `(amount, currency)`: its minor units, the code in lower case.
    An amount Stripe cannot take (not a multiple of its step) is refused, never rounded."""
    ours = money.exponent
    theirs = STRIPE_EXPONENTS.get(money.currency, ours)
    if theirs >= ours:
        amount = money.minor * 10 ** (theirs - ours)
    else:
        factor = 10 ** (ours - theirs)
        if money.minor % factor:
            raise ProviderError(
                f"stripe charges {money.currency} in whole units of {theirs} decimals; "
                f"{money} cannot be sent"
            )
        amount = money.minor // factor
    step = STRIPE_STEPS.get(money.currency, 1)
    if amount % step:
        raise ProviderError(
            f"stripe takes {money.currency} amounts in steps of {step} minor units; "
            f"{money} is not one (it is never rounded)"
        )
    return amount, money.currency.lower()


def from_stripe_amount(amount: int, currency: str) -> Money:
    """Stripe's `(amount, currency)` in our units."""
    code = currency.upper()
    ours = exponent_of(code)
    theirs = STRIPE_EXPONENTS.get(code, ours)
    if theirs >= ours:
        return Money(amount // 10 ** (theirs - ours), code)
    return Money(amount * 10 ** (ours - theirs), code)


CAPABILITIES: Final = Capabilities(
    manual_capture=True,
    partial_capture=True,
    multiple_partial_refunds=True,
    async_outcomes=True,
    three_d_secure=True,
    cancel_after_authorization=True,
    currencies={code: Limits(low, MAXIMUM_CHARGE) for code, low in MINIMUM_CHARGE.items()},
    token_prefix="pm_",  # a PaymentMethod id made by Stripe.js: tillpoint never sees the card
    lists_payments=True,
)

# -- declines ------------------------------------------------------------------------------------

DEFAULT_DECLINE_MESSAGE: Final = "The payment was declined."


# -- errors --------------------------------------------------------------------------------------

_SECRETS = re.compile(r"\b(?:sk|rk|pk)_(?:test|live)_\w*|\bwhsec_\w+|\b\w+_secret_\w+")
# httpx errors raised before any byte of the request could have reached Stripe.
_NOT_CONNECTED: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_NOT_CONNECTED_NAMES: Final = frozenset(cls.__name__ for cls in _NOT_CONNECTED)


def safe_text(text: object, limit: int = 300) -> str:
    """Text fit for a log line or an exception: keys and client secrets masked, bounded."""
    cleaned = _SECRETS.sub("[redacted]", str(text or "")).strip()
    return cleaned[:limit]


def _never_connected(exc: stripe.APIConnectionError) -> bool:
    """Whether the request never left: the SDK chains the HTTP library's error (`from e`);
    without one, its message names the error class ("A ConnectError was raised")."""
    seen: BaseException | None = exc.__cause__ or exc.__context__
    while seen is not None:
        if isinstance(seen, _NOT_CONNECTED):
            return True
        seen = seen.__cause__ or seen.__context__
    message = exc.user_message or ""
    return any(f"A {name} was raised" in message for name in _NOT_CONNECTED_NAMES)


def translate(exc: stripe.StripeError, operation: str) -> Exception:
    """The port's exception for a Stripe error that is not a decline."""
    what = f"stripe {operation}"
    status = exc.http_status
    request = f", request {exc.request_id}" if exc.request_id else ""
    if isinstance(exc, stripe.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        name = type(cause).__name__ if cause is not None else "connection error"
        if _never_connected(exc):
            return ProviderUnavailable(f"{what}: could not connect to Stripe ({name})")
        return ProviderTimeout(
            f"{what}: the connection to Stripe failed after the request was sent ({name}); "
            "the outcome is unknown"
        )
    detail = _detail(exc)
    if isinstance(exc, stripe.RateLimitError):
        return ProviderServerError(f"{what}: Stripe asked us to slow down (HTTP 429{request})")
    if isinstance(exc, stripe.AuthenticationError):
        # Stripe's message quotes part of the key: never passed on.
        return ProviderError(f"{what}: Stripe refused the API key (HTTP {status}{request})")
    if isinstance(exc, stripe.PermissionError):
        return ProviderError(f"{what}: the API key may not do this (HTTP {status}{request})")
    if isinstance(exc, stripe.IdempotencyError):
        return ProviderError(
            f"{what}: the idempotency key was used with other parameters{request}: {detail}"
        )
    if status is None or status >= 500 or status < 400 or status in (409, 429):
        return ProviderServerError(f"{what}: Stripe answered HTTP {status}{request}: {detail}")
    return ProviderError(f"{what}: Stripe refused the request (HTTP {status}{request}): {detail}")


def _detail(exc: stripe.StripeError) -> str:
    code = f"{exc.code}: " if exc.code else ""
    return safe_text(f"{code}{exc.user_message or type(exc).__name__}")


def _error_body(exc: stripe.StripeError) -> Mapping[str, Any] | None:
    body = exc.json_body
    return body if isinstance(body, Mapping) else None


def _not_found(exc: stripe.StripeError) -> bool:
    return isinstance(exc, stripe.InvalidRequestError) and (
        exc.http_status == 404 or exc.code == "resource_missing"
    )


# -- Stripe objects → outcomes ------------------------------------------------------------------


def _id(value: object) -> str | None:
    """The id of an expandable field: an inline object or an id string."""
    if isinstance(value, Mapping):
        found = value.get("id")
        return str(found) if found else None
    return str(value) if value else None


def _money(obj: Mapping[str, Any], field: str, fallback: Money) -> Money:
    amount, currency = obj.get(field), obj.get("currency")
    if isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str):
        return from_stripe_amount(amount, currency)
    return fallback


def _risk(charge: object) -> int | None:
    if isinstance(charge, Mapping):
        outcome = charge.get("outcome")
        if isinstance(outcome, Mapping) and isinstance(outcome.get("risk_score"), int):
            return int(outcome["risk_score"])
    return None


def intent_outcome(
    pi: Mapping[str, Any], fallback: Money, *, captured: Money | None = None
) -> Outcome:
    """A PaymentIntent as an Outcome. `fallback` is the amount we asked for (used when Stripe
    does not say); `captured` the amount a capture asked for (localstripe gives no
    `amount_received`, and records the released remainder of a partial capture as a refund)."""
    status = pi.get("status")
    charge = pi.get("latest_charge")
    money = _money(pi, "amount", fallback)
    base: dict[str, Any] = {
        "provider_payment_id": _id(pi.get("id")),
        "currency": money.currency,
        "reference": _id(charge),
        "risk_score": _risk(charge),
    }
    match status:
        case "succeeded":
            got = _money(pi, "amount_received", captured or money)
            if isinstance(charge, Mapping) and "amount_received" not in pi:
                got = _money(charge, "amount_captured", got)
            return Outcome(status=ProviderStatus.CAPTURED, amount_minor=got.minor, **base)
        case "requires_capture":
            held = _money(pi, "amount_capturable", money)
            return Outcome(status=ProviderStatus.AUTHORIZED, amount_minor=held.minor, **base)
        case "requires_action":
            return Outcome(
                status=ProviderStatus.REQUIRES_ACTION,
                amount_minor=money.minor,
                next_action=our_next_action(pi.get("next_action")),
                **base,
            )
        case "canceled":
            return Outcome(status=ProviderStatus.CANCELED, amount_minor=money.minor, **base)
        case "requires_payment_method":
            error = pi.get("last_payment_error")
            error = error if isinstance(error, Mapping) else {}
            return Outcome(
                status=ProviderStatus.FAILED,
                amount_minor=money.minor,
                failure_code=our_code(error.get("code"), error.get("decline_code")),
                failure_message=safe_text(error.get("message")) or DEFAULT_DECLINE_MESSAGE,
                **base,
            )
        case _:  # processing, requires_confirmation: Stripe has not decided (yet)
            return Outcome(status=ProviderStatus.PROCESSING, amount_minor=money.minor, **base)


def refund_outcome(refund: Mapping[str, Any], fallback: Money) -> Outcome:
    """A Refund as an Outcome: succeeded → REFUNDED; pending / requires_action → PROCESSING
    (the answer comes later: `refund.updated` webhook or `get_transaction`); failed or
    canceled → FAILED with Stripe's `failure_reason`."""
    money = _money(refund, "amount", fallback)
    base: dict[str, Any] = {
        "provider_payment_id": _id(refund.get("payment_intent")),
        "amount_minor": money.minor,
        "currency": money.currency,
        "reference": _id(refund.get("id")),
    }
    match refund.get("status"):
        case "succeeded":
            return Outcome(status=ProviderStatus.REFUNDED, **base)
        case "failed" | "canceled":
            reason = refund.get("failure_reason") or refund.get("status")
            return Outcome(
                status=ProviderStatus.FAILED,
                failure_code="refund_failed",
                failure_message=safe_text(f"Stripe refund {reason}"),
                **base,
            )
        case _:
            return Outcome(status=ProviderStatus.PROCESSING, **base)


# Stripe's dispute statuses in the port's words; an inquiry (`warning_…`) is reported as the
# dispute it may become, and one closed without a chargeback as won (no money was lost).
DISPUTE_STATUSES: Final[Mapping[str, str]] = {
    "warning_needs_response": "needs_response",
    "needs_response": "needs_response",
    "warning_under_review": "under_review",
    "under_review": "under_review",
    "warning_closed": "won",
    "won": "won",
    "prevented": "won",
    "lost": "lost",
}
REFUND_STATUSES: Final[Mapping[str, ProviderStatus]] = {
    "succeeded": ProviderStatus.REFUNDED,
    "failed": ProviderStatus.FAILED,
    "canceled": ProviderStatus.FAILED,
}


def _when(value: object) -> datetime | None:
    """A Stripe timestamp (Unix seconds) as an aware UTC datetime."""
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _minor(obj: Mapping[str, Any], field: str, currency: str) -> int | None:
    amount = obj.get(field)
    if isinstance(amount, int) and not isinstance(amount, bool):
        return from_stripe_amount(amount, currency).minor
    return None


def provider_refund(refund: Mapping[str, Any], currency: str) -> ProviderRefund:
    """A Refund as the port's `ProviderRefund`: REFUNDED (succeeded), FAILED (failed,
    canceled) or PROCESSING (pending, requires_action); our key is in its metadata, absent
    for a refund made in Stripe's Dashboard."""
    metadata = refund.get("metadata")
    key = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
    return ProviderRefund(
        reference=str(refund.get("id")),
        amount_minor=_minor(refund, "amount", currency) or 0,
        status=REFUND_STATUSES.get(str(refund.get("status")), ProviderStatus.PROCESSING),
        idempotency_key=str(key) if key else None,
        created_at=_when(refund.get("created")),
    )


def provider_dispute(dispute: Mapping[str, Any], currency: str) -> ProviderDispute:
    evidence = dispute.get("evidence_details")
    due = evidence.get("due_by") if isinstance(evidence, Mapping) else None
    status = str(dispute.get("status"))
    return ProviderDispute(
        reference=str(dispute.get("id")),
        amount_minor=_minor(dispute, "amount", currency) or 0,
        reason=str(dispute.get("reason") or "general"),
        status=DISPUTE_STATUSES.get(status, status),
        evidence_due_by=_when(due),
    )


def released(refund: Mapping[str, Any]) -> bool:
    """localstripe records the uncaptured rest of a partial capture as a refund of the charge
    with no PaymentIntent; Stripe names the PaymentIntent on every refund of its charge, so no
    refund at Stripe is taken for one (docs.stripe.com/api/refunds/object)."""
    return not refund.get("payment_intent")


def provider_payment(
    pi: Mapping[str, Any],
    refunds: Sequence[Mapping[str, Any]],
    disputes: Sequence[Mapping[str, Any]],
) -> ProviderPayment:
    """A PaymentIntent, with its charge's refunds and disputes, as the port's whole view.

    The status is `intent_outcome`'s, except that a succeeded PaymentIntent whose refunds
    (succeeded ones) reach what was captured is REFUNDED. `authorized_minor` is what Stripe
    still holds (`amount_capturable` while `requires_capture`); `captured_minor` is
    `amount_received` (or the charge's `amount_captured`; with neither, as at localstripe, the
    charge's amount less what a partial capture released)."""
    currency = str(pi.get("currency") or "usd")
    code = currency.upper()
    amount = _minor(pi, "amount", currency) or 0
    outcome = intent_outcome(pi, Money(amount, code))
    charge = pi.get("latest_charge")
    charge = charge if isinstance(charge, Mapping) else {}
    ours = [r for r in refunds if not released(r)]
    let_go = sum(_minor(r, "amount", currency) or 0 for r in refunds if released(r))
    status = outcome.status
    authorized = captured = 0
    if status is ProviderStatus.AUTHORIZED:
        authorized = outcome.amount_minor
    elif status is ProviderStatus.CAPTURED:
        received = _minor(pi, "amount_received", currency)
        if received is None:
            received = _minor(charge, "amount_captured", currency)
        if received is None:
            received = (_minor(charge, "amount", currency) or amount) - let_go
        captured = received
    views = tuple(provider_refund(r, currency) for r in ours)
    refunded = sum(r.amount_minor for r in views if r.status is ProviderStatus.REFUNDED)
    if status is ProviderStatus.CAPTURED and captured and refunded >= captured:
        status = ProviderStatus.REFUNDED
    metadata = pi.get("metadata")
    payment_id = metadata.get(METADATA_PAYMENT) if isinstance(metadata, Mapping) else None
    return ProviderPayment(
        provider_payment_id=str(pi.get("id")),
        status=status,
        currency=code,
        amount_minor=amount,
        authorized_minor=authorized,
        captured_minor=captured,
        refunded_minor=refunded,
        created_at=_when(pi.get("created")) or datetime.fromtimestamp(0, UTC),
        payment_id=str(payment_id) if payment_id else None,
        refunds=views,
        disputes=tuple(provider_dispute(d, currency) for d in disputes),
    )


def decline_outcome(
    exc: stripe.CardError, fallback: Money, provider_payment_id: str | None = None
) -> Outcome:
    """A card error (HTTP 402) as the FAILED outcome it is. Stripe puts the PaymentIntent in
    the error body (`error.payment_intent`); `provider_payment_id` stands in when it does not."""
    body = _error_body(exc) or {}
    error = body.get("error")
    error = error if isinstance(error, Mapping) else {}
    pi = error.get("payment_intent")
    charge = error.get("charge") or (pi.get("latest_charge") if isinstance(pi, Mapping) else None)
    return Outcome(
        status=ProviderStatus.FAILED,
        provider_payment_id=_id(pi) or provider_payment_id,
        amount_minor=fallback.minor,
        currency=fallback.currency,
        reference=_id(charge),
        failure_code=our_code(exc.code or error.get("code"), error.get("decline_code")),
        failure_message=safe_text(exc.user_message or error.get("message"))
        or DEFAULT_DECLINE_MESSAGE,
    )


# -- the gateway -------------------------------------------------------------------------------


class HTTPClient(stripe.HTTPXClient):
    """The SDK's async httpx client, sending the encoded form as `content`: the SDK hands
    httpx a string as `data`, which httpx 0.28 deprecates (a DeprecationWarning on every
    POST). Everything else — timeouts, the SDK's error wrapping — is the SDK's own."""

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self._client_async.request(
                method, url, headers=headers, content=post_data or None, timeout=self._timeout
            )
        except Exception as exc:
            self._handle_request_error(exc)
        return response.content, response.status_code, response.headers


# How many list pages `get_transaction` reads looking for an operation by its key. Stripe lists
# newest first, and the operations asked about are recent, so they sit on the first pages.
LIST_PAGE: Final = 100
LIST_PAGES: Final = 10
_EXPAND: Final = ["latest_charge"]

Call = Callable[[], Awaitable[Any]]


class StripeGateway:
    """`PaymentProvider` on Stripe (or on a fake of it at `api_base`, such as localstripe)."""

    name = NAME
    capabilities = CAPABILITIES

    def __init__(self, api_key: str, *, api_base: str | None = None, timeout: float = 80.0) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("the Stripe API key is empty")
        self._api_base = api_base.rstrip("/") if api_base else None
        self._http = HTTPClient(timeout=timeout)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self._api_base} if self._api_base else {},
            max_network_retries=0,  # the resilient layer retries, with the same key
            http_client=self._http,
        )

    def __repr__(self) -> str:  # never the key
        return f"StripeGateway(api_base={self._api_base or 'Stripe'!r})"

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    # -- calls ------------------------------------------------------------------------------

    async def _call(self, params: Mapping[str, Any], send: Call) -> dict[str, Any]:
        """Make one SDK call, filling the current `Exchange` with what went over the wire."""
        current = exchange()
        current.sent(params)
        try:
            obj = await send()
        except stripe.StripeError as exc:
            current.answered(
                _error_body(exc), http_status=exc.http_status, request_id=exc.request_id
            )
            raise
        body: dict[str, Any] = obj.to_dict()
        response = obj.last_response
        current.answered(
            body,
            http_status=response.code if response is not None else None,
            request_id=response.request_id if response is not None else None,
        )
        return body

    async def _intent(self, provider_payment_id: str, operation: str) -> dict[str, Any] | None:
        params: PaymentIntentRetrieveParams = {"expand": _EXPAND}
        try:
            return await self._call(
                {"id": provider_payment_id, **params},
                lambda: self._client.v1.payment_intents.retrieve_async(provider_payment_id, params),
            )
        except stripe.StripeError as exc:
            if _not_found(exc):
                return None
            raise translate(exc, operation) from None

    async def _declined(self, exc: stripe.CardError, money: Money) -> Outcome:
        """The FAILED outcome of a card error. Without a PaymentIntent in the error body (as
        with localstripe), the declined charge names it: one best-effort read, left out of the
        exchange (which keeps the decline, the answer to the call)."""
        outcome = decline_outcome(exc, money)
        if outcome.provider_payment_id is None and outcome.reference:
            try:
                charge = await self._client.v1.charges.retrieve_async(outcome.reference)
                found = _id(charge.to_dict().get("payment_intent"))
            except stripe.StripeError:
                found = None
            if found:
                outcome = decline_outcome(exc, money, found)
        return outcome

    # -- PaymentProvider --------------------------------------------------------------------

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        token = req.payment_method.token
        if not token or not token.startswith("pm_"):
            raise ProviderError(
                "stripe needs a Stripe PaymentMethod id (pm_…) as payment_method.token"
            )
        amount, currency = to_stripe_amount(req.amount)
        params: PaymentIntentCreateParams = {
            "amount": amount,
            "currency": currency,
            "payment_method": token,
            "confirm": True,
            "capture_method": "automatic" if req.capture else "manual",
            "metadata": {METADATA_PAYMENT: req.payment_id, METADATA_KEY: idempotency_key},
            "expand": _EXPAND,
        }
        try:
            pi = await self._call(
                params,
                lambda: self._client.v1.payment_intents.create_async(
                    params, {"idempotency_key": idempotency_key}
                ),
            )
        except stripe.CardError as exc:
            return await self._declined(exc, req.amount)
        except stripe.StripeError as exc:
            raise translate(exc, "authorize") from None
        return intent_outcome(pi, req.amount)

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        minor, _ = to_stripe_amount(amount)
        params: PaymentIntentCaptureParams = {"amount_to_capture": minor, "expand": _EXPAND}
        try:
            pi = await self._call(
                {"id": provider_payment_id, **params},
                lambda: self._client.v1.payment_intents.capture_async(
                    provider_payment_id, params, {"idempotency_key": idempotency_key}
                ),
            )
        except stripe.CardError as exc:
            return decline_outcome(exc, amount, provider_payment_id)
        except stripe.StripeError as exc:
            raise translate(exc, "capture") from None
        return intent_outcome(pi, amount, captured=amount)

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        try:
            pi = await self._call(
                {"id": provider_payment_id},
                lambda: self._client.v1.payment_intents.cancel_async(
                    provider_payment_id, options={"idempotency_key": idempotency_key}
                ),
            )
        except stripe.StripeError as exc:
            raise translate(exc, "void") from None
        currency = str(pi.get("currency") or "usd").upper()
        return intent_outcome(pi, Money(0, currency))

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        minor, _ = to_stripe_amount(amount)
        params: RefundCreateParams = {
            "payment_intent": provider_payment_id,
            "amount": minor,
            "metadata": {METADATA_KEY: idempotency_key},
        }
        try:
            refund = await self._call(
                params,
                lambda: self._client.v1.refunds.create_async(
                    params, {"idempotency_key": idempotency_key}
                ),
            )
        except stripe.StripeError as exc:
            raise translate(exc, "refund") from None
        outcome = refund_outcome(refund, amount)
        if outcome.provider_payment_id is None:  # Stripe names it; localstripe may not
            return _with_payment(outcome, provider_payment_id)
        return outcome

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        """What Stripe holds for the operation sent with `lookup.idempotency_key`:

        * authorize / sale: the PaymentIntent (by id, or by the key in its metadata);
        * capture: the PaymentIntent — CAPTURED once succeeded, AUTHORIZED while Stripe still
          holds the authorization (the capture has not happened);
        * void: the PaymentIntent — CANCELED once canceled;
        * refund: the PaymentIntent's refund carrying the key in its metadata.

        None when Stripe has no such object. The exchange records the last call made."""
        kind = lookup.kind
        if kind in (OperationKind.AUTHORIZE, OperationKind.SALE):
            if lookup.provider_payment_id:
                pi = await self._intent(lookup.provider_payment_id, "get_transaction")
            else:
                pi = await self._find_intent(lookup.idempotency_key)
            return intent_outcome(pi, lookup.amount) if pi is not None else None
        if not lookup.provider_payment_id:
            return None  # nothing of this payment ever reached Stripe
        if kind is OperationKind.REFUND:
            refund = await self._find_refund(lookup.provider_payment_id, lookup.idempotency_key)
            if refund is None:
                return None
            return _with_payment(refund_outcome(refund, lookup.amount), lookup.provider_payment_id)
        pi = await self._intent(lookup.provider_payment_id, "get_transaction")
        if pi is None:
            return None
        if kind is OperationKind.CAPTURE:
            return intent_outcome(pi, lookup.amount, captured=lookup.amount)
        return intent_outcome(pi, lookup.amount)  # a void: CANCELED once it happened

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        """The PaymentIntent (its latest charge expanded), its refunds and its disputes."""
        pi = await self._intent(provider_payment_id, "payment")
        return await self._view(pi, "payment") if pi is not None else None

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        """Every PaymentIntent created in [created_from, created_to): Stripe's list filtered by
        `created`, `LIST_PAGE` at a time, each with its refunds and disputes. Stripe keeps whole
        seconds (the creation time rounded down), so the window widens to whole seconds: never
        a payment of the window missed, at most one second's more before it."""
        window: PaymentIntentListParamsCreated = {
            "gte": math.floor(created_from.timestamp()),
            "lt": math.ceil(created_to.timestamp()),
        }
        params: PaymentIntentListParams = {
            "created": window,
            "limit": LIST_PAGE,
            "expand": ["data.latest_charge"],
        }
        while True:
            page = await self._list(
                params, partial(self._client.v1.payment_intents.list_async, params), "payments"
            )
            items = [dict(item) for item in page.get("data") or []]
            for pi in items:
                yield await self._view(pi, "payments")
            if not page.get("has_more") or not items:
                return
            params = {**params, "starting_after": str(items[-1]["id"])}

    async def _view(self, pi: Mapping[str, Any], operation: str) -> ProviderPayment:
        pi_id = str(pi.get("id"))
        charge = pi.get("latest_charge")
        refunds: list[Mapping[str, Any]] = []
        disputes: list[Mapping[str, Any]] = []
        if charge:  # nothing was charged (a customer step, a decline before any charge): neither
            refund_params: RefundListParams = {"payment_intent": pi_id, "limit": LIST_PAGE}
            refunds = await self._all(refund_params, self._client.v1.refunds.list_async, operation)
            # Stripe says on the charge whether it was ever disputed; without that, ask.
            if not isinstance(charge, Mapping) or charge.get("disputed") is not False:
                dispute_params: DisputeListParams = {"payment_intent": pi_id, "limit": LIST_PAGE}
                disputes = await self._all(
                    dispute_params, self._client.v1.disputes.list_async, operation
                )
        return provider_payment(pi, refunds, disputes)

    async def _all(
        self, params: Mapping[str, Any], list_async: Callable[..., Awaitable[Any]], operation: str
    ) -> list[Mapping[str, Any]]:
        """Every item of a list, page by page."""
        found: list[Mapping[str, Any]] = []
        current = dict(params)
        while True:
            page = await self._list(current, partial(list_async, current), operation)
            items = [dict(item) for item in page.get("data") or []]
            found.extend(items)
            if not page.get("has_more") or not items:
                return found
            current = {**current, "starting_after": str(items[-1]["id"])}

    async def _list(self, params: Mapping[str, Any], send: Call, operation: str) -> dict[str, Any]:
        try:
            return await self._call(params, send)
        except stripe.StripeError as exc:
            raise translate(exc, operation) from None

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        pi = await self._intent(provider_payment_id, "client_secret")
        secret = pi.get("client_secret") if pi is not None else None
        return secret if isinstance(secret, str) and secret else None

    def available(self) -> bool:
        return True  # the circuit breaker lives in the resilient layer

    # -- lookups by key ---------------------------------------------------------------------

    async def _find_intent(self, idempotency_key: str) -> dict[str, Any] | None:
        """The PaymentIntent created with this key. localstripe has no search API and its list
        takes only `limit` and `starting_after`, so the newest pages are read and matched on
        the metadata (Stripe's search would lag by up to a minute anyway)."""
        params: PaymentIntentListParams = {"limit": LIST_PAGE}
        for _ in range(LIST_PAGES):
            page = await self._page(
                params, partial(self._client.v1.payment_intents.list_async, params)
            )
            found = _by_key(page, idempotency_key)
            if found is not None or not page.get("has_more") or not page.get("data"):
                return found
            params = {"limit": LIST_PAGE, "starting_after": str(page["data"][-1]["id"])}
        return None

    async def _find_refund(
        self, provider_payment_id: str, idempotency_key: str
    ) -> dict[str, Any] | None:
        """Our refund of this PaymentIntent, by the key in its metadata (never by the list's
        length: localstripe records the released part of a partial capture as a refund)."""
        params: RefundListParams = {"payment_intent": provider_payment_id, "limit": LIST_PAGE}
        for _ in range(LIST_PAGES):
            page = await self._page(params, partial(self._client.v1.refunds.list_async, params))
            found = _by_key(page, idempotency_key)
            if found is not None or not page.get("has_more") or not page.get("data"):
                return found
            params = {
                "payment_intent": provider_payment_id,
                "limit": LIST_PAGE,
                "starting_after": str(page["data"][-1]["id"]),
            }
        return None

    async def _page(self, params: Mapping[str, Any], send: Call) -> dict[str, Any]:
        try:
            return await self._call(params, send)
        except stripe.StripeError as exc:
            if _not_found(exc):
                return {"data": [], "has_more": False}
            raise translate(exc, "get_transaction") from None


def _by_key(page: Mapping[str, Any], idempotency_key: str) -> dict[str, Any] | None:
    for item in page.get("data") or []:
        metadata = item.get("metadata") if isinstance(item, Mapping) else None
        if isinstance(metadata, Mapping) and metadata.get(METADATA_KEY) == idempotency_key:
            return dict(item)
    return None


def _with_payment(outcome: Outcome, provider_payment_id: str) -> Outcome:
    return replace(outcome, provider_payment_id=outcome.provider_payment_id or provider_payment_id)
