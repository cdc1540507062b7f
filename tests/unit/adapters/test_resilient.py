"""The resilient call layer (adapters/providers/resilient.py) around a scripted adapter: which
failures are retried (with the same provider key), when the breaker opens and closes, and the
audit row each attempt leaves. No network, no database; backoff sleeps are recorded, not slept.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time as _time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from purgatory.domain import model as purgatory_model

from tests.unit.fakes import FakeCallLog
from tillpoint.adapters.providers import resilient as resilient_module
from tillpoint.adapters.providers.exchange import exchange
from tillpoint.adapters.providers.resilient import (
    CallPolicy,
    Resilient,
    ResilientMock,
    resilient,
)
from tillpoint.adapters.telemetry import REGISTRY, PrometheusTelemetry
from tillpoint.domain.cards import find_card_numbers
from tillpoint.domain.money import Money
from tillpoint.domain.payment import OperationKind, Outcome, PaymentMethod, ProviderStatus
from tillpoint.service.ports import (
    AuthorizeRequest,
    Capabilities,
    CircuitOpen,
    Lookup,
    MockControl,
    PaymentProvider,
    ProviderCall,
    ProviderError,
    ProviderPayment,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)

EUR = Money(1000, "EUR")
PAYMENT = "pay_01TEST"
KEY = f"{PAYMENT}:sale:1"
HANG = "hang"  # a scripted answer: the call never answers


def outcome(
    status: ProviderStatus = ProviderStatus.CAPTURED, failure_code: str | None = None
) -> Outcome:
    return Outcome(
        status=status,
        provider_payment_id="sp_1",
        amount_minor=EUR.minor,
        currency=EUR.currency,
        reference="ref_1",
        failure_code=failure_code,
    )


DECLINE = outcome(ProviderStatus.FAILED, failure_code="card_declined")


def view(provider_payment_id: str, payment_id: str | None = PAYMENT) -> ProviderPayment:
    return ProviderPayment(
        provider_payment_id=provider_payment_id,
        status=ProviderStatus.CAPTURED,
        currency="EUR",
        amount_minor=EUR.minor,
        authorized_minor=0,
        captured_minor=EUR.minor,
        refunded_minor=0,
        created_at=datetime(2026, 12, 1, tzinfo=UTC),
        payment_id=payment_id,
    )


Answer = Outcome | Exception | str


class Scripted:
    """An adapter that answers what the test scripted, in order (then succeeds), and keeps
    the idempotency key of every call it received."""

    capabilities = Capabilities(
        manual_capture=True,
        partial_capture=True,
        multiple_partial_refunds=True,
        async_outcomes=False,
        three_d_secure=False,
        cancel_after_authorization=True,
    )

    def __init__(self, *answers: Answer) -> None:
        self.name = f"scripted_{secrets.token_hex(4)}"  # its own gauge series per test
        self.script: deque[Answer] = deque(answers)
        self.keys: list[str] = []
        # What `payments` lists, in order; an exception in it is raised there (once).
        self.listing: list[ProviderPayment | Exception] = []
        self.listings = 0  # how many times `payments` was started

    async def _answer(self, key: str) -> Outcome:
        self.keys.append(key)
        answer = self.script.popleft() if self.script else outcome()
        if answer == HANG:
            await asyncio.sleep(3600)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, Outcome)
        return answer

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        return await self._answer(idempotency_key)

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._answer(idempotency_key)

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        return await self._answer(idempotency_key)

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._answer(idempotency_key)

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        return await self._answer(lookup.idempotency_key)

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        await self._answer(provider_payment_id)
        return view(provider_payment_id)

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        self.listings += 1
        for i, item in enumerate(list(self.listing)):
            if isinstance(item, Exception):
                self.listing.pop(i)  # a failure happens once
                raise item
            yield item

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        self.keys.append(provider_payment_id)
        return "sp_1_secret_abc"

    def available(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class ScriptedMock(Scripted):
    async def complete(
        self,
        *,
        idempotency_key: str,
        payment_id: str,
        amount: Money,
        capture: bool,
        success: bool,
        failure_code: str | None,
    ) -> Outcome:
        return await self._answer(idempotency_key)


class BrokenLog(FakeCallLog):
    async def record(self, call: ProviderCall) -> None:
        raise OSError("the audit database is gone")


@dataclass
class Rig:
    inner: Scripted
    provider: Resilient
    log: FakeCallLog
    sleeps: list[float]

    @property
    def outcomes(self) -> list[str]:
        return [row.outcome for row in self.log.rows]

    def gauge(self) -> float | None:
        return REGISTRY.get_sample_value("provider_circuit_state", {"provider": self.inner.name})


def rig(
    *answers: Answer,
    retries: int = 2,
    threshold: int = 5,
    reset: float = 60.0,
    timeout: float = 5.0,
    log: FakeCallLog | None = None,
) -> Rig:
    inner = Scripted(*answers)
    policy = CallPolicy(
        timeout=timeout,
        retries=retries,
        backoff=0.2,
        backoff_max=2.0,
        breaker_threshold=threshold,
        breaker_reset=reset,
    )
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    calls = log or FakeCallLog()
    provider = Resilient(
        inner,
        policy=policy,
        calls=calls,
        metrics=PrometheusTelemetry(),
        clock=lambda: datetime.now(UTC),
        sleep=sleep,
    )
    return Rig(inner, provider, calls, sleeps)


def sale(card: PaymentMethod | None = None) -> AuthorizeRequest:
    return AuthorizeRequest(
        payment_id=PAYMENT,
        order_id="ord_1",
        amount=EUR,
        capture=True,
        payment_method=card or PaymentMethod(token="pm_card_visa", brand="visa", last4="4242"),
    )


async def authorize(r: Rig) -> Outcome:
    return await r.provider.authorize(sale(), idempotency_key=KEY)


class TestRetries:
    async def test_an_unreachable_provider_is_called_again_with_the_same_key(self) -> None:
        r = rig(ProviderUnavailable("connection refused"))
        assert (await authorize(r)).status is ProviderStatus.CAPTURED
        assert r.inner.keys == [KEY, KEY]
        assert r.outcomes == ["unavailable", "CAPTURED"]
        assert {row.idempotency_key for row in r.log.rows} == {KEY}
        assert {row.payment_id for row in r.log.rows} == {PAYMENT}
        assert len({row.id for row in r.log.rows}) == 2
        [wait] = r.sleeps
        assert 0 <= wait <= 2.0

    async def test_server_errors_are_retried_up_to_the_retries_then_raised(self) -> None:
        r = rig(*(ProviderServerError("502 from the provider") for _ in range(3)), retries=2)
        with pytest.raises(ProviderServerError):
            await authorize(r)
        assert r.inner.keys == [KEY, KEY, KEY]
        assert r.outcomes == ["server_error"] * 3
        assert len(r.sleeps) == 2
        assert all(0 <= wait <= 2.0 for wait in r.sleeps)

    async def test_a_server_error_then_an_answer_is_the_answer(self) -> None:
        key = f"{PAYMENT}:capture:2"
        r = rig(ProviderServerError("503"), outcome())
        answer = await r.provider.capture("sp_1", EUR, idempotency_key=key)
        assert answer.status is ProviderStatus.CAPTURED
        assert r.inner.keys == [key, key]
        assert [row.operation for row in r.log.rows] == ["capture", "capture"]
        assert {row.payment_id for row in r.log.rows} == {PAYMENT}  # parsed from the key

    async def test_a_timeout_is_not_retried(self) -> None:
        r = rig(ProviderTimeout("read timed out"))
        with pytest.raises(ProviderTimeout):
            await authorize(r)
        assert r.inner.keys == [KEY]
        assert r.outcomes == ["timeout"]
        assert r.sleeps == []

    async def test_an_attempt_without_an_answer_in_time_is_a_timeout(self) -> None:
        r = rig(HANG, timeout=0.05)
        with pytest.raises(ProviderTimeout, match="no answer"):
            await authorize(r)
        assert r.inner.keys == [KEY]
        assert r.outcomes == ["timeout"]

    async def test_a_refused_call_is_not_retried(self) -> None:
        r = rig(ProviderError("invalid request"))
        with pytest.raises(ProviderError):
            await authorize(r)
        assert r.inner.keys == [KEY]
        assert r.outcomes == ["error"]

    async def test_a_decline_is_an_answer_not_a_failure(self) -> None:
        r = rig(DECLINE)
        assert (await authorize(r)).status is ProviderStatus.FAILED
        assert r.inner.keys == [KEY]
        assert r.outcomes == ["FAILED"]


class TestCircuitBreaker:
    async def test_it_opens_after_the_threshold_and_fails_fast(self) -> None:
        r = rig(*(ProviderUnavailable("down") for _ in range(3)), retries=0, threshold=3)
        assert r.gauge() == 0
        for _ in range(3):
            with pytest.raises(ProviderUnavailable):
                await authorize(r)
        assert r.provider.available() is False
        assert r.gauge() == 2

        with pytest.raises(CircuitOpen):
            await authorize(r)
        assert len(r.inner.keys) == 3  # the adapter was not called
        assert r.outcomes == ["unavailable"] * 3 + ["circuit_open"]
        refused = r.log.rows[-1]
        assert refused.response_body is None  # nothing was sent, nothing answered
        assert refused.idempotency_key == KEY

    async def test_a_refusal_by_the_breaker_is_not_retried(self) -> None:
        r = rig(*(ProviderUnavailable("down") for _ in range(2)), retries=5, threshold=2)
        with pytest.raises(CircuitOpen):
            await authorize(r)
        assert r.inner.keys == [KEY, KEY]  # the third attempt met the open breaker
        assert r.outcomes == ["unavailable", "unavailable", "circuit_open"]
        assert len(r.sleeps) == 2

    async def test_timeouts_and_server_errors_count(self) -> None:
        r = rig(ProviderTimeout("slow"), ProviderServerError("500"), retries=0, threshold=2)
        for _ in range(2):
            with pytest.raises(ProviderTimeout):
                await authorize(r)
        assert r.provider.available() is False
        with pytest.raises(CircuitOpen):
            await r.provider.refund("sp_1", EUR, idempotency_key=f"{PAYMENT}:refund:2")

    async def test_declines_and_refusals_do_not_count(self) -> None:
        answers: list[Answer] = [DECLINE, ProviderError("bad request")] * 3
        r = rig(*answers, retries=0, threshold=2)
        for _ in range(3):
            assert (await authorize(r)).status is ProviderStatus.FAILED
            with pytest.raises(ProviderError):
                await authorize(r)
        assert r.provider.available() is True
        assert r.gauge() == 0
        assert "circuit_open" not in r.outcomes

    async def test_only_consecutive_failures_count(self) -> None:
        down = ProviderUnavailable("down")
        r = rig(down, DECLINE, down, outcome(), down, retries=0, threshold=2)
        for _ in range(5):
            with contextlib.suppress(ProviderUnavailable):
                await authorize(r)
        assert r.provider.available() is True
        assert len(r.inner.keys) == 5

    async def test_after_the_reset_time_a_success_closes_it(self, wall: WallClock) -> None:
        down = ProviderUnavailable("down")
        r = rig(down, down, retries=0, threshold=2, reset=60)
        for _ in range(2):
            with pytest.raises(ProviderUnavailable):
                await authorize(r)
        assert r.gauge() == 2
        assert r.provider.available() is False
        wall.advance(61)  # past the reset: the next call is a probe (half-open)
        assert r.provider.available() is True
        assert (await authorize(r)).status is ProviderStatus.CAPTURED
        assert r.gauge() == 0
        assert r.provider.available() is True
        assert r.outcomes == ["unavailable", "unavailable", "CAPTURED"]

    async def test_a_failed_probe_opens_it_again(self, wall: WallClock) -> None:
        down = ProviderUnavailable("down")
        r = rig(down, down, down, retries=0, threshold=2, reset=60)
        for _ in range(2):
            with pytest.raises(ProviderUnavailable):
                await authorize(r)
        wall.advance(61)
        with pytest.raises(ProviderUnavailable):
            await authorize(r)  # the probe fails: open again at once
        assert r.gauge() == 2
        assert r.provider.available() is False

    async def test_lookups_and_secrets_go_through_it(self) -> None:
        r = rig(ProviderUnavailable("down"), retries=0, threshold=1)
        lookup = Lookup(KEY, OperationKind.SALE, PAYMENT, "sp_1", EUR, datetime.now(UTC))
        with pytest.raises(ProviderUnavailable):
            await r.provider.get_transaction(lookup)
        with pytest.raises(CircuitOpen):
            await r.provider.client_secret("sp_1")
        assert [row.operation for row in r.log.rows] == ["get_transaction", "client_secret"]


class WallClock:
    """`time` as the breaker reads it (purgatory and `available()` use `time.time()`), moved
    only when a test says so: no test waits for a reset to pass on the real clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def time(self) -> float:
        return _time.time() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    clock = WallClock()
    for module in (purgatory_model, resilient_module):
        assert module.time is _time  # both read the time module: patch it there
        monkeypatch.setattr(module, "time", clock)
    return clock


