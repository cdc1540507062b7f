"""The Stripe adapter's mapping, with no server: SDK errors (built here, as the SDK builds them
from Stripe's answers) to our failure codes and the port's exceptions, PaymentIntents and
Refunds to outcomes, and amounts to Stripe's units and back."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import stripe

from tillpoint.adapters.providers.stripe import (
    CAPABILITIES,
    MAXIMUM_CHARGE,
    StripeGateway,
    decline_outcome,
    from_stripe_amount,
    intent_outcome,
    provider_payment,
    refund_outcome,
    safe_text,
    to_stripe_amount,
    translate,
)
from tillpoint.adapters.stripe_codes import our_code
from tillpoint.adapters.stripe_codes import our_next_action as next_action
from tillpoint.domain.errors import ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment import CaptureMethod, ProviderStatus
from tillpoint.service.ports import (
    ProviderError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)

USD_10 = Money(1000, "USD")


# -- declines -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "decline_code", "ours"),
    [
        ("card_declined", None, "card_declined"),
        ("card_declined", "generic_decline", "card_declined"),
        ("card_declined", "insufficient_funds", "insufficient_funds"),
        ("card_declined", "fraudulent", "fraud_suspected"),
        ("card_declined", "stolen_card", "fraud_suspected"),
        ("card_declined", "lost_card", "fraud_suspected"),
        ("expired_card", None, "expired_card"),
        ("incorrect_number", None, "invalid_card"),
        ("invalid_number", None, "invalid_card"),
        ("invalid_cvc", None, "invalid_card"),
        ("incorrect_cvc", None, "invalid_card"),
        ("invalid_expiry_month", None, "invalid_card"),
        ("invalid_expiry_year", None, "invalid_card"),
        ("payment_intent_authentication_failure", None, "card_declined"),
        ("processing_error", None, "card_declined"),
        (None, None, "card_declined"),
    ],
)
def test_stripe_codes_map_to_ours(code: str | None, decline_code: str | None, ours: str) -> None:
    assert our_code(code, decline_code) == ours


def card_error(
    code: str, message: str, error: dict[str, Any], *, request_id: str = "req_123"
) -> stripe.CardError:
    body = {"error": {"type": "card_error", "code": code, "message": message, **error}}
    return stripe.CardError(  # type: ignore[no-untyped-call]  # the SDK's __init__ is untyped
        message,
        None,
        code,
        http_body=None,
        http_status=402,
        json_body=body,
        headers={"request-id": request_id},
    )


def test_a_card_error_is_a_failed_outcome_keeping_the_payment_intent() -> None:
    exc = card_error(
        "card_declined",
        "Your card has insufficient funds.",
        {
            "decline_code": "insufficient_funds",
            "charge": "ch_1",
            "payment_intent": {"id": "pi_1", "client_secret": "pi_1_secret_abc"},
        },
    )

    outcome = decline_outcome(exc, USD_10)

    assert outcome.status is ProviderStatus.FAILED
    assert outcome.failure_code == "insufficient_funds"
    assert outcome.failure_message == "Your card has insufficient funds."
    assert (outcome.provider_payment_id, outcome.reference) == ("pi_1", "ch_1")
    assert (outcome.amount_minor, outcome.currency) == (1000, "USD")
    assert "secret" not in repr(outcome)


def test_a_card_error_without_a_payment_intent_takes_the_one_we_know() -> None:
    exc = card_error("expired_card", "Your card has expired.", {"charge": "ch_2"})
    outcome = decline_outcome(exc, USD_10, "pi_known")
    assert (outcome.failure_code, outcome.provider_payment_id) == ("expired_card", "pi_known")


# -- errors -------------------------------------------------------------------------------------


def connection_error(cause: Exception | None) -> stripe.APIConnectionError:
    """As `stripe.HTTPXClient._handle_request_error` raises it: chained to httpx's error."""
    name = type(cause).__name__ if cause is not None else "Error"
    message = f"Unexpected error communicating with Stripe.\n\n(Network error: A {name} was raised)"
    try:
        raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]
            message, should_retry=True
        ) from cause
    except stripe.APIConnectionError as exc:
        return exc


