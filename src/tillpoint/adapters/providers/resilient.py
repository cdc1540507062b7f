"""Resilient provider calls, around every adapter (the mock gateway, Stripe, …).

`Resilient` is a `PaymentProvider` wrapping another. For every call it:

- bounds each attempt by a timeout (`TILLPOINT_PROVIDER_TIMEOUT`); no answer in time is a
  `ProviderTimeout` (unknown outcome), never retried — the janitor asks the provider instead;
- retries (tenacity: exponential backoff with full jitter, `TILLPOINT_PROVIDER_RETRIES` extra
  attempts) what is safe to send again: a provider not reached (`ProviderUnavailable`) and a
  server error or 429 (`ProviderServerError`). A retry re-sends the *same* call with the same
  provider idempotency key, so the provider acts at most once;
- keeps a circuit breaker per provider (purgatory): after `TILLPOINT_PROVIDER_BREAKER_THRESHOLD`
  consecutive failures (unreachable, server errors, timeouts — not declines nor refusals) it
  opens, and calls fail fast with `CircuitOpen` without reaching the adapter, until
  `TILLPOINT_PROVIDER_BREAKER_RESET` has passed and a probe call succeeds (half-open → closed).
  Its state is the gauge `provider_circuit_state{provider}` (0 closed, 1 half-open, 2 open);
- audits every attempt (`provider_call_audit`): the adapter fills the redacted bodies, HTTP
  status and provider request id of its `Exchange`; what it left empty (the mock has no HTTP)
  is filled here from the call's arguments and answer. A failure to write the audit is logged
  and never fails the call. Each attempt is observed as
  `payment_attempt_duration_seconds{provider,operation,outcome}`.

A listing (`payments`) is read one payment at a time, each step a call of its own (timeout,
breaker, audit row `payments`); a step that failed in a way worth retrying lists again from the
start, skipping the payments already given, because an adapter's iterator that raised is over.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, Literal, Protocol, TypeVar

import structlog
from purgatory import AsyncCircuitBreakerFactory, ContextChanged, Event
from purgatory.domain.model import OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from tillpoint.adapters.providers.exchange import REDACTED, Exchange, recording
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, payment_of_key
from tillpoint.service.ports import (
    AuthorizeRequest,
    CircuitOpen,
    Lookup,
    MockControl,
    PaymentProvider,
    ProviderCall,
    ProviderCallLog,
    ProviderPayment,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
)

log = structlog.get_logger("tillpoint.providers")

T = TypeVar("T")
R = TypeVar("R")

# An audit row waits at most this long for the database; past it the row is given up (logged).
AUDIT_TIMEOUT: Final = 5.0
CIRCUIT_GAUGE: Final = "provider_circuit_state"
ATTEMPT_HISTOGRAM: Final = "payment_attempt_duration_seconds"
CIRCUIT_STATES: Final[Mapping[str, float]] = {"closed": 0, "half-opened": 1, "opened": 2}
Operation = Literal[
    "authorize",
    "capture",
    "void",
    "refund",
    "get_transaction",
    "payment",
    "payments",
    "client_secret",
    "complete",
]
# Provider keys and client secrets that an error message might quote.
_SECRET_WORDS: Final = re.compile(r"\b(?:sk|rk|whsec)_\S*|\S*_secret_\S*")


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """How hard to try one provider call (the resilience settings, in seconds)."""

    timeout: float
    retries: int
    backoff: float
    backoff_max: float
    breaker_threshold: int
    breaker_reset: float

    def budget(self) -> float:
        """The longest a whole call can take: every attempt timing out, and writing its audit
        row, with the longest backoff between attempts."""
        attempts = self.retries + 1
        return (self.timeout + AUDIT_TIMEOUT) * attempts + self.backoff_max * self.retries


class CallMetrics(Protocol):
    """What the resilient layer measures: the `Telemetry` port's timings, and a labelled gauge
    (`PrometheusTelemetry.gauge` takes labels; the port's gauge has none)."""

    def observe(self, name: str, seconds: float, **labels: str) -> None: ...

    def gauge(self, name: str, value: float, **labels: str) -> None: ...


def _retryable(error: BaseException) -> bool:
    """Safe to send again with the same key: not reached, or a server error / 429. A breaker
    that refused is not: it would refuse again."""
    if isinstance(error, CircuitOpen):
        return False
    return isinstance(error, ProviderUnavailable | ProviderServerError)


def _breaks(error: BaseException) -> bool:
    """A failure the breaker counts: the provider unreachable, failing or too slow (our own
    deadline cancelling the call included). Declines are answers; refusals (`ProviderError`)
    and our own bugs say nothing about the provider's health."""
    return isinstance(error, ProviderUnavailable | ProviderTimeout | asyncio.CancelledError)


def outcome_of(error: BaseException) -> str:
    """The audit's outcome of an attempt that gave no answer."""
    match error:
        case CircuitOpen():
            return "circuit_open"
        case ProviderServerError():
            return "server_error"
        case ProviderTimeout():
            return "timeout"
        case ProviderUnavailable():
            return "unavailable"
        case asyncio.CancelledError():
            return "cancelled"
        case _:
            return "error"


def _correlation_id() -> str | None:
    """The request's correlation id (`X-Correlation-ID`) or, when it sent none, its request id,
    as bound to every log line of the request (entrypoints/api/middleware.py)."""
    bound = structlog.contextvars.get_contextvars()
    value = bound.get("correlation_id") or bound.get("request_id")
    return str(value) if value else None


def _error_body(error: BaseException) -> dict[str, Any]:
    message = _SECRET_WORDS.sub(REDACTED, str(error))[:500]
    return {"error": type(error).__name__, "message": message}


def _outcome_body(outcome: Outcome) -> dict[str, Any]:
    body = asdict(outcome)
    body["status"] = outcome.status.value
    body["next_action"] = dict(outcome.next_action) if outcome.next_action else None
    return body


def _money(amount: Money) -> dict[str, Any]:
    return {"amount_minor": amount.minor, "currency": amount.currency}


@dataclass(frozen=True, slots=True)
class _Call(Generic[R]):
    operation: Operation
    payment_id: str | None
    idempotency_key: str | None
    sent: Mapping[str, Any]  # what the call carries, for an adapter that records no body
    send: Callable[[], Awaitable[R]]
    describe: Callable[[R], tuple[str, Mapping[str, Any] | None]]  # outcome, answer body
    # Our payment id as the answer names it, for a call that did not know it (a lookup).
    payment_of: Callable[[R], str | None] = field(default=lambda _: None)


def _described(outcome: Outcome) -> tuple[str, Mapping[str, Any] | None]:
    return outcome.status.value, _outcome_body(outcome)


def _looked_up(outcome: Outcome | None) -> tuple[str, Mapping[str, Any] | None]:
    return ("not_found", None) if outcome is None else _described(outcome)


def _viewed(view: ProviderPayment | None) -> tuple[str, Mapping[str, Any] | None]:
    """A payment's view in the audit: its status, amounts and its refunds' and disputes' ids."""
    if view is None:
        return "not_found", None
    body = {
        "provider_payment_id": view.provider_payment_id,
        "payment_id": view.payment_id,
        "status": view.status.value,
        "currency": view.currency,
        "amount_minor": view.amount_minor,
        "authorized_minor": view.authorized_minor,
        "captured_minor": view.captured_minor,
        "refunded_minor": view.refunded_minor,
        "created_at": view.created_at.isoformat(),
        "refunds": [r.reference for r in view.refunds],
        "disputes": [d.reference for d in view.disputes],
    }
    return view.status.value, body


def _listed(view: ProviderPayment | None) -> tuple[str, Mapping[str, Any] | None]:
    return ("end", None) if view is None else _viewed(view)


def _payment_of_view(view: ProviderPayment | None) -> str | None:
    return view.payment_id if view is not None else None


def _secret(secret: str | None) -> tuple[str, Mapping[str, Any] | None]:
    # The secret itself never reaches the audit, whatever redaction would have done.
    return (
        ("none", {"client_secret": None}) if secret is None else ("ok", {"client_secret": REDACTED})
    )


class Resilient:
    """A provider with a timeout per attempt, retries, a circuit breaker and the call audit."""

    def __init__(
        self,
        inner: PaymentProvider,
        *,
        policy: CallPolicy,
        calls: ProviderCallLog,
        metrics: CallMetrics,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities = inner.capabilities
        self._policy = policy
        self._calls = calls
        self._metrics = metrics
        self._now = clock
        self._sleep = sleep
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=policy.breaker_threshold,
            default_ttl=policy.breaker_reset,
            # Every exception is "excluded" (not a failure) unless `_breaks` says it is one.
            exclude=[(BaseException, lambda error: not _breaks(error))],
        )
        self._breakers.add_listener(self._breaker_changed)
        self._breaker: AsyncCircuitBreaker | None = None
        metrics.gauge(CIRCUIT_GAUGE, CIRCUIT_STATES["closed"], provider=self.name)

    # -- PaymentProvider ----------------------------------------------------------------------

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        method = req.payment_method
        sent = {
            "payment_id": req.payment_id,
            "order_id": req.order_id,
            **_money(req.amount),
            "capture": req.capture,
            "payment_method": {**method.public(), "token": method.token},
            "idempotency_key": idempotency_key,
        }
        return await self._call(
            _Call(
                "authorize",
                req.payment_id,
                idempotency_key,
                sent,
                lambda: self.inner.authorize(req, idempotency_key=idempotency_key),
                _described,
            )
        )

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._change(
            "capture",
            provider_payment_id,
            amount,
            idempotency_key,
            lambda: self.inner.capture(
                provider_payment_id, amount, idempotency_key=idempotency_key
            ),
        )

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        return await self._change(
            "void",
            provider_payment_id,
            None,
            idempotency_key,
            lambda: self.inner.void(provider_payment_id, idempotency_key=idempotency_key),
        )

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        return await self._change(
            "refund",
            provider_payment_id,
            amount,
            idempotency_key,
            lambda: self.inner.refund(provider_payment_id, amount, idempotency_key=idempotency_key),
        )

    async def _change(
        self,
        operation: Operation,
        provider_payment_id: str,
        amount: Money | None,
        idempotency_key: str,
        send: Callable[[], Awaitable[Outcome]],
    ) -> Outcome:
        """A capture, void or refund of a payment the provider knows."""
        sent = {
            "provider_payment_id": provider_payment_id,
            **(_money(amount) if amount is not None else {}),
            "idempotency_key": idempotency_key,
        }
        return await self._call(
            _Call(
                operation, payment_of_key(idempotency_key), idempotency_key, sent, send, _described
            )
        )

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        sent = {
            "idempotency_key": lookup.idempotency_key,
            "kind": lookup.kind.value,
            "payment_id": lookup.payment_id,
            "provider_payment_id": lookup.provider_payment_id,
            **_money(lookup.amount),
        }
        return await self._call(
            _Call(
                "get_transaction",
                lookup.payment_id,
                lookup.idempotency_key,
                sent,
                lambda: self.inner.get_transaction(lookup),
                _looked_up,
            )
        )

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        return await self._call(
            _Call(
                "payment",
                None,
                None,
                {"provider_payment_id": provider_payment_id},
                lambda: self.inner.payment(provider_payment_id),
                _viewed,
                _payment_of_view,
            )
        )

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        listing = _Listing(self.inner, created_from, created_to)
        sent = {"created_from": created_from.isoformat(), "created_to": created_to.isoformat()}
        try:
            while True:
                view = await self._call(
                    _Call("payments", None, None, sent, listing.next, _listed, _payment_of_view)
                )
                if view is None:
                    return
                yield view
        finally:
            await listing.aclose()

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        return await self._call(
            _Call(
                "client_secret",
                payment_id,
                None,
                {"provider_payment_id": provider_payment_id},
                lambda: self.inner.client_secret(provider_payment_id, payment_id=payment_id),
                _secret,
            )
        )

    def available(self) -> bool:
        """False while the circuit is open and its reset time has not passed (a call now would
        fail fast), or while the adapter itself says so."""
        breaker = self._breaker
        if breaker is not None and breaker.context.state == "opened":
            opened_at = breaker.context.opened_at or 0.0
            # purgatory's own clock (time.time) and rule: half-open once the reset has passed.
            if time.time() <= opened_at + breaker.context.ttl:
                return False
        return self.inner.available()

    async def aclose(self) -> None:
        await self.inner.aclose()

    # -- the machinery ------------------------------------------------------------------------

    async def _call(self, call: _Call[T]) -> T:
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self._policy.retries + 1),
            wait=wait_random_exponential(
                multiplier=self._policy.backoff, max=self._policy.backoff_max
            ),
            sleep=self._sleep,
            before_sleep=self._retrying(call),
            reraise=True,
        )
        return await retrying(self._attempt, call)

    def _retrying(self, call: _Call[Any]) -> Callable[[RetryCallState], None]:
        def note(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                "provider.retry",
                provider=self.name,
                operation=call.operation,
                payment_id=call.payment_id,
                attempt=state.attempt_number,
                error=type(error).__name__,
                wait_seconds=round(state.upcoming_sleep, 3),
            )

        return note

    async def _attempt(self, call: _Call[T]) -> T:
        """One outbound call: through the breaker, bounded by the timeout, audited."""
        created_at = self._now()
        started = time.perf_counter()
        with recording() as exchange:
            try:
                result = await self._guarded(call)
            except BaseException as error:
                # A call the breaker refused was never sent: it has no answer.
                refused = isinstance(error, CircuitOpen)
                failure = None if refused else _error_body(error)
                await self._audit(call, exchange, created_at, started, outcome_of(error), failure)
                raise
            outcome, answer = call.describe(result)
            payment_id = call.payment_id or call.payment_of(result)
            await self._audit(call, exchange, created_at, started, outcome, answer, payment_id)
            return result

    async def _guarded(self, call: _Call[T]) -> T:
        breaker = await self._breaker_of()
        try:
            async with breaker:
                try:
                    async with asyncio.timeout(self._policy.timeout):
                        return await call.send()
                except TimeoutError:
                    raise ProviderTimeout(
                        f"{self.name} {call.operation} gave no answer within "
                        f"{self._policy.timeout:g}s"
                    ) from None
        except OpenedState:
            raise CircuitOpen(
                f"the {self.name} circuit is open: calls fail fast until it recovers"
            ) from None

    async def _breaker_of(self) -> AsyncCircuitBreaker:
        if self._breaker is None:
            self._breaker = await self._breakers.get_breaker(self.name)
        return self._breaker

    def _breaker_changed(self, name: str, what: str, event: Event) -> None:
        if what == "state_changed" and isinstance(event, ContextChanged):
            self._metrics.gauge(CIRCUIT_GAUGE, CIRCUIT_STATES[event.state], provider=self.name)
            log.warning("provider.circuit", provider=self.name, state=event.state)

    async def _audit(
        self,
        call: _Call[Any],
        exchange: Exchange,
        created_at: datetime,
        started: float,
        outcome: str,
        answer: Mapping[str, Any] | None,
        payment_id: str | None = None,
    ) -> None:
        elapsed = time.perf_counter() - started
        payment_id = payment_id or call.payment_id
        if exchange.request is None:
            exchange.sent(call.sent)
        if exchange.response is None and answer is not None:
            exchange.answered(
                answer,
                http_status=exchange.http_status,
                request_id=exchange.provider_request_id,
            )
        self._metrics.observe(
            ATTEMPT_HISTOGRAM,
            elapsed,
            provider=self.name,
            operation=call.operation,
            outcome=outcome,
        )
        row = ProviderCall(
            id=new_id("pcall"),
            provider=self.name,
            operation=call.operation,
            payment_id=payment_id,
            idempotency_key=call.idempotency_key,
            provider_request_id=exchange.provider_request_id,
            http_status=exchange.http_status,
            outcome=outcome,
            latency_ms=round(elapsed * 1000),
            correlation_id=_correlation_id(),
            request_body=exchange.request,
            response_body=exchange.response,
            created_at=created_at,
        )
        try:
            async with asyncio.timeout(AUDIT_TIMEOUT):
                await self._calls.record(row)
        except Exception as exc:  # the audit never fails the payment call
            log.error(
                "provider.audit_failed",
                provider=self.name,
                operation=call.operation,
                payment_id=call.payment_id,
                outcome=outcome,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )


class _Listing:
    """An adapter's `payments` listing, read one payment per call. After a failed step the
    adapter's iterator is over (an async generator that raised ends), so the next step lists
    again from the start and skips every payment already given: none is given twice, and none
    is lost to a retried page."""

    def __init__(self, inner: PaymentProvider, created_from: datetime, created_to: datetime):
        self._inner = inner
        self._window = (created_from, created_to)
        self._iterator: AsyncIterator[ProviderPayment] | None = None
        self._given: set[str] = set()

    async def next(self) -> ProviderPayment | None:
        """The next payment not yet given; None at the end of the listing."""
        if self._iterator is None:
            self._iterator = self._inner.payments(*self._window)
        while True:
            try:
                view = await anext(self._iterator)
            except StopAsyncIteration:
                return None
            except BaseException:
                await self.aclose()
                raise
            if view.provider_payment_id not in self._given:
                self._given.add(view.provider_payment_id)
                return view

    async def aclose(self) -> None:
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


class ResilientMock(Resilient):
    """The mock gateway's wrapper: it keeps `MockControl` (`/mock/complete` checks for it),
    its completions going through the same timeout, retries, breaker and audit."""

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
        inner = self.inner
        assert isinstance(inner, MockControl)
        sent = {
            "payment_id": payment_id,
            **_money(amount),
            "capture": capture,
            "success": success,
            "failure_code": failure_code,
            "idempotency_key": idempotency_key,
        }
        return await self._call(
            _Call(
                "complete",
                payment_id,
                idempotency_key,
                sent,
                lambda: inner.complete(
                    idempotency_key=idempotency_key,
                    payment_id=payment_id,
                    amount=amount,
                    capture=capture,
                    success=success,
                    failure_code=failure_code,
                ),
                _described,
            )
        )


def resilient(
    inner: PaymentProvider,
    *,
    policy: CallPolicy,
    calls: ProviderCallLog,
    metrics: CallMetrics,
    clock: Callable[[], datetime],
) -> Resilient:
    """`inner` behind the resilient layer; the mock keeps its `MockControl`."""
    kind = ResilientMock if isinstance(inner, MockControl) else Resilient
    return kind(inner, policy=policy, calls=calls, metrics=metrics, clock=clock)