class TestAudit:
    async def test_the_mock_s_call_is_recorded_from_its_arguments_and_answer(self) -> None:
        r = rig()
        card = PaymentMethod(token="pm_card_visa", brand="visa", last4="4242", holder_name="A B")
        structlog.contextvars.bind_contextvars(request_id="req_audit_test")
        try:
            await r.provider.authorize(sale(card), idempotency_key=KEY)
        finally:
            structlog.contextvars.unbind_contextvars("request_id")
        [row] = r.log.rows
        assert row.provider == r.inner.name
        assert (row.operation, row.outcome, row.http_status) == ("authorize", "CAPTURED", None)
        assert row.correlation_id == "req_audit_test"
        assert row.latency_ms >= 0
        assert row.request_body is not None
        assert row.response_body is not None
        assert row.request_body["payment_method"] == {
            "type": "card",
            "brand": "visa",
            "last4": "4242",
            "exp_month": None,
            "exp_year": None,
            "token": "pm_card_visa",
        }
        assert row.request_body["idempotency_key"] == KEY
        assert (row.request_body["amount_minor"], row.request_body["currency"]) == (1000, "EUR")
        assert row.response_body["status"] == "CAPTURED"
        assert row.response_body["provider_payment_id"] == "sp_1"

    async def test_a_client_s_correlation_id_wins_over_the_request_id(self) -> None:
        r = rig()
        structlog.contextvars.bind_contextvars(request_id="req_1", correlation_id="corr_1")
        try:
            await authorize(r)
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "correlation_id")
        assert r.log.rows[0].correlation_id == "corr_1"

    async def test_what_the_adapter_recorded_is_kept_redacted(self) -> None:
        class Http(Scripted):
            async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
                wire = exchange()
                wire.sent({"amount": 1000, "card": {"number": "4242424242424242", "cvc": "123"}})
                wire.answered(
                    {"id": "pi_1", "client_secret": "pi_1_secret_xyz", "key": "sk_test_123"},
                    http_status=200,
                    request_id="req_stripe_1",
                )
                return outcome()

        inner = Http()
        calls = FakeCallLog()
        provider = resilient(
            inner,
            policy=CallPolicy(1.0, 0, 0.1, 0.1, 5, 60.0),
            calls=calls,
            metrics=PrometheusTelemetry(),
            clock=lambda: datetime.now(UTC),
        )
        await provider.authorize(sale(), idempotency_key=KEY)
        [row] = calls.rows
        assert (row.http_status, row.provider_request_id) == (200, "req_stripe_1")
        assert row.response_body is not None
        assert row.response_body["id"] == "pi_1"
        text = repr(row)
        assert "sk_test" not in text
        assert "_secret_" not in text
        assert "4242424242424242" not in text
        assert not find_card_numbers(text)
        assert "123" not in str(row.request_body)

    async def test_an_error_message_quoting_a_key_is_scrubbed(self) -> None:
        r = rig(ProviderError("Invalid API Key provided: sk_test_abcdef; see pi_1_secret_x"))
        with pytest.raises(ProviderError):
            await authorize(r)
        [row] = r.log.rows
        assert row.response_body is not None
        assert row.response_body["error"] == "ProviderError"
        assert "sk_test" not in str(row.response_body)
        assert "_secret_" not in str(row.response_body)

    async def test_a_client_secret_never_reaches_the_audit(self) -> None:
        r = rig()
        assert await r.provider.client_secret("sp_1") == "sp_1_secret_abc"
        [row] = r.log.rows
        assert (row.operation, row.outcome, row.payment_id) == ("client_secret", "ok", None)
        assert "secret_abc" not in repr(row)

    async def test_a_lookup_that_finds_nothing_is_recorded(self) -> None:
        class Empty(Scripted):
            async def get_transaction(self, lookup: Lookup) -> Outcome | None:
                return None

        inner = Empty()
        calls = FakeCallLog()
        provider = Resilient(
            inner,
            policy=CallPolicy(1.0, 0, 0.1, 0.1, 5, 60.0),
            calls=calls,
            metrics=PrometheusTelemetry(),
            clock=lambda: datetime.now(UTC),
        )
        lookup = Lookup(KEY, OperationKind.SALE, PAYMENT, None, EUR, datetime.now(UTC))
        assert await provider.get_transaction(lookup) is None
        assert [(c.operation, c.outcome, c.payment_id) for c in calls.rows] == [
            ("get_transaction", "not_found", PAYMENT)
        ]

    async def test_a_failed_audit_write_never_fails_the_call(self) -> None:
        r = rig(ProviderUnavailable("down"), log=BrokenLog())
        assert (await authorize(r)).status is ProviderStatus.CAPTURED
        assert r.inner.keys == [KEY, KEY]

    async def test_each_attempt_is_timed_with_its_outcome(self) -> None:
        r = rig(ProviderUnavailable("down"))
        await authorize(r)
        labels = {"provider": r.inner.name, "operation": "authorize"}
        count = "payment_attempt_duration_seconds_count"
        assert REGISTRY.get_sample_value(count, {**labels, "outcome": "unavailable"}) == 1
        assert REGISTRY.get_sample_value(count, {**labels, "outcome": "CAPTURED"}) == 1