@pytest.mark.parametrize(
    "cause",
    [
        httpx.ConnectError("All connection attempts failed"),
        httpx.ConnectError("[Errno -2] Name or service not known"),
        httpx.ConnectTimeout("timed out"),
        httpx.PoolTimeout("no connection in the pool"),
    ],
    ids=["refused", "dns", "connect timeout", "pool timeout"],
)
def test_a_connection_never_made_is_unavailable(cause: Exception) -> None:
    assert type(translate(connection_error(cause), "authorize")) is ProviderUnavailable


def test_a_connect_error_is_recognised_by_the_sdks_message_without_a_chain() -> None:
    exc = stripe.APIConnectionError(  # type: ignore[no-untyped-call]
        "(Network error: A ConnectError was raised)"
    )
    assert type(translate(exc, "authorize")) is ProviderUnavailable


@pytest.mark.parametrize(
    "cause",
    [
        httpx.ReadTimeout("timed out"),
        httpx.WriteTimeout("timed out"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        None,
    ],
    ids=["read timeout", "write timeout", "reset", "hung up", "unknown"],
)
def test_a_connection_lost_after_sending_is_a_timeout_never_a_failure(
    cause: Exception | None,
) -> None:
    error = translate(connection_error(cause), "capture")
    assert type(error) is ProviderTimeout
    assert "outcome is unknown" in str(error)


def api_error(cls: type[stripe.StripeError], status: int, message: str, **error: Any) -> Any:
    body = {"error": {"message": message, **error}}
    headers = {"request-id": "req_9"}
    if cls in (stripe.InvalidRequestError, stripe.CardError):
        return cls(message, error.get("param"), error.get("code"), None, status, body, headers)
    return cls(message, None, status, body, headers, error.get("code"))


@pytest.mark.parametrize(
    ("cls", "status", "expected"),
    [
        (stripe.APIError, 500, ProviderServerError),
        (stripe.APIError, 502, ProviderServerError),
        (stripe.APIError, 409, ProviderServerError),  # idempotency_key_in_use: send again
        (stripe.RateLimitError, 429, ProviderServerError),
        (stripe.AuthenticationError, 401, ProviderError),
        (stripe.PermissionError, 403, ProviderError),
        (stripe.IdempotencyError, 400, ProviderError),
        (stripe.InvalidRequestError, 400, ProviderError),
        (stripe.InvalidRequestError, 404, ProviderError),
    ],
)
def test_http_errors_map_to_the_ports_exceptions(
    cls: type[stripe.StripeError], status: int, expected: type[Exception]
) -> None:
    error = translate(api_error(cls, status, "Something went wrong."), "refund")
    assert type(error) is expected
    assert str(error).startswith("stripe refund: ")
    assert "req_9" in str(error)


def test_no_key_or_client_secret_reaches_an_exception_message() -> None:
    refused_key = api_error(
        stripe.AuthenticationError, 401, "Invalid API Key provided: sk_test_****************abcd"
    )
    invalid = api_error(
        stripe.InvalidRequestError,
        400,
        "No such payment_intent: pi_1; client secret pi_1_secret_xyz, key rk_live_abc, whsec_q",
        code="resource_missing",
    )
    for exc in (refused_key, invalid):
        text = str(translate(exc, "authorize"))
        for secret in ("sk_test", "pi_1_secret_xyz", "rk_live", "whsec_q"):
            assert secret not in text
    assert "resource_missing" in str(translate(invalid, "authorize"))


def test_safe_text_masks_secrets_and_bounds_the_length() -> None:
    assert safe_text("key sk_live_123 and pk_test_9") == "key [redacted] and [redacted]"
    assert len(safe_text("x" * 1000)) == 300


# -- outcomes -----------------------------------------------------------------------------------


def intent(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "amount": 10000,
        "currency": "usd",
        "status": status,
        "client_secret": "pi_1_secret_abc",
        "latest_charge": {"id": "ch_1", "outcome": {"risk_score": 32}},
        **fields,
    }


def test_a_succeeded_intent_is_captured_with_what_stripe_received() -> None:
    outcome = intent_outcome(intent("succeeded", amount_received=6000), USD_10)
    assert outcome.status is ProviderStatus.CAPTURED
    assert (outcome.amount_minor, outcome.currency) == (6000, "USD")
    assert (outcome.provider_payment_id, outcome.reference, outcome.risk_score) == (
        "pi_1",
        "ch_1",
        32,
    )


def test_a_captured_amount_falls_back_to_what_the_capture_asked() -> None:
    pi = intent("succeeded", latest_charge="ch_1")  # no amount_received (localstripe)
    assert intent_outcome(pi, USD_10, captured=Money(6000, "USD")).amount_minor == 6000
    assert intent_outcome(pi, USD_10).amount_minor == 10000
    assert intent_outcome(pi, USD_10).reference == "ch_1"


@pytest.mark.parametrize(
    ("status", "ours"),
    [
        ("requires_capture", ProviderStatus.AUTHORIZED),
        ("processing", ProviderStatus.PROCESSING),
        ("requires_confirmation", ProviderStatus.PROCESSING),
        ("canceled", ProviderStatus.CANCELED),
    ],
)
def test_intent_statuses_map_to_ours(status: str, ours: ProviderStatus) -> None:
    outcome = intent_outcome(intent(status), USD_10)
    assert outcome.status is ours
    assert outcome.amount_minor == 10000


def test_a_customer_step_carries_no_secret_and_no_raw_stripe_blob() -> None:
    sdk = intent(
        "requires_action",
        next_action={
            "type": "use_stripe_sdk",
            "use_stripe_sdk": {"type": "three_d_secure_redirect", "stripe_js": "x"},
        },
    )
    outcome = intent_outcome(sdk, USD_10)
    assert outcome.status is ProviderStatus.REQUIRES_ACTION
    assert outcome.next_action == {"type": "use_stripe_sdk"}

    url = "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1"
    redirect = intent(
        "requires_action",
        next_action={"type": "redirect_to_url", "redirect_to_url": {"url": url, "return_url": "x"}},
    )
    assert intent_outcome(redirect, USD_10).next_action == {
        "type": "redirect_to_url",
        "redirect_url": url,
    }
    leaky = (
        "https://hooks.stripe.com/3d_secure_2/hosted?merchant=acct_1&payment_intent=pi_1"
        "&payment_intent_client_secret=pi_1_secret_abc&publishable_key=pk_test_1"
    )
    assert next_action({"type": "redirect_to_url", "redirect_to_url": {"url": leaky}}) == {
        "type": "use_stripe_sdk"
    }
    assert next_action({"type": "verify_with_microdeposits"}) == {"type": "use_stripe_sdk"}
    assert next_action(None) == {"type": "use_stripe_sdk"}


def test_a_failed_intent_carries_our_code_and_stripes_message() -> None:
    failed = intent(
        "requires_payment_method",
        last_payment_error={
            "code": "card_declined",
            "decline_code": "stolen_card",
            "message": "Your card was declined.",
        },
    )
    outcome = intent_outcome(failed, USD_10)
    assert (outcome.status, outcome.failure_code, outcome.failure_message) == (
        ProviderStatus.FAILED,
        "fraud_suspected",
        "Your card was declined.",
    )
    auth = intent(
        "requires_payment_method",
        last_payment_error={
            "code": "payment_intent_authentication_failure",
            "message": "The provided PaymentMethod has failed authentication.",
        },
    )
    assert intent_outcome(auth, USD_10).failure_code == "card_declined"
    assert intent_outcome(intent("requires_payment_method"), USD_10).failure_code == (
        "card_declined"
    )


def refund(status: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": "re_1",
        "amount": 3000,
        "currency": "usd",
        "payment_intent": "pi_1",
        "status": status,
        **fields,
    }


def test_refund_statuses_map_to_ours() -> None:
    done = refund_outcome(refund("succeeded"), USD_10)
    assert (done.status, done.reference, done.amount_minor, done.provider_payment_id) == (
        ProviderStatus.REFUNDED,
        "re_1",
        3000,
        "pi_1",
    )
    # Pending: Stripe decides later (refund.updated, or asked again); never settled by guess.
    assert refund_outcome(refund("pending"), USD_10).status is ProviderStatus.PROCESSING
    assert refund_outcome(refund("requires_action"), USD_10).status is ProviderStatus.PROCESSING
    failed = refund_outcome(refund("failed", failure_reason="expired_or_canceled_card"), USD_10)
    assert (failed.status, failed.failure_code) == (ProviderStatus.FAILED, "refund_failed")
    assert "expired_or_canceled_card" in (failed.failure_message or "")


# -- amounts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "sent"),
    [
        (Money(4999, "USD"), (4999, "usd")),
        (Money(5000, "JPY"), (5000, "jpy")),  # zero-decimal: unchanged
        (Money(5120, "KWD"), (5120, "kwd")),  # three-decimal: thousandths, ending in 0
        (Money(500, "ISK"), (500, "isk")),  # whole krónur, still with two decimals
    ],
)
def test_amounts_go_to_stripe_in_its_minor_units(money: Money, sent: tuple[int, str]) -> None:
    assert to_stripe_amount(money) == sent
    assert from_stripe_amount(*sent) == money


