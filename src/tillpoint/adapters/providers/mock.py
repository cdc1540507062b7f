"""The mock gateway: a provider that needs no network and behaves like a real one.

Its outcome is chosen by the test card (API.md). It honours provider idempotency keys the way
Stripe does — the same key returns the recorded result and has no second effect — and keeps its
own ledger in the database, so it can later be asked for the truth (`get_transaction`), even
after our process died between its answer and our commit.

The ledger has one row per operation, by its idempotency key. A provider payment's whole view
(`payment`, `payments`) is its rows folded in order: the authorization (or sale), then its
captures, voids, refunds and disputes. Its dashboard (`dashboard`) is what a support agent does
in a real provider's console: it adds rows of the mock's own (keys `dashboard:…`) to a payment
the mock holds, never touching tillpoint's records, and tells tillpoint only when asked to (the
usual signed webhook, now or late).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from tillpoint.adapters.db import tables as t
from tillpoint.adapters.db.errors import is_unavailable
from tillpoint.domain.errors import InvalidStateTransition, NotFound, ValidationFailed
from tillpoint.domain.money import Money
from tillpoint.domain.payment import Outcome, ProviderStatus
from tillpoint.service.ports import (
    AuthorizeRequest,
    Capabilities,
    Lookup,
    ProviderDispute,
    ProviderPayment,
    ProviderRefund,
)


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


class OutcomeListener(Protocol):
    """Called after the mock decides an outcome that a real provider would announce by webhook
    (async cards, completed 3-D Secure, a dashboard action told now or `late`). The webhook
    simulator plugs in here."""

    def __call__(self, idempotency_key: str, result: Outcome, *, late: bool = False) -> None: ...


# -- the dashboard ---------------------------------------------------------------------------

DashboardAction = Literal["refund", "capture", "cancel", "dispute"]
Webhook = Literal["now", "late", "never"]
# The key prefix of the ledger rows the dashboard writes: operations tillpoint never sent.
DASHBOARD_PREFIX: Final = "dashboard:"
# How long the merchant has to answer a dispute the dashboard opens (Stripe gives 7 to 21 days).
EVIDENCE_WINDOW: Final = timedelta(days=7)
DEFAULT_DISPUTE_REASON: Final = "fraudulent"
DISPUTE_OPENED: Final = "needs_response"
# The ledger's `payment_id` of a payment created without tillpoint (another integration).
NO_PAYMENT: Final = ""
_OPERATIONS: Final[Mapping[DashboardAction, str]] = {
    "refund": "refund",
    "capture": "capture",
    "cancel": "void",
    "dispute": "dispute",
}
# What a void may release (a void of a payment already canceled answers canceled again).
_CANCELABLE: Final = frozenset(
    {
        ProviderStatus.AUTHORIZED,
        ProviderStatus.REQUIRES_ACTION,
        ProviderStatus.PROCESSING,
        ProviderStatus.CANCELED,
    }
)
# How many payments `payments()` reads per page of the ledger.
PAGE_SIZE: Final = 100


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
        lists_payments=True,
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
        self._insert_or_keep = (
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

    async def _record(
        self, idempotency_key: str, operation: str, payment_id: str, result: Outcome
    ) -> tuple[Outcome, bool]:
        """Store the result under its key, unless a call with the same key stored one first:
        then that one is the answer (Stripe's idempotency). Returns whether it was new."""
        if await self._insert(self._values(idempotency_key, operation, payment_id, result)):
            return result, True
        recorded = await self._recorded(idempotency_key)
        assert recorded is not None
        return recorded, False

    def _values(
        self, idempotency_key: str, operation: str, payment_id: str, result: Outcome
    ) -> dict[str, Any]:
        now = self._now()
        return {
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

    @_ledger_retry
    async def _insert(self, values: Mapping[str, Any]) -> bool:
        """Insert the row unless its key has one: whether it was inserted."""
        async with self._connect() as conn:
            inserted = (await conn.execute(self._insert_or_keep, dict(values))).first()
        return inserted is not None

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
        # What the mock holds now, its dashboard's captures and cancels included.
        view = await self._view(provider_payment_id)
        if (
            view is None
            or view.status is not ProviderStatus.AUTHORIZED
            or amount.minor > view.authorized_minor
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
        view = await self._view(provider_payment_id)
        result = Outcome(
            status=ProviderStatus.CANCELED,
            provider_payment_id=provider_payment_id,
            amount_minor=auth.amount_minor if auth else 0,
            currency=auth.currency if auth else "USD",
            reference=_ref("mock_vo"),
        )
        if view is not None and view.status not in _CANCELABLE:
            # Captured meanwhile (in its dashboard): there is no hold left to release.
            result = replace(
                result,
                status=ProviderStatus.FAILED,
                reference=None,
                failure_code="void_failed",
                failure_message=f"the payment is {view.status.value}: nothing to cancel",
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
        view = await self._view(provider_payment_id)
        left = view.captured_minor - view.refunded_minor if view is not None else 0
        if view is None or view.status is not ProviderStatus.CAPTURED or amount.minor > left:
            # Refunded (or never captured) meanwhile, in its dashboard: a provider refuses it.
            result = replace(
                result,
                status=ProviderStatus.FAILED,
                failure_code="refund_failed",
                failure_message=f"the mock has {left} minor units of this payment to refund",
            )
        recorded, _ = await self._record(
            idempotency_key, "refund", _payment_of(idempotency_key), result
        )
        await self._latency()
        return recorded

    async def get_transaction(self, lookup: Lookup) -> Outcome | None:
        return await self._recorded(lookup.idempotency_key)

    async def payment(self, provider_payment_id: str) -> ProviderPayment | None:
        """The payment's whole view, answered after the mock's latency like any answer."""
        view = await self._view(provider_payment_id)
        await self._latency()
        return view

    async def _view(self, provider_payment_id: str) -> ProviderPayment | None:
        """The payment's ledger rows folded into its whole view (`_fold`)."""
        return _fold(await self._rows_of([provider_payment_id]))

    async def payments(
        self, created_from: datetime, created_to: datetime
    ) -> AsyncIterator[ProviderPayment]:
        """Every payment whose authorization (or sale) the mock recorded in
        [created_from, created_to), oldest first, `PAGE_SIZE` at a time."""
        after: tuple[datetime, str] | None = None
        while True:
            page = await self._created(created_from, created_to, after)
            rows = await self._rows_of([r.provider_payment_id for r in page]) if page else []
            for found in page:
                view = _fold(
                    [r for r in rows if r.provider_payment_id == found.provider_payment_id]
                )
                if view is not None:
                    yield view
            if len(page) < PAGE_SIZE:
                return
            after = (page[-1].created_at, page[-1].provider_payment_id)

    @_ledger_retry
    async def _rows_of(self, provider_payment_ids: Sequence[str]) -> list[Any]:
        async with self._connect() as conn:
            result = await conn.execute(
                sa.select(_LEDGER).where(_LEDGER.c.provider_payment_id.in_(provider_payment_ids))
            )
            return list(result.all())

    @_ledger_retry
    async def _created(
        self, created_from: datetime, created_to: datetime, after: tuple[datetime, str] | None
    ) -> list[Any]:
        """One page of authorizations created in the window, after the keyset `after`."""
        c = _LEDGER.c
        query = sa.select(c.provider_payment_id, c.created_at).where(
            c.operation == "authorize",
            c.provider_payment_id != "",
            c.created_at >= created_from,
            c.created_at < created_to,
        )
        if after is not None:
            query = query.where(
                sa.or_(
                    c.created_at > after[0],
                    sa.and_(c.created_at == after[0], c.provider_payment_id > after[1]),
                )
            )
        query = query.order_by(c.created_at, c.provider_payment_id).limit(PAGE_SIZE)
        async with self._connect() as conn:
            return list((await conn.execute(query)).all())

    # -- the dashboard (a provider's own console) -------------------------------------------

    async def dashboard(
        self,
        provider_payment_id: str,
        action: DashboardAction,
        *,
        key: str,
        amount: str | None = None,
        reason: str | None = None,
        webhook: Webhook = "now",
    ) -> ProviderPayment:
        """What a support agent does in the mock's dashboard to one of its payments: refund it
        (fully or partly), capture or cancel a held payment, or open a dispute on it. It acts on
        the mock's own ledger only — a row under `dashboard:<key>`, so the same `key` acts once —
        and tillpoint hears of it only by the usual signed webhook when `webhook` is `now` (the
        default, as API.md has it) or `late`; `never` is the lost webhook. Returns the
        payment's view afterwards.

        Refuses, before recording anything: an unknown payment (`NotFound`), an action its state
        does not allow or an amount beyond what it allows (`InvalidStateTransition`), an amount
        that is not one in the payment's currency (`ValidationFailed`)."""
        view = await self._view(provider_payment_id)
        if view is None:
            raise NotFound(f"the mock has no payment {provider_payment_id!r}")
        money = _amount(amount, view.currency)
        idempotency_key = f"{DASHBOARD_PREFIX}{key}"
        operation = _OPERATIONS[action]
        recorded = await self._recorded_row(idempotency_key)
        if recorded is None:
            result = _dashboard_result(view, action, money)
            values = self._values(idempotency_key, operation, view.payment_id or NO_PAYMENT, result)
            values["result"] = {**values["result"], "reason": reason}
            if action == "dispute":
                due = self._now() + EVIDENCE_WINDOW
                values["status"] = DISPUTE_OPENED
                values["result"] = {
                    **values["result"],
                    "status": DISPUTE_OPENED,
                    "reason": reason or DEFAULT_DISPUTE_REASON,
                    "evidence_due_by": due.isoformat(),
                }
            fresh = await self._insert(values)
            if fresh and webhook != "never":
                if action == "dispute":  # announced as the dispute it opened
                    result = replace(
                        result,
                        status=ProviderStatus.DISPUTED,
                        failure_code=values["result"]["reason"],
                    )
                self._announce(idempotency_key, result, late=webhook == "late")
        elif (recorded.operation, recorded.provider_payment_id) != (operation, provider_payment_id):
            raise ValidationFailed("key", "this dashboard key was used for another action")
        found = await self._view(provider_payment_id)
        assert found is not None
        return found

    @_ledger_retry
    async def _recorded_row(self, idempotency_key: str) -> Any | None:
        async with self._connect() as conn:
            return (
                await conn.execute(
                    sa.select(_LEDGER.c.operation, _LEDGER.c.provider_payment_id).where(
                        _LEDGER.c.idempotency_key == idempotency_key
                    )
                )
            ).first()

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

    def _announce(self, idempotency_key: str, result: Outcome, *, late: bool = False) -> None:
        for listener in self.listeners:
            listener(idempotency_key, result, late=late)


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


# -- a payment's whole view ------------------------------------------------------------------


def _fold(rows: Sequence[Any]) -> ProviderPayment | None:
    """A provider payment's ledger rows as its view, applied in the order they were recorded:

    * the authorization (or sale) sets the status and `amount_minor`: AUTHORIZED holds it
      (`authorized_minor`), CAPTURED takes it (`captured_minor`), anything else neither;
    * a successful capture of a held payment takes its amount and releases the rest of the hold;
    * a void (CANCELED) of a payment not captured releases the hold;
    * each refund is listed (`idempotency_key` None for a dashboard's), the succeeded ones
      summed (`refunded_minor`); a captured payment refunded in full is REFUNDED;
    * each dispute is listed.

    A payment whose authorization the mock never recorded is None."""
    ordered = sorted(rows, key=lambda r: (r.created_at, r.idempotency_key))
    auth = next((r for r in ordered if r.operation == "authorize"), None)
    if auth is None:
        return None
    status = ProviderStatus(auth.status)
    authorized = auth.amount_minor if status is ProviderStatus.AUTHORIZED else 0
    captured = auth.amount_minor if status is ProviderStatus.CAPTURED else 0
    refunded = 0
    refunds: list[ProviderRefund] = []
    disputes: list[ProviderDispute] = []
    held = (ProviderStatus.AUTHORIZED, ProviderStatus.REQUIRES_ACTION, ProviderStatus.PROCESSING)
    for row in ordered:
        if row is auth:
            continue
        ours = None if row.idempotency_key.startswith(DASHBOARD_PREFIX) else row.idempotency_key
        match row.operation:
            case "capture":
                if row.status == "CAPTURED" and status is ProviderStatus.AUTHORIZED:
                    status, captured, authorized = ProviderStatus.CAPTURED, row.amount_minor, 0
            case "void":
                if row.status == "CANCELED" and status in held:
                    status, authorized = ProviderStatus.CANCELED, 0
            case "refund":
                state = ProviderStatus(row.status)
                refunds.append(
                    ProviderRefund(row.reference, row.amount_minor, state, ours, row.created_at)
                )
                if state is ProviderStatus.REFUNDED:
                    refunded += row.amount_minor
            case "dispute":
                data = dict(row.result)
                due = data.get("evidence_due_by")
                disputes.append(
                    ProviderDispute(
                        reference=row.reference,
                        amount_minor=row.amount_minor,
                        reason=str(data.get("reason") or DEFAULT_DISPUTE_REASON),
                        status=row.status,
                        evidence_due_by=datetime.fromisoformat(due) if due else None,
                    )
                )
    if status is ProviderStatus.CAPTURED and captured and refunded >= captured:
        status = ProviderStatus.REFUNDED
    return ProviderPayment(
        provider_payment_id=auth.provider_payment_id,
        status=status,
        currency=auth.currency,
        amount_minor=auth.amount_minor,
        authorized_minor=authorized,
        captured_minor=captured,
        refunded_minor=refunded,
        created_at=auth.created_at,
        payment_id=auth.payment_id or None,
        refunds=tuple(refunds),
        disputes=tuple(disputes),
    )


def _amount(amount: str | None, currency: str) -> Money | None:
    """The dashboard's amount (major units, as in the API) in the payment's currency; a
    malformed one, zero or negative is `ValidationFailed` ("amount")."""
    return None if amount is None else Money.parse(amount, currency)


def _dashboard_result(
    view: ProviderPayment, action: DashboardAction, amount: Money | None
) -> Outcome:
    """The row a dashboard action records, or the refusal of an action the payment's state or
    amounts do not allow (as a provider's console refuses it)."""
    refundable = view.captured_minor - view.refunded_minor
    base: dict[str, Any] = {
        "provider_payment_id": view.provider_payment_id,
        "currency": view.currency,
    }

    def refuse(detail: str) -> InvalidStateTransition:
        return InvalidStateTransition(
            f"the mock cannot {action} payment {view.provider_payment_id} "
            f"({view.status.value}): {detail}"
        )

    match action:
        case "refund":
            if view.status is not ProviderStatus.CAPTURED or refundable <= 0:
                raise refuse("only a captured payment with money left to refund can be refunded")
            minor = amount.minor if amount is not None else refundable
            if minor > refundable:
                raise refuse(f"the amount is more than the {refundable} minor units refundable")
            return Outcome(
                status=ProviderStatus.REFUNDED,
                amount_minor=minor,
                reference=_ref("mock_re"),
                **base,
            )
        case "capture":
            if view.status is not ProviderStatus.AUTHORIZED:
                raise refuse("only a held (authorized) payment can be captured")
            minor = amount.minor if amount is not None else view.authorized_minor
            if minor > view.authorized_minor:
                raise refuse(f"the amount is more than the {view.authorized_minor} held")
            return Outcome(
                status=ProviderStatus.CAPTURED,
                amount_minor=minor,
                reference=_ref("mock_ch"),
                **base,
            )
        case "cancel":
            if amount is not None:
                raise ValidationFailed("amount", "a cancel releases the whole hold: no amount")
            if view.status not in (ProviderStatus.AUTHORIZED, ProviderStatus.REQUIRES_ACTION):
                raise refuse("only a payment not yet captured can be canceled")
            return Outcome(
                status=ProviderStatus.CANCELED,
                amount_minor=view.amount_minor,
                reference=_ref("mock_vo"),
                **base,
            )
        case "dispute":
            if view.status is not ProviderStatus.CAPTURED or refundable <= 0:
                raise refuse("only a captured payment with money not refunded can be disputed")
            minor = amount.minor if amount is not None else refundable
            if minor > refundable:
                raise refuse(f"the amount is more than the {refundable} minor units not refunded")
            return Outcome(
                # Recorded with the dispute's own status (`DISPUTE_OPENED`) in place of this
                # one: `_fold` reads dispute rows apart, and no key of tillpoint's names them.
                status=ProviderStatus.CAPTURED,
                amount_minor=minor,
                reference=_ref("mock_dp"),
                **base,
            )