class TestMockControl:
    def test_the_mock_s_wrapper_keeps_its_controls(self) -> None:
        policy = CallPolicy(1.0, 0, 0.1, 0.1, 5, 60.0)
        metrics, calls = PrometheusTelemetry(), FakeCallLog()

        def wrap(inner: PaymentProvider) -> Resilient:
            return resilient(
                inner, policy=policy, calls=calls, metrics=metrics, clock=lambda: datetime.now(UTC)
            )

        mock, plain = wrap(ScriptedMock()), wrap(Scripted())
        assert isinstance(mock, ResilientMock)
        assert isinstance(mock, MockControl)
        assert not isinstance(plain, MockControl)
        assert (plain.name, plain.capabilities) == (plain.inner.name, Scripted.capabilities)

    async def test_a_completion_goes_through_the_same_layer(self) -> None:
        inner = ScriptedMock(ProviderUnavailable("down"))
        calls = FakeCallLog()
        provider = resilient(
            inner,
            policy=CallPolicy(1.0, 1, 0.0, 0.0, 5, 60.0),
            calls=calls,
            metrics=PrometheusTelemetry(),
            clock=lambda: datetime.now(UTC),
        )
        assert isinstance(provider, MockControl)
        answer = await provider.complete(
            idempotency_key=KEY,
            payment_id=PAYMENT,
            amount=EUR,
            capture=True,
            success=True,
            failure_code=None,
        )
        assert answer.status is ProviderStatus.CAPTURED
        assert inner.keys == [KEY, KEY]
        assert [(c.operation, c.outcome) for c in calls.rows] == [
            ("complete", "unavailable"),
            ("complete", "CAPTURED"),
        ]