@pytest.mark.parametrize(
    "money", [Money(5124, "KWD"), Money(1001, "BHD"), Money(550, "ISK")], ids=str
)
def test_an_amount_stripe_cannot_take_is_refused_never_rounded(money: Money) -> None:
    with pytest.raises(ProviderError, match="never rounded"):
        to_stripe_amount(money)


def test_capabilities_carry_stripes_published_limits() -> None:
    limits = CAPABILITIES.currencies
    assert (limits["USD"].minimum, limits["EUR"].minimum, limits["GBP"].minimum) == (50, 50, 30)
    assert limits["JPY"].minimum == 50
    assert {lim.maximum for lim in limits.values()} == {MAXIMUM_CHARGE} == {99_999_999}
    for flag in (
        CAPABILITIES.manual_capture,
        CAPABILITIES.partial_capture,
        CAPABILITIES.multiple_partial_refunds,
        CAPABILITIES.async_outcomes,
        CAPABILITIES.three_d_secure,
        CAPABILITIES.cancel_after_authorization,
    ):
        assert flag is True
    CAPABILITIES.check("stripe", Money(50, "USD"), CaptureMethod.MANUAL)
    with pytest.raises(ValidationFailed, match=re.escape("between 0.50 and 999999.99")):
        CAPABILITIES.check("stripe", Money(49, "USD"), CaptureMethod.AUTOMATIC)
    with pytest.raises(ValidationFailed, match="does not charge in KWD"):
        CAPABILITIES.check("stripe", Money(5120, "KWD"), CaptureMethod.AUTOMATIC)


