"""`Payment.apply`, the one rule "what the provider says → where the payment stands", as a
table: for each kind of open operation (or none: a signal no operation waits for) and each
status a provider can report, and for each reason a call can go unanswered, the payment's
status, the operation's status and the events recorded.

The rows describe the rule as it is; a row that changes is a change of the product's
behaviour, to be made on purpose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests.unit.domain.support import (
    NOW,
    RECHECK,
    apply,
    authorized,
    captured,
    new_payment,
    says,
)
from tillpoint.domain.money import Money
from tillpoint.domain.payment import (
    NoAnswer,
    Operation,
    OperationKind,
    OperationStatus,
    Payment,
    PaymentStatus,
    ProviderStatus,
    Refund,
    RefundStatus,
    Silence,
)
from tillpoint.domain.payment import events as ev

S = PaymentStatus
P = ProviderStatus
K = OperationKind
OPEN, DONE, FAIL, LOST = (
    OperationStatus.PENDING,
    OperationStatus.SUCCEEDED,
    OperationStatus.FAILED,
    OperationStatus.UNKNOWN,
)
CONFIRMED = "PROVIDER_CONFIRMED"
ACTION = "ACTION_REQUIRED"
AUTHORIZED = "AUTHORIZATION_SUCCEEDED"
CAPTURED = "CAPTURE_SUCCEEDED"
DECLINED = "AUTHORIZATION_FAILED"
VOIDED = "VOIDED"
CAPTURE_FAILED = "CAPTURE_FAILED"
REFUNDED = "REFUND_SUCCEEDED"
REFUND_FAILED = "REFUND_FAILED"
STALE = "STALE_SIGNAL_IGNORED"


@dataclass(frozen=True, slots=True)
class Start:
    """A payment with the operation an outcome is about (None: a signal about the payment)."""

    payment: Payment
    op: Operation | None
    refund: Refund | None = None


def _sent(payment: Payment, op: Operation, refund: Refund | None = None) -> Start:
    op.send(NOW, check_by=NOW + RECHECK / 2)  # phase 1: with the provider, checked by then
    payment.take_events()
    return Start(payment, op, refund)


def sale() -> Start:
    payment = new_payment()
    return _sent(payment, payment.begin_confirmation(NOW, None))


def authorization() -> Start:
    payment = new_payment(manual=True)
    return _sent(payment, payment.begin_confirmation(NOW, None))


def capture() -> Start:
    payment = authorized()
    return _sent(payment, payment.begin_capture(None, NOW))


def void() -> Start:
    payment = authorized()
    return _sent(payment, payment.begin_void(NOW, reason="customer_request"))


def refund() -> Start:
    payment = captured()
    refund, op = payment.begin_refund(None, "returned", NOW)
    return _sent(payment, op, refund)


def signal_to(make: Callable[[], Payment]) -> Callable[[], Start]:
    def start() -> Start:
        payment = make()
        payment.take_events()
        return Start(payment, None)

    start.__name__ = f"signal_to_{make.__name__}"
    return start


SETUPS: dict[str, Callable[[], Start]] = {
    "sale": sale,
    "authorize": authorization,
    "capture": capture,
    "void": void,
    "refund": refund,
    "signal_to_initiated": signal_to(new_payment),
    "signal_to_authorized": signal_to(authorized),
    "signal_to_captured": signal_to(captured),
}

Row = tuple[PaymentStatus, OperationStatus | None, list[str]]
# A SALE and an AUTHORIZE answer the same way: the provider's status says where the payment is.
_CONFIRMATION: dict[ProviderStatus, Row] = {
    P.PROCESSING: (S.PROCESSING, OPEN, [CONFIRMED]),
    P.REQUIRES_ACTION: (S.REQUIRES_ACTION, OPEN, [ACTION]),
    P.AUTHORIZED: (S.AUTHORIZED, DONE, [AUTHORIZED]),
    P.CAPTURED: (S.CAPTURED, DONE, [CONFIRMED, CAPTURED]),
    P.FAILED: (S.FAILED, FAIL, [DECLINED]),
    P.CANCELED: (S.CANCELED, FAIL, [VOIDED]),
    P.REFUNDED: (S.CAPTURED, DONE, [CONFIRMED, CAPTURED]),  # captured, then refunded there
    P.DISPUTED: (S.INITIATED, OPEN, []),  # a chargeback moves nothing
}
_REFUND_STILL_OPEN: Row = (S.CAPTURED, OPEN, [])
_SIGNAL_TO_CAPTURED: dict[ProviderStatus, Row] = {
    status: (S.CAPTURED, None, [STALE]) for status in P
}
_SIGNAL_TO_CAPTURED[P.DISPUTED] = (S.CAPTURED, None, [])

TABLE: dict[str, dict[ProviderStatus, Row]] = {
    "sale": _CONFIRMATION,
    "authorize": _CONFIRMATION,
    "capture": {
        P.PROCESSING: (S.AUTHORIZED, OPEN, [STALE]),
        P.REQUIRES_ACTION: (S.AUTHORIZED, OPEN, [STALE]),
        # The provider still holds the authorization: nothing was captured yet, so the capture
        # stays open and is asked about again (never settled by guess).
        P.AUTHORIZED: (S.AUTHORIZED, OPEN, []),
        P.CAPTURED: (S.CAPTURED, DONE, [CAPTURED]),
        P.FAILED: (S.AUTHORIZED, FAIL, [CAPTURE_FAILED]),
        P.CANCELED: (S.CANCELED, FAIL, [VOIDED]),  # the hold is gone at the provider
        P.REFUNDED: (S.CAPTURED, DONE, [CAPTURED]),
        P.DISPUTED: (S.AUTHORIZED, OPEN, []),
    },
    "void": {
        P.PROCESSING: (S.AUTHORIZED, OPEN, [STALE]),
        P.REQUIRES_ACTION: (S.AUTHORIZED, OPEN, [STALE]),
        # As for a capture: the void has not happened yet and is asked about again.
        P.AUTHORIZED: (S.AUTHORIZED, OPEN, []),
        # Captured before the void arrived: the payment follows the money, and the void
        # failed.
        P.CAPTURED: (S.CAPTURED, FAIL, [CAPTURED]),
        P.FAILED: (S.AUTHORIZED, FAIL, []),
        P.CANCELED: (S.CANCELED, DONE, [VOIDED]),
        P.REFUNDED: (S.CAPTURED, FAIL, [CAPTURED]),
        P.DISPUTED: (S.AUTHORIZED, OPEN, []),
    },
    "refund": {
        P.PROCESSING: _REFUND_STILL_OPEN,
        P.REQUIRES_ACTION: _REFUND_STILL_OPEN,
        P.AUTHORIZED: _REFUND_STILL_OPEN,
        P.CAPTURED: _REFUND_STILL_OPEN,
        P.FAILED: (S.CAPTURED, FAIL, [REFUND_FAILED]),
        P.CANCELED: _REFUND_STILL_OPEN,
        P.REFUNDED: (S.REFUNDED, DONE, [REFUNDED]),
        P.DISPUTED: _REFUND_STILL_OPEN,
    },
    "signal_to_initiated": {
        **{status: (after, None, events) for status, (after, _, events) in _CONFIRMATION.items()},
        # Money back with no refund of ours waiting: nothing to settle, nothing moves.
        P.REFUNDED: (S.INITIATED, None, [STALE]),
    },
    "signal_to_authorized": {
        P.PROCESSING: (S.AUTHORIZED, None, [STALE]),
        P.REQUIRES_ACTION: (S.AUTHORIZED, None, [STALE]),
        P.AUTHORIZED: (S.AUTHORIZED, None, [STALE]),
        P.CAPTURED: (S.CAPTURED, None, [CAPTURED]),
        P.FAILED: (S.AUTHORIZED, None, [STALE]),
        P.CANCELED: (S.CANCELED, None, [VOIDED]),
        P.REFUNDED: (S.AUTHORIZED, None, [STALE]),
        P.DISPUTED: (S.AUTHORIZED, None, []),
    },
    "signal_to_captured": _SIGNAL_TO_CAPTURED,
}
CASES = [
    pytest.param(setup, status, *row, id=f"{setup}-{status.value.lower()}")
    for setup, rows in TABLE.items()
    for status, row in rows.items()
]


def test_the_table_covers_every_provider_status() -> None:
    assert all(set(rows) == set(P) for rows in TABLE.values())


@pytest.mark.parametrize(("setup", "status", "after", "op_after", "events"), CASES)
def test_an_answer_moves_the_payment_by_the_table(
    setup: str,
    status: ProviderStatus,
    after: PaymentStatus,
    op_after: OperationStatus | None,
    events: list[str],
) -> None:
    start = SETUPS[setup]()
    payment, op, refund = start.payment, start.op, start.refund
    before, sequence = payment.status, payment.sequence
    check_by = op.next_check_at if op is not None else None
    outcome = says(
        status,
        payment,
        failure_code="declined" if status is P.FAILED else None,
        reference="ref_1",
        next_action={"type": "three_d_secure"} if status is P.REQUIRES_ACTION else None,
    )

    change = apply(payment, outcome, op, refund=refund, transaction_id="txn_signal")

    recorded = payment.take_events()
    assert (payment.status, [e.type for e in recorded]) == (after, events)
    assert (change.before, change.after) == (before, after)
    published = [e for e in recorded if isinstance(e, ev.Published)]
    assert [e.sequence for e in published] == list(range(sequence + 1, payment.sequence + 1))
    assert change.moved is (after is not before or REFUNDED in events)
    if op is None:
        return
    assert op.status is op_after
    if op.open:  # asked about again later; a chargeback leaves the operation as it was
        untouched = status is P.DISPUTED and op.kind is not K.REFUND
        expected = check_by if untouched else NOW + RECHECK
        assert op.next_check_at == expected
    else:
        assert op.next_check_at is None
    if op_after is DONE:
        assert op.provider_reference == "ref_1"
    for event in recorded:
        if isinstance(event, ev.PaymentCaptured):
            assert event.amount == payment.amount
            # The ledger row the money belongs to; never a void's (it did not take the money).
            expected_row = "txn_signal" if op.kind is K.VOID else op.id
            assert event.transaction_id == expected_row
    payment.check_invariants()


def test_a_capture_no_operation_waits_for_names_the_given_ledger_row() -> None:
    payment = authorized()
    apply(payment, says(P.CAPTURED, payment), None, transaction_id="txn_signal")
    [event] = payment.take_events()
    assert isinstance(event, ev.PaymentCaptured)
    assert (event.transaction_id, event.source) == ("txn_signal", "test")


def test_a_capture_overtaking_its_authorization_implies_it() -> None:
    payment = new_payment(manual=True)
    op = payment.begin_confirmation(NOW, None)
    payment.take_events()
    apply(payment, says(P.CAPTURED, payment), op)
    assert (payment.authorized_minor, payment.captured_minor) == (10_000, 10_000)
    confirmed, captured_ = payment.take_events()
    assert isinstance(confirmed, ev.ProviderConfirmed)
    assert confirmed.status is S.CAPTURED
    assert isinstance(captured_, ev.PaymentCaptured)


def test_a_partial_capture_keeps_what_was_authorized() -> None:
    payment = authorized()
    op = payment.begin_capture(Money(4_000, "USD"), NOW)
    apply(payment, says(P.CAPTURED, payment, 4_000), op)
    assert (payment.authorized_minor, payment.captured_minor) == (10_000, 4_000)
    assert payment.refundable == Money(4_000, "USD")


def test_a_void_publishes_the_clients_reason() -> None:
    start = void()
    apply(start.payment, says(P.CANCELED, start.payment), start.op)
    [event] = start.payment.take_events()
    assert isinstance(event, ev.PaymentCanceled)
    assert event.reason == "customer_request"


def test_a_refund_answer_keeps_the_providers_refund_id() -> None:
    start = refund()
    payment, op, refund_ = start.payment, start.op, start.refund
    assert refund_ is not None
    apply(payment, says(P.REFUNDED, payment, reference="re_1"), op, refund=refund_)
    assert (refund_.status, refund_.provider_refund_id) == (RefundStatus.SUCCEEDED, "re_1")
    assert refund_.processed_at == NOW


def test_a_partial_refund_moves_money_and_is_a_change_even_without_a_new_status() -> None:
    payment = captured()
    changes = []
    for _ in range(2):
        refund_, op = payment.begin_refund(Money(2_500, "USD"), None, NOW)
        changes.append(apply(payment, says(P.REFUNDED, payment, 2_500), op, refund=refund_))
    first, second = changes
    assert (first.before, first.after) == (S.CAPTURED, S.PARTIALLY_REFUNDED)
    assert (second.before, second.after) == (S.PARTIALLY_REFUNDED, S.PARTIALLY_REFUNDED)
    assert second.refunded
    assert second.moved
    assert (payment.refunded_minor, payment.refund_pending_minor) == (5_000, 0)


def test_a_decline_without_a_code_is_a_card_decline() -> None:
    start = sale()
    apply(start.payment, says(P.FAILED, start.payment), start.op)
    assert start.payment.failure_code == "card_declined"


def test_a_first_answer_names_the_providers_payment() -> None:
    start = sale()
    apply(start.payment, says(P.REQUIRES_ACTION, start.payment, next_action={"url": "x"}), start.op)
    assert start.payment.provider_payment_id == "pi_1"
    assert start.payment.next_action == {"url": "x"}


# -- no answer -----------------------------------------------------------------------------------

SilenceRow = tuple[PaymentStatus, OperationStatus, str | None, list[str]]
_KEPT = {"capture": S.AUTHORIZED, "void": S.AUTHORIZED}
SILENCE: dict[str, dict[Silence, SilenceRow]] = {
    **{
        kind: {
            # It may have acted: unknown until the provider is asked; the payment is in progress.
            Silence.TIMEOUT: (S.PROCESSING, LOST, None, [CONFIRMED]),
            # Not reached, or the call itself refused: nothing happened, it can be sent again.
            Silence.UNREACHABLE: (S.INITIATED, FAIL, "provider_unavailable", []),
            Silence.ERROR: (S.INITIATED, FAIL, "provider_error", []),
            # Asked later, the provider never saw it: the payment failed.
            Silence.NOT_FOUND: (S.FAILED, FAIL, "not_found", [DECLINED]),
        }
        for kind in ("sale", "authorize")
    },
    **{
        kind: {
            Silence.TIMEOUT: (kept, LOST, None, []),
            Silence.UNREACHABLE: (kept, FAIL, "provider_unavailable", []),
            Silence.ERROR: (kept, FAIL, "provider_error", []),
            Silence.NOT_FOUND: (kept, FAIL, "not_found", []),
        }
        for kind, kept in _KEPT.items()
    },
    "refund": {
        Silence.TIMEOUT: (S.CAPTURED, LOST, None, []),
        Silence.UNREACHABLE: (S.CAPTURED, FAIL, "provider_unavailable", [REFUND_FAILED]),
        Silence.ERROR: (S.CAPTURED, FAIL, "provider_error", [REFUND_FAILED]),
        Silence.NOT_FOUND: (S.CAPTURED, FAIL, "not_found", [REFUND_FAILED]),
    },
}
SILENCE_CASES = [
    pytest.param(setup, reason, *row, id=f"{setup}-{reason.name.lower()}")
    for setup, rows in SILENCE.items()
    for reason, row in rows.items()
]


def test_the_silence_table_covers_every_reason() -> None:
    assert all(set(rows) == set(Silence) for rows in SILENCE.values())


@pytest.mark.parametrize(("setup", "reason", "after", "op_after", "code", "events"), SILENCE_CASES)
def test_no_answer_moves_the_payment_by_the_table(
    setup: str,
    reason: Silence,
    after: PaymentStatus,
    op_after: OperationStatus,
    code: str | None,
    events: list[str],
) -> None:
    start = SETUPS[setup]()
    payment, op, refund_ = start.payment, start.op, start.refund
    assert op is not None
    pending = payment.refund_pending_minor

    change = apply(payment, NoAnswer(reason, "no answer"), op, refund=refund_)

    recorded = payment.take_events()
    assert (payment.status, [e.type for e in recorded]) == (after, events)
    assert (op.status, op.error_code) == (op_after, code)
    assert change.after is after
    if op.open:
        assert op.next_check_at == NOW + RECHECK
        assert op.error_message == "no answer"
    if reason is Silence.NOT_FOUND and op.kind in (K.SALE, K.AUTHORIZE):
        assert payment.failure_code == Silence.TIMEOUT.value  # published as `TIMEOUT`
    if refund_ is not None:
        still_pending = op_after is LOST
        assert refund_.status is (RefundStatus.PENDING if still_pending else RefundStatus.FAILED)
        assert payment.refund_pending_minor == (pending if still_pending else 0)
    if reason is Silence.TIMEOUT and op.kind in (K.SALE, K.AUTHORIZE):
        [confirmed] = recorded
        assert isinstance(confirmed, ev.ProviderConfirmed)
        assert confirmed.reason == "provider_timeout"
    payment.check_invariants()


@pytest.mark.parametrize("status", [P.FAILED, P.CANCELED, P.AUTHORIZED])
def test_an_answer_about_a_settled_operation_changes_nothing(status: ProviderStatus) -> None:
    """A late or repeated answer (a webhook after our own call settled the sale) leaves the
    operation as it ended and the payment where it is, and says so in the audit trail."""
    payment = new_payment()
    op = payment.begin_confirmation(NOW, None)
    apply(payment, says(P.CAPTURED, payment), op)
    payment.take_events()
    change = apply(payment, says(status, payment), op)
    assert (op.status, payment.status, change.moved) == (DONE, S.CAPTURED, False)
    [event] = payment.take_events()
    assert isinstance(event, ev.StaleSignalIgnored)
    assert event.signal == f"sale:{status.value.lower()}"