class TestProviderViews:
    async def test_a_payment_s_view_is_retried_and_audited_under_our_payment_id(self) -> None:
        r = rig(ProviderServerError("503"))
        found = await r.provider.payment("sp_1")
        assert found is not None
        assert found.payment_id == PAYMENT
        assert r.inner.keys == ["sp_1", "sp_1"]
        assert [(c.operation, c.outcome, c.payment_id) for c in r.log.rows] == [
            ("payment", "server_error", None),
            ("payment", "CAPTURED", PAYMENT),
        ]
        assert r.log.rows[-1].response_body is not None
        assert r.log.rows[-1].response_body["captured_minor"] == EUR.minor

    async def test_a_listing_is_read_one_audited_call_per_payment(self) -> None:
        r = rig()
        r.inner.listing = [view("sp_1"), view("sp_2", payment_id=None)]
        start = datetime(2026, 12, 1, tzinfo=UTC)
        listed = [v async for v in r.provider.payments(start, start + timedelta(days=1))]
        assert [v.provider_payment_id for v in listed] == ["sp_1", "sp_2"]
        assert [(c.operation, c.outcome, c.payment_id) for c in r.log.rows] == [
            ("payments", "CAPTURED", PAYMENT),
            ("payments", "CAPTURED", None),
            ("payments", "end", None),
        ]

    async def test_a_failed_page_lists_again_and_gives_no_payment_twice(self) -> None:
        r = rig()
        r.inner.listing = [view("sp_1"), ProviderUnavailable("reset"), view("sp_2")]
        start = datetime(2026, 12, 1, tzinfo=UTC)
        listed = [v async for v in r.provider.payments(start, start + timedelta(days=1))]
        assert [v.provider_payment_id for v in listed] == ["sp_1", "sp_2"]
        assert r.inner.listings == 2
        assert [c.outcome for c in r.log.rows] == ["CAPTURED", "unavailable", "CAPTURED", "end"]

    async def test_a_listing_that_keeps_failing_raises_after_the_retries(self) -> None:
        r = rig(retries=1)
        r.inner.listing = [ProviderServerError("500"), ProviderServerError("500")]
        start = datetime(2026, 12, 1, tzinfo=UTC)
        with pytest.raises(ProviderServerError):
            [v async for v in r.provider.payments(start, start + timedelta(days=1))]
        assert [c.outcome for c in r.log.rows] == ["server_error", "server_error"]


class TestBudget:
    def test_the_budget_covers_every_attempt_and_backoff(self) -> None:
        policy = CallPolicy(10.0, 2, 0.2, 2.0, 5, 30.0)
        # Three attempts' timeouts, two capped backoffs, and each attempt's audit write.
        assert policy.budget() >= 10.0 * 3 + 2.0 * 2