def test_the_gateway_needs_a_key_and_never_shows_it() -> None:
    with pytest.raises(ValueError, match="empty"):
        StripeGateway("  ")
    gateway = StripeGateway("sk_test_supersecret", api_base="http://127.0.0.1:1/")
    assert "sk_test" not in repr(gateway)
    assert "supersecret" not in repr(gateway)


# -- the whole view of a payment (reconciliation), on Stripe's own shapes ----------------------

CREATED = 1_796_000_000


def pi_shape(status: str, **fields: Any) -> dict[str, Any]:
    charge = {"id": "ch_1", "amount": 5000, "currency": "usd", "disputed": False}
    charge.update(fields.pop("charge", {}))
    return {
        "id": "pi_1",
        "object": "payment_intent",
        "status": status,
        "amount": 5000,
        "currency": "usd",
        "created": CREATED,
        "latest_charge": charge,
        "metadata": {"tillpoint_payment_id": "pay_1", "tillpoint_idempotency_key": "pay_1:sale:1"},
        **fields,
    }


def refund_shape(amount: int, status: str = "succeeded", key: str | None = None) -> dict[str, Any]:
    return {
        "id": f"re_{amount}_{status}",
        "amount": amount,
        "currency": "usd",
        "status": status,
        "payment_intent": "pi_1",
        "created": CREATED + 60,
        "metadata": {"tillpoint_idempotency_key": key} if key else {},
    }


