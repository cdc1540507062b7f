"""The Stripe adapter (`StripeGateway`) against localstripe, a real fake Stripe server started by
the suite (tests/support/localstripe.py), with no tillpoint service in between: what each call
sends, what localstripe then holds, and how its answers and failures come back in our terms.

What localstripe cannot show (decline codes, pending refunds, 5xx) is covered by the unit tests
of the mapping (tests/unit/adapters/test_stripe_mapping.py)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from tests.conftest import closed_port
from tests.support.localstripe import LocalStripe
from tillpoint.adapters.providers.exchange import recording
from tillpoint.adapters.providers.stripe import METADATA_KEY, StripeGateway
from tillpoint.domain.money import Money
from tillpoint.domain.payment import OperationKind, PaymentMethod, ProviderStatus
from tillpoint.service.ports import (
    AuthorizeRequest,
    Lookup,
    PaymentProvider,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)

VISA = "4242424242424242"
DECLINED = "4000000000000341"
THREE_D_SECURE = "4000002500003155"


@pytest.fixture
async def gateway(clean_localstripe: LocalStripe) -> AsyncIterator[StripeGateway]:
    gw = StripeGateway(clean_localstripe.api_key, api_base=clean_localstripe.url)
    try:
        yield gw
    finally:
        await gw.aclose()


def key(what: str = "authorize") -> str:
    return f"pay_{secrets.token_hex(6)}:{what}:1"


def request(pm: str, amount: Money, *, capture: bool) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=f"pay_{secrets.token_hex(6)}",
        order_id=f"ord_{secrets.token_hex(6)}",
        amount=amount,
        capture=capture,
        payment_method=PaymentMethod(token=pm, brand="visa", last4=pm[-4:]),
    )


def lookup(
    kind: OperationKind, idempotency_key: str, amount: Money, pi: str | None = None
) -> Lookup:
    return Lookup(
        idempotency_key=idempotency_key,
        kind=kind,
        payment_id="pay_x",
        provider_payment_id=pi,
        amount=amount,
        created_at=datetime.now(UTC),
    )


def usd(text: str) -> Money:
    return Money.parse(text, "USD")


def test_the_gateway_is_a_payment_provider(gateway: StripeGateway) -> None:
    provider: PaymentProvider = gateway
    assert provider.name == "stripe"
    assert provider.available() is True
    assert "sk_" not in repr(gateway)


async def test_a_sale_is_captured_with_a_payment_intent(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    idem = key("sale")
    req = request(pm, usd("49.99"), capture=True)

    outcome = await gateway.authorize(req, idempotency_key=idem)

    assert outcome.status is ProviderStatus.CAPTURED
    assert outcome.provider_payment_id is not None
    assert outcome.provider_payment_id.startswith("pi_")
    assert outcome.reference is not None
    assert outcome.reference.startswith("ch_")
    assert (outcome.amount_minor, outcome.currency) == (4999, "USD")
    pi = await clean_localstripe.payment_intent(outcome.provider_payment_id)
    assert pi["status"] == "succeeded"
    assert (pi["amount"], pi["currency"]) == (4999, "usd")
    assert pi["metadata"] == {"tillpoint_payment_id": req.payment_id, METADATA_KEY: idem}


async def test_a_partial_capture_reaches_stripe(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    auth = await gateway.authorize(request(pm, usd("100.00"), capture=False), idempotency_key=key())
    assert auth.status is ProviderStatus.AUTHORIZED
    assert auth.amount_minor == 10000
    assert auth.provider_payment_id is not None
    held = await clean_localstripe.payment_intent(auth.provider_payment_id)
    assert held["status"] == "requires_capture"
    assert held["latest_charge"]["captured"] is False

    captured = await gateway.capture(
        auth.provider_payment_id, usd("60.00"), idempotency_key=key("capture")
    )

    assert captured.status is ProviderStatus.CAPTURED
    assert (captured.amount_minor, captured.currency) == (6000, "USD")
    assert captured.provider_payment_id == auth.provider_payment_id
    charge = (await clean_localstripe.payment_intent(auth.provider_payment_id))["latest_charge"]
    assert charge["captured"] is True
    # localstripe releases the uncaptured 40.00 as an automatic refund: 60.00 stays captured.
    assert charge["amount"] - charge["amount_refunded"] == 6000
    released = await clean_localstripe.refunds(auth.provider_payment_id)
    assert [r["amount"] for r in released] == [4000]
    assert METADATA_KEY not in released[0]["metadata"]


async def test_a_capture_is_found_by_get_transaction(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    auth = await gateway.authorize(request(pm, usd("100.00"), capture=False), idempotency_key=key())
    assert auth.provider_payment_id is not None
    capture_key = key("capture")
    ask = lookup(OperationKind.CAPTURE, capture_key, usd("60.00"), auth.provider_payment_id)

    before = await gateway.get_transaction(ask)
    assert before is not None
    assert before.status is ProviderStatus.AUTHORIZED

    await gateway.capture(auth.provider_payment_id, usd("60.00"), idempotency_key=capture_key)
    after = await gateway.get_transaction(ask)
    assert after is not None
    assert (after.status, after.amount_minor) == (ProviderStatus.CAPTURED, 6000)


async def test_a_void_cancels_the_payment_intent(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    auth = await gateway.authorize(request(pm, usd("25.00"), capture=False), idempotency_key=key())
    assert auth.provider_payment_id is not None
    void_key = key("void")

    voided = await gateway.void(auth.provider_payment_id, idempotency_key=void_key)

    assert voided.status is ProviderStatus.CANCELED
    assert (voided.amount_minor, voided.currency) == (2500, "USD")
    assert (await clean_localstripe.payment_intent(auth.provider_payment_id))["status"] == (
        "canceled"
    )
    found = await gateway.get_transaction(
        lookup(OperationKind.VOID, void_key, usd("25.00"), auth.provider_payment_id)
    )
    assert found is not None
    assert found.status is ProviderStatus.CANCELED


async def test_two_partial_refunds_reach_stripe_and_are_found_by_their_keys(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    sale = await gateway.authorize(request(pm, usd("100.00"), capture=True), idempotency_key=key())
    assert sale.provider_payment_id is not None
    pi = sale.provider_payment_id
    first_key, second_key = key("refund"), key("refund")

    first = await gateway.refund(pi, usd("30.00"), idempotency_key=first_key)
    second = await gateway.refund(pi, usd("20.00"), idempotency_key=second_key)

    for outcome, minor in ((first, 3000), (second, 2000)):
        assert outcome.status is ProviderStatus.REFUNDED
        assert (outcome.amount_minor, outcome.currency) == (minor, "USD")
        assert outcome.provider_payment_id == pi
        assert outcome.reference is not None
        assert outcome.reference.startswith("re_")
    assert first.reference != second.reference
    at_stripe = {
        r["metadata"][METADATA_KEY]: (r["id"], r["amount"])
        for r in await clean_localstripe.refunds(pi)
    }
    assert at_stripe == {
        first_key: (first.reference, 3000),
        second_key: (second.reference, 2000),
    }
    for idem, expected in ((first_key, first), (second_key, second)):
        found = await gateway.get_transaction(lookup(OperationKind.REFUND, idem, usd("1.00"), pi))
        assert found is not None
        assert (found.status, found.reference, found.amount_minor) == (
            ProviderStatus.REFUNDED,
            expected.reference,
            expected.amount_minor,
        )
    unknown = await gateway.get_transaction(lookup(OperationKind.REFUND, key(), usd("1.00"), pi))
    assert unknown is None


async def test_a_declined_card_is_a_failed_outcome_with_our_code(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(DECLINED)
    idem = key()

    with recording() as ex:
        outcome = await gateway.authorize(
            request(pm, usd("10.00"), capture=True), idempotency_key=idem
        )

    assert outcome.status is ProviderStatus.FAILED
    assert outcome.failure_code == "card_declined"
    assert outcome.failure_message == "Your card was declined."
    assert (outcome.amount_minor, outcome.currency) == (1000, "USD")
    # The PaymentIntent is kept, though localstripe's error names only the charge.
    assert outcome.provider_payment_id is not None
    assert outcome.provider_payment_id.startswith("pi_")
    assert (await clean_localstripe.payment_intent(outcome.provider_payment_id))["status"] == (
        "requires_payment_method"
    )
    assert ex.http_status == 402
    assert ex.provider_request_id is not None
    assert ex.provider_request_id.startswith("req_")
    found = await gateway.get_transaction(lookup(OperationKind.SALE, idem, usd("10.00")))
    assert found is not None
    assert (found.status, found.failure_code) == (ProviderStatus.FAILED, "card_declined")
    assert found.provider_payment_id == outcome.provider_payment_id


async def test_three_d_secure_needs_the_customer_and_completes_through_stripe(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(THREE_D_SECURE)
    idem = key("sale")

    outcome = await gateway.authorize(request(pm, usd("80.00"), capture=True), idempotency_key=idem)

    assert outcome.status is ProviderStatus.REQUIRES_ACTION
    assert outcome.next_action == {"type": "use_stripe_sdk"}
    assert outcome.provider_payment_id is not None
    pi = await clean_localstripe.payment_intent(outcome.provider_payment_id)
    secret = await gateway.client_secret(outcome.provider_payment_id)
    assert secret == pi["client_secret"]
    assert secret is not None
    assert secret.startswith(f"{outcome.provider_payment_id}_secret_")
    assert secret not in json.dumps(outcome.next_action)

    await clean_localstripe.authenticate(outcome.provider_payment_id, secret, success=True)

    done = await gateway.get_transaction(
        lookup(OperationKind.SALE, idem, usd("80.00"), outcome.provider_payment_id)
    )
    assert done is not None
    assert (done.status, done.amount_minor) == (ProviderStatus.CAPTURED, 8000)
    assert done.reference is not None
    assert done.reference.startswith("ch_")


async def test_a_failed_authentication_is_a_decline_with_stripes_message(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(THREE_D_SECURE)
    idem = key()
    outcome = await gateway.authorize(
        request(pm, usd("80.00"), capture=False), idempotency_key=idem
    )
    assert outcome.provider_payment_id is not None
    secret = await gateway.client_secret(outcome.provider_payment_id)
    assert secret is not None

    await clean_localstripe.authenticate(outcome.provider_payment_id, secret, success=False)

    failed = await gateway.get_transaction(lookup(OperationKind.AUTHORIZE, idem, usd("80.00")))
    assert failed is not None
    assert failed.status is ProviderStatus.FAILED
    assert failed.failure_code == "card_declined"
    assert failed.failure_message == "The provided PaymentMethod has failed authentication."


async def test_get_transaction_finds_an_authorization_by_its_key_alone(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)
    keys = [key() for _ in range(3)]
    outcomes = [
        await gateway.authorize(request(pm, usd(f"{n}.00"), capture=False), idempotency_key=k)
        for n, k in enumerate(keys, start=11)
    ]

    found = await gateway.get_transaction(lookup(OperationKind.AUTHORIZE, keys[1], usd("12.00")))

    assert found is not None
    assert found.status is ProviderStatus.AUTHORIZED
    assert found.provider_payment_id == outcomes[1].provider_payment_id
    assert (found.amount_minor, found.currency) == (1200, "USD")
    assert (
        await gateway.get_transaction(lookup(OperationKind.AUTHORIZE, key(), usd("1.00"))) is None
    )
    assert (
        await gateway.get_transaction(lookup(OperationKind.SALE, key(), usd("1.00"), "pi_missing"))
        is None
    )


async def test_a_zero_decimal_amount_is_sent_unchanged(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(VISA)

    outcome = await gateway.authorize(
        request(pm, Money.parse("5000", "JPY"), capture=True), idempotency_key=key()
    )

    assert outcome.status is ProviderStatus.CAPTURED
    assert (outcome.amount_minor, outcome.currency) == (5000, "JPY")
    assert outcome.provider_payment_id is not None
    pi = await clean_localstripe.payment_intent(outcome.provider_payment_id)
    assert (pi["amount"], pi["currency"]) == (5000, "jpy")


async def test_the_exchange_records_the_call_without_secrets(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    pm = await clean_localstripe.payment_method(THREE_D_SECURE)
    idem = key()

    with recording() as ex:
        outcome = await gateway.authorize(
            request(pm, usd("15.00"), capture=False), idempotency_key=idem
        )
    assert outcome.provider_payment_id is not None
    secret = (await clean_localstripe.payment_intent(outcome.provider_payment_id))["client_secret"]

    assert ex.http_status == 200
    assert ex.provider_request_id is not None
    assert ex.provider_request_id.startswith("req_")
    assert ex.request is not None
    assert ex.response is not None
    assert ex.request["amount"] == 1500
    assert ex.request["metadata"][METADATA_KEY] == idem
    assert ex.response["id"] == outcome.provider_payment_id
    wire = json.dumps([ex.request, ex.response])
    assert secret not in wire
    assert "_secret_" not in wire
    assert "sk_" not in wire
    assert THREE_D_SECURE not in wire

    with recording() as asked:
        assert await gateway.client_secret(outcome.provider_payment_id) == secret
    assert asked.http_status == 200
    assert secret not in json.dumps(asked.response)


async def test_a_token_that_is_not_a_payment_method_is_refused_before_any_call(
    gateway: StripeGateway,
) -> None:
    with recording() as ex, pytest.raises(ProviderError, match="pm_"):
        await gateway.authorize(
            request("tok_visa", usd("10.00"), capture=True), idempotency_key=key()
        )
    assert ex.request is None


async def test_a_refused_api_key_is_a_provider_error_that_does_not_quote_it(
    clean_localstripe: LocalStripe,
) -> None:
    gw = StripeGateway("rk_test_notakeylocalstripetakes", api_base=clean_localstripe.url)
    try:
        with recording() as ex, pytest.raises(ProviderError) as raised:
            await gw.client_secret("pi_anything")
    finally:
        await gw.aclose()
    assert "rk_test" not in str(raised.value)
    assert "401" in str(raised.value)
    assert ex.http_status == 401


async def test_a_port_nobody_listens_on_is_unavailable() -> None:
    with closed_port() as port:
        gw = StripeGateway("sk_test_x", api_base=f"http://127.0.0.1:{port}")
        try:
            with pytest.raises(ProviderUnavailable):
                await gw.authorize(
                    request("pm_card_visa", usd("10.00"), capture=True), idempotency_key=key()
                )
            with pytest.raises(ProviderUnavailable):
                await gw.get_transaction(lookup(OperationKind.SALE, key(), usd("1.00")))
        finally:
            await gw.aclose()


@asynccontextmanager
async def silent_server(*, hang_up: bool) -> AsyncIterator[int]:
    """A server that reads the request and never answers: it hangs, or closes the connection."""
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        if not hang_up:
            await release.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        release.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("hang_up", [False, True], ids=["no answer in time", "hung up"])
async def test_a_request_sent_without_an_answer_is_a_timeout_never_a_failure(
    hang_up: bool,
) -> None:
    async with silent_server(hang_up=hang_up) as port:
        gw = StripeGateway("sk_test_x", api_base=f"http://127.0.0.1:{port}", timeout=0.5)
        try:
            with pytest.raises(ProviderTimeout) as raised:
                await gw.authorize(
                    request("pm_card_visa", usd("10.00"), capture=True), idempotency_key=key()
                )
        finally:
            await gw.aclose()
    assert type(raised.value) is ProviderTimeout  # not a server error: nothing answered
    assert "outcome is unknown" in str(raised.value)


async def test_a_retried_call_with_the_same_key_returns_the_same_stripe_objects(
    gateway: StripeGateway, clean_localstripe: LocalStripe
) -> None:
    """Stripe's idempotency (added to localstripe by the suite's launcher): the same key, the
    same answer, no second effect."""
    pm = await clean_localstripe.payment_method(VISA)
    req, idem = request(pm, usd("40.00"), capture=True), key("sale")
    first = await gateway.authorize(req, idempotency_key=idem)
    with recording() as replayed:
        again = await gateway.authorize(req, idempotency_key=idem)
    assert first.provider_payment_id is not None
    assert again == first
    assert replayed.http_status == 200
    listed = await clean_localstripe.get("/v1/payment_intents", limit="100")
    assert [p["id"] for p in listed["data"]] == [first.provider_payment_id]

    refund_key = key("refund")
    refunded = await gateway.refund(
        first.provider_payment_id, usd("5.00"), idempotency_key=refund_key
    )
    assert (
        await gateway.refund(first.provider_payment_id, usd("5.00"), idempotency_key=refund_key)
        == refunded
    )
    assert len(await clean_localstripe.refunds(first.provider_payment_id)) == 1

    with pytest.raises(ProviderError, match="idempotency key was used with other parameters"):
        await gateway.refund(first.provider_payment_id, usd("6.00"), idempotency_key=refund_key)
