"""The mock gateway: a provider that needs no network and behaves like a real one.

Its outcome is chosen by the test card (API.md). It honours provider idempotency keys the way
Stripe does — the same key returns the recorded result and has no second effect — and keeps its
own ledger in the database, so it can later be asked for the truth (`get_transaction`), even
after our process died between its answer and our commit.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.errors import is_unavailable
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, ProviderStatus
from tillpoint.service.ports import AuthorizeRequest, Capabilities, Lookup


@dataclass(frozen=True, slots=True)
class CardBehaviour:
    outcome: str  # success | decline | three_d_secure | async | timeout
    failure_code: str | None = None
    message: str | None = None


DECLINE = "decline"
CARDS: Final[Mapping[str, CardBehaviour]] = {
    "pm_card_visa": CardBehaviour("success"),
    "4242": CardBehaviour("success"),
    "pm_card_chargeDeclined": CardBehaviour(DECLINE, "card_declined", "Your card was declined."),
    "0000": CardBehaviour(DECLINE, "card_declined", "Your card was declined."),
    "pm_card_insufficientFunds": CardBehaviour(
        DECLINE, "insufficient_funds", "Your card has insufficient funds."
    ),
    "1111": CardBehaviour(DECLINE, "insufficient_funds", "Your card has insufficient funds."),
    "pm_card_expired": CardBehaviour(DECLINE, "expired_card", "Your card has expired."),
    "2222": CardBehaviour(DECLINE, "expired_card", "Your card has expired."),
    "pm_card_fraud": CardBehaviour(DECLINE, "fraud_suspected", "The payment looks fraudulent."),
    "3333": CardBehaviour(DECLINE, "fraud_suspected", "The payment looks fraudulent."),
    "pm_card_threeDSecure": CardBehaviour("three_d_secure"),
    "3155": CardBehaviour("three_d_secure"),
    "pm_card_async": CardBehaviour("async"),
    "5555": CardBehaviour("async"),
    "pm_card_timeout": CardBehaviour("timeout"),
    "9999": CardBehaviour("timeout"),
}
FAILURE_MESSAGES: Final[Mapping[str, str]] = {
    b.failure_code: b.message or "" for b in CARDS.values() if b.failure_code
}


def behaviour_of(token: str | None, last4: str | None) -> CardBehaviour:
    for candidate in (token, last4):
        if candidate and candidate in CARDS:
            return CARDS[candidate]
    return CardBehaviour("success")


def _ref(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _result(row: Any) -> Outcome:
    data = dict(row.result)
    return Outcome(
        status=ProviderStatus(data["status"]),
        provider_payment_id=data.get("provider_payment_id"),
        amount_minor=data["amount_minor"],
        currency=data["currency"],
        reference=data.get("reference"),
        failure_code=data.get("failure_code"),
        failure_message=data.get("failure_message"),
        next_action=data.get("next_action"),
        risk_score=data.get("risk_score"),
    )


_LEDGER = t.mock_gateway_ledger
_RECORDED = sa.select(_LEDGER.c.result).where(_LEDGER.c.idempotency_key == sa.bindparam("b_key"))

# The mock stands for a remote provider, whose own storage does not fail with ours: a statement
# on its ledger that lost its connection is run again (each one is idempotent: insert-or-keep,
# read, overwrite with the same value), so a dropped connection never makes the "provider"
# answer with an error about an effect it may or may not have recorded.
_ledger_retry = retry(
    retry=retry_if_exception(is_unavailable),
    stop=stop_after_attempt(8),
    wait=wait_exponential(multiplier=0.02, max=0.5),
    reraise=True,
)

# Called after the mock decides an outcome that a real provider would announce by webhook
# (async cards, completed 3-D Secure). The webhook simulator plugs in here.
OutcomeListener = Callable[[str, Outcome], None]


class MockGateway:
    name = "mock"
    # Every currency of our table, any amount a BIGINT holds.
    capabilities = Capabilities(
        manual_capture=True,
        partial_capture=True,
        multiple_partial_refunds=True,
        async_outcomes=True,
        three_d_secure=True,
        cancel_after_authorization=True,
    )

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        delay_ms: int = 0,
        clock: Callable[[], datetime],
        hang_seconds: float = 3600.0,
    ) -> None:
        self._engine = engine
        self._delay = delay_ms / 1000
        self._now = clock
        self._hang = hang_seconds
        self.listeners: list[OutcomeListener] = []
        dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
        self._insert = (
            dialect.insert(_LEDGER)
            .on_conflict_do_nothing(index_elements=["idempotency_key"])
            .returning(_LEDGER.c.idempotency_key)
        )
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    # -- the ledger ----------------------------------------------------------------------------

    def _connect(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """Single statements run in autocommit on PostgreSQL: no BEGIN/COMMIT round trips.
        SQLite keeps its explicit (IMMEDIATE) transactions, which serialize its writers."""
        if self._engine.dialect.name == "postgresql":
            return self._autocommit.connect()
        return self._engine.begin()

    @_ledger_retry
    async def _recorded(self, idempotency_key: str) -> Outcome | None:
        async with self._connect() as conn:
            row = (await conn.execute(_RECORDED, {"b_key": idempotency_key})).first()
        return _result(row) if row else None

    @_ledger_retry
    async def _record(
        self, idempotency_key: str, operation: str, payment_id: str, result: Outcome
    ) -> tuple[Outcome, bool]:
        """Store the result under its key, unless a call with the same key stored one first:
        then that one is the answer (Stripe's idempotency). Returns whether it was new."""
        now = self._now()
        values = {
            "idempotency_key": idempotency_key,
            "operation": operation,
            "payment_id": payment_id,
            "provider_payment_id": result.provider_payment_id or "",
            "reference": result.reference or "",
            "status": result.status.value,
            "amount_minor": result.amount_minor,
            "currency": result.currency,
            "result": _dump(result),
            "created_at": now,
            "updated_at": now,
        }
        async with self._connect() as conn:
            inserted = (await conn.execute(self._insert, values)).first()
        if inserted is not None:
            return result, True
        recorded = await self._recorded(idempotency_key)
        assert recorded is not None
        return recorded, False

    @_ledger_retry
    async def _overwrite(self, idempotency_key: str, result: Outcome) -> None:
        ledger = t.mock_gateway_ledger
        async with self._engine.begin() as conn:
            await conn.execute(
                ledger.update()
                .where(ledger.c.idempotency_key == idempotency_key)
                .values(status=result.status.value, result=_dump(result), updated_at=self._now())
            )

    @_ledger_retry
    async def _by_payment(self, provider_payment_id: str, operation: str) -> Outcome | None:
        ledger = t.mock_gateway_ledger
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(ledger.c.result)
                    .where(
                        ledger.c.provider_payment_id == provider_payment_id,
                        ledger.c.operation == operation,
                    )
                    .order_by(ledger.c.created_at)
                )
            ).first()
        return _result(row) if row else None

    async def _latency(self) -> None:
        """`TILLPOINT_MOCK_DELAY_MS`: the latency of the *answer*. The effect is recorded first,
        as a slow real provider acts before its answer reaches us, so a process killed during
        the delay is a crash after the provider acted."""
        if self._delay:
            await asyncio.sleep(self._delay)

    # -- PaymentProvider ----------------------------------------------------------------------

    async def authorize(self, req: AuthorizeRequest, *, idempotency_key: str) -> Outcome:
        card = behaviour_of(req.payment_method.token, req.payment_method.last4)
        base: dict[str, Any] = {
            "provider_payment_id": _ref("mock_pi"),
            "amount_minor": req.amount.minor,
            "currency": req.amount.currency,
            "reference": _ref("mock_ch"),
        }
        success = ProviderStatus.CAPTURED if req.capture else ProviderStatus.AUTHORIZED
        match card.outcome:
            case "decline":
                result = Outcome(
                    status=ProviderStatus.FAILED,
                    failure_code=card.failure_code,
                    failure_message=card.message,
                    risk_score=90 if card.failure_code == "fraud_suspected" else 20,
                    **base,
                )
            case "three_d_secure":
                result = Outcome(
                    status=ProviderStatus.REQUIRES_ACTION,
                    next_action={
                        "type": "three_d_secure",
                        "complete_url": f"/api/v1/payments/{req.payment_id}/mock/complete",
                    },
                    **base,
                )
            case "async":
                result = Outcome(status=ProviderStatus.PROCESSING, **base)
            case _:
                result = Outcome(status=success, risk_score=10, **base)
        result, fresh = await self._record(idempotency_key, "authorize", req.payment_id, result)
        await self._latency()
        if not fresh:  # a retry: the first call's outcome stands, with no second effect
            return result
        if card.outcome == "async":
            # The async card settles by itself: the provider's truth is decided now and
            # announced later (webhook, or found by reconciliation).
            settled = Outcome(
                status=success,
                provider_payment_id=result.provider_payment_id,
                amount_minor=result.amount_minor,
                currency=result.currency,
                reference=result.reference,
                risk_score=10,
            )
            await self._overwrite(idempotency_key, settled)
            self._announce(idempotency_key, settled)
        if card.outcome == "timeout":
            await asyncio.sleep(self._hang)  # the charge is recorded; the answer never comes
        return result

    async def capture(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        auth = await self._by_payment(provider_payment_id, "authorize")
        if (
            auth is None
            or auth.status is not ProviderStatus.AUTHORIZED
            or (amount.minor > auth.amount_minor)
        ):
            result = Outcome(
                status=ProviderStatus.FAILED,
                provider_payment_id=provider_payment_id,
                amount_minor=amount.minor,
                currency=amount.currency,
                failure_code="capture_failed",
                failure_message="nothing capturable",
            )
        else:
            result = Outcome(
                status=ProviderStatus.CAPTURED,
                provider_payment_id=provider_payment_id,
                amount_minor=amount.minor,
                currency=amount.currency,
                reference=_ref("mock_ch"),
            )
        recorded, _ = await self._record(
            idempotency_key, "capture", _payment_of(idempotency_key), result
        )
        await self._latency()
        return recorded

    async def void(self, provider_payment_id: str, *, idempotency_key: str) -> Outcome:
        auth = await self._by_payment(provider_payment_id, "authorize")
        result = Outcome(
            status=ProviderStatus.CANCELED,
            provider_payment_id=provider_payment_id,
            amount_minor=auth.amount_minor if auth else 0,
            currency=auth.currency if auth else "USD",
            reference=_ref("mock_vo"),
        )
        recorded, _ = await self._record(
            idempotency_key, "void", _payment_of(idempotency_key), result
        )
        await self._latency()
        return recorded

    async def refund(
        self, provider_payment_id: str, amount: Money, *, idempotency_key: str
    ) -> Outcome:
        result = Outcome(
            status=ProviderStatus.REFUNDED,
            provider_payment_id=provider_payment_id,
            amount_minor=amount.minor,
            currency=amount.currency,
            reference=_ref("mock_re"),
        )
        recorded, _ = await self._record(
            idempotency_key, "refund", _payment_of(idempotency_key), result
        )
        await self._latency()
        return recorded

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        return await self._recorded(lookup.idempotency_key)

    async def client_secret(
        self, provider_payment_id: str, *, payment_id: str | None = None
    ) -> str | None:
        return None  # the mock's customer step is its own `complete` route

    def available(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None  # its ledger is the service's own database

    # -- MockControl ---------------------------------------------------------------------------

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
        previous = await self._recorded(idempotency_key)
        pi = previous.provider_payment_id if previous else _ref("mock_pi")
        if success:
            result = Outcome(
                status=ProviderStatus.CAPTURED if capture else ProviderStatus.AUTHORIZED,
                provider_payment_id=pi,
                amount_minor=amount.minor,
                currency=amount.currency,
                reference=_ref("mock_ch"),
                risk_score=10,
            )
        else:
            code = failure_code or "card_declined"
            result = Outcome(
                status=ProviderStatus.FAILED,
                provider_payment_id=pi,
                amount_minor=amount.minor,
                currency=amount.currency,
                failure_code=code,
                failure_message=FAILURE_MESSAGES.get(code, "The payment failed."),
            )
        if previous is None:
            result, _ = await self._record(idempotency_key, "authorize", payment_id, result)
        elif previous.status in (ProviderStatus.REQUIRES_ACTION, ProviderStatus.PROCESSING):
            await self._overwrite(idempotency_key, result)
            # A real provider also announces the completed challenge by webhook; it may well
            # arrive after the answer to this call (then it is a recorded no-op).
            self._announce(idempotency_key, result)
        else:
            result = previous  # already decided: the provider's first word stands
        await self._latency()
        return result

    def _announce(self, idempotency_key: str, result: Outcome) -> None:
        for listener in self.listeners:
            listener(idempotency_key, result)


def _payment_of(idempotency_key: str) -> str:
    return idempotency_key.split(":", 1)[0]


def _dump(result: Outcome) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "provider_payment_id": result.provider_payment_id,
        "amount_minor": result.amount_minor,
        "currency": result.currency,
        "reference": result.reference,
        "failure_code": result.failure_code,
        "failure_message": result.failure_message,
        "next_action": dict(result.next_action) if result.next_action else None,
        "risk_score": result.risk_score,
    }