def test_a_partly_captured_payment_counts_stripe_s_amount_received() -> None:
    view = provider_payment(pi_shape("succeeded", amount_received=3000), [], [])
    assert (view.status, view.captured_minor, view.authorized_minor) == (
        ProviderStatus.CAPTURED,
        3000,
        0,
    )
    assert (view.payment_id, view.currency, view.amount_minor) == ("pay_1", "USD", 5000)
    assert view.created_at.timestamp() == CREATED


def test_a_held_payment_is_what_stripe_can_still_capture() -> None:
    view = provider_payment(pi_shape("requires_capture", amount_capturable=4000), [], [])
    assert (view.status, view.authorized_minor, view.captured_minor) == (
        ProviderStatus.AUTHORIZED,
        4000,
        0,
    )


def test_refunds_keep_their_status_and_only_succeeded_ones_count() -> None:
    refunds = [
        refund_shape(1000, key="pay_1:refund:2"),
        refund_shape(500, "pending"),
        refund_shape(700, "failed", key="pay_1:refund:3"),
        refund_shape(200, "canceled"),
    ]
    view = provider_payment(pi_shape("succeeded", amount_received=5000), refunds, [])
    assert view.refunded_minor == 1000
    assert view.status is ProviderStatus.CAPTURED
    assert [(r.amount_minor, r.status, r.idempotency_key) for r in view.refunds] == [
        (1000, ProviderStatus.REFUNDED, "pay_1:refund:2"),
        (500, ProviderStatus.PROCESSING, None),
        (700, ProviderStatus.FAILED, "pay_1:refund:3"),
        (200, ProviderStatus.FAILED, None),
    ]


def test_refunds_reaching_the_captured_amount_make_it_refunded() -> None:
    refunds = [refund_shape(2000), refund_shape(1000, key="pay_1:refund:2")]
    view = provider_payment(pi_shape("succeeded", amount_received=3000), refunds, [])
    assert (view.status, view.refunded_minor) == (ProviderStatus.REFUNDED, 3000)


def test_a_refund_without_a_payment_intent_is_localstripe_s_released_rest() -> None:
    released = {**refund_shape(2000), "payment_intent": None}
    view = provider_payment(pi_shape("succeeded"), [released], [])
    assert (view.captured_minor, view.refunded_minor, view.refunds) == (3000, 0, ())


def test_disputes_speak_the_port_s_statuses() -> None:
    disputes = [
        {
            "id": f"dp_{status}",
            "amount": 5000,
            "currency": "usd",
            "reason": "fraudulent",
            "status": status,
            "evidence_details": {"due_by": CREATED + 86_400},
        }
        for status in ("warning_needs_response", "under_review", "warning_closed", "lost")
    ]
    view = provider_payment(pi_shape("succeeded", amount_received=5000), [], disputes)
    assert [d.status for d in view.disputes] == ["needs_response", "under_review", "won", "lost"]
    assert view.disputes[0].evidence_due_by is not None
    assert view.disputes[0].evidence_due_by.timestamp() == CREATED + 86_400
    assert view.disputes[0].reason == "fraudulent"


def test_a_payment_intent_made_without_tillpoint_has_no_payment_id() -> None:
    view = provider_payment({**pi_shape("canceled"), "metadata": {}}, [], [])
    assert (view.status, view.payment_id, view.authorized_minor) == (
        ProviderStatus.CANCELED,
        None,
        0,
    )
