"""Reconciliation: compare our payments of a window with the provider's view of them, heal what
can safely move forward, flag what a person must look at.

A run walks our payments created in its window, provider by provider:

1. Open operations of the payment (a lost webhook, a timed-out call) are settled by asking the
   provider, as the janitor does; a payment that moved is a healed `status_mismatch`.
2. The provider's whole view of the payment (`PaymentProvider.payment`) is compared with ours.
   Forward moves the provider made on its own — a capture or a cancel of a held payment, a
   refund issued in its dashboard, a chargeback — are healed through the payment's one outcome
   rule (`Payment.apply`), as a new operation of ours marked as found at the provider, with a
   `RECONCILED` event carrying the evidence. Anything else (money that moved backwards, amounts
   that cannot be explained, a payment the provider does not know) is flagged, never changed.
3. Where the provider can list its payments, the ones of the window we do not know are flagged
   `missing_locally`.

A discrepancy's fingerprint names the difference, so a second run over the same window records
nothing new, and what was healed is no longer different. Each heal commits with its own
discrepancy row, so a run killed midway leaves nothing half done; the worker marks a run whose
heartbeat stopped FAILED, and the next run covers the window again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog

from tillpoint.domain.errors import DomainError, NotFound
from tillpoint.domain.ids import new_id
from tillpoint.domain.money import Money
from tillpoint.domain.order import ChangeContext
from tillpoint.domain.payment import (
    Operation,
    OperationKind,
    Outcome,
    Payment,
    PaymentStatus,
    ProviderStatus,
    RefundStatus,
)
from tillpoint.domain.reconciliation import Action, Discrepancy, Kind, Run, RunStatus
from tillpoint.service.context import Deps
from tillpoint.service.disputes import apply_dispute
from tillpoint.service.exports import Record
from tillpoint.service.janitor import in_flight, resolve_operation
from tillpoint.service.outcomes import apply_outcome
from tillpoint.service.ports import (
    DiscrepancyFilter,
    PaymentFilter,
    PaymentProvider,
    ProviderDispute,
    ProviderError,
    ProviderPayment,
    ProviderTimeout,
    ProviderUnavailable,
    UnitOfWork,
)

log = structlog.get_logger("tillpoint.reconciliation")

RECONCILIATION = ChangeContext(source="reconciliation", actor="reconciliation")
PAGE = 100
P, S = ProviderStatus, PaymentStatus
HELD = frozenset({S.AUTHORIZED})
WAITING = frozenset({S.PROCESSING, S.REQUIRES_ACTION})  # the outcome comes by webhook
SETTLED = frozenset({P.AUTHORIZED, P.CAPTURED, P.REFUNDED, P.FAILED, P.CANCELED})
CAPTURED = frozenset({S.CAPTURED, S.PARTIALLY_REFUNDED, S.REFUNDED})
# Where the provider's status should stand for each of ours (a partly refunded payment is still
# CAPTURED at the provider, with refunds).
EXPECTED: dict[PaymentStatus, frozenset[ProviderStatus]] = {
    S.PROCESSING: frozenset({P.PROCESSING}),
    S.REQUIRES_ACTION: frozenset({P.REQUIRES_ACTION}),
    S.AUTHORIZED: frozenset({P.AUTHORIZED}),
    S.CAPTURED: frozenset({P.CAPTURED, P.REFUNDED}),  # refunds are compared one by one
    S.PARTIALLY_REFUNDED: frozenset({P.CAPTURED, P.REFUNDED}),
    S.REFUNDED: frozenset({P.REFUNDED}),
    S.FAILED: frozenset({P.FAILED, P.CANCELED, P.REQUIRES_ACTION}),
    S.CANCELED: frozenset({P.CANCELED, P.FAILED}),
}


# -- starting, listing and ending runs -----------------------------------------------------


async def start_run(
    *,
    deps: Deps,
    provider: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    slot: str | None = None,
) -> Run | None:
    """Record a RUNNING run over [created_from, created_to) (by default the configured window
    up to now); `run` then does the work. None when `slot` already has its run."""
    if provider is not None and provider not in deps.providers:
        raise NotFound(f"provider {provider!r} is not configured")
    now = deps.clock.now()
    window_to = created_to or now
    window_from = created_from or window_to - deps.config.reconcile_window
    run = Run(
        run_id=new_id("recon"),
        status=RunStatus.RUNNING,
        provider=provider,
        window_from=window_from,
        window_to=window_to,
        started_at=now,
        heartbeat_at=now,
        slot=slot,
    )
    async with deps.uow() as uow:
        if not await uow.reconciliations.add(run):
            return None
        await uow.commit()
    log.info("reconciliation.started", run_id=run.run_id, provider=provider, slot=slot)
    return run


async def get_run(run_id: str, *, deps: Deps) -> Run:
    async with deps.uow() as uow:
        run = await uow.reconciliations.get(run_id)
    if run is None:
        raise NotFound(f"reconciliation run {run_id} not found")
    return run


async def list_runs(*, deps: Deps, limit: int, cursor: str | None) -> tuple[list[Run], str | None]:
    async with deps.uow() as uow:
        return await uow.reconciliations.page(limit, cursor)


async def list_discrepancies(
    run_id: str, filters: DiscrepancyFilter, *, deps: Deps, limit: int, cursor: str | None
) -> tuple[list[Discrepancy], str | None]:
    await get_run(run_id, deps=deps)
    async with deps.uow() as uow:
        return await uow.reconciliations.discrepancies(run_id, filters, limit, cursor)


DISCREPANCY_HEADER: Final = (
    "discrepancy_id",
    "run_id",
    "provider",
    "kind",
    "action",
    "payment_id",
    "provider_payment_id",
    "ours_status",
    "theirs_status",
    "ours",
    "theirs",
    "detail",
    "created_at",
    "resolved_at",
    "resolved_by",
    "resolution_note",
)


async def discrepancy_records(run_id: str, *, deps: Deps) -> AsyncIterator[Record]:
    """A run's discrepancies as rows of `DISCREPANCY_HEADER`, oldest first, page by page
    (`ours` and `theirs` as compact JSON)."""
    cursor: str | None = None
    while True:
        async with deps.uow() as uow:
            page, cursor = await uow.reconciliations.discrepancies(
                run_id, DiscrepancyFilter(), PAGE, cursor
            )
        for d in page:
            yield (
                d.id,
                d.run_id,
                d.provider,
                d.kind.value,
                d.action.value,
                d.payment_id,
                d.provider_payment_id,
                d.ours.get("status"),
                d.theirs.get("status"),
                json.dumps(d.ours, separators=(",", ":"), sort_keys=True),
                json.dumps(d.theirs, separators=(",", ":"), sort_keys=True),
                d.detail,
                d.created_at,
                d.resolved_at,
                d.resolved_by,
                d.resolution_note,
            )
        if cursor is None:
            return


async def resolve_discrepancy(
    discrepancy_id: str, note: str, actor: str, *, deps: Deps
) -> Discrepancy:
    """A person handled a flagged discrepancy; resolving it again changes nothing."""
    async with deps.uow() as uow:
        found = await uow.reconciliations.discrepancy(discrepancy_id, for_update=True)
        if found is None:
            raise NotFound(f"discrepancy {discrepancy_id} not found")
        if found.resolve(deps.clock.now(), actor, note):
            await uow.reconciliations.save_discrepancy(found)
            await uow.commit()
            log.info("reconciliation.resolved", discrepancy_id=discrepancy_id, actor=actor)
    return found


async def fail_abandoned(*, deps: Deps) -> int:
    """Mark FAILED every RUNNING run whose heartbeat stopped (its process died): no run is left
    RUNNING for ever. The next run covers its window again (re-runs are idempotent)."""
    now = deps.clock.now()
    stale = deps.config.reconcile_stale_after.total_seconds()
    failed = 0
    async with deps.uow() as uow:
        for run in await uow.reconciliations.running():
            if run.abandoned(now, stale):
                quiet = now - run.heartbeat_at
                run.fail(now, f"abandoned: no heartbeat for {int(quiet.total_seconds())} s")
                await uow.reconciliations.save(run)
                failed += 1
                log.warning("reconciliation.abandoned", run_id=run.run_id)
        await uow.commit()
    return failed


def schedule_slot(now: datetime, interval: timedelta) -> str:
    """The schedule's slot `now` falls in: every worker computes the same one."""
    seconds = max(1, int(interval.total_seconds()))
    start = int(now.timestamp()) // seconds * seconds
    return f"every{seconds}s@{start}"


async def run_scheduled(*, deps: Deps) -> Run | None:
    """The worker's scheduled run: one per interval over the configured window, started by
    whichever worker gets to the slot first."""
    now = deps.clock.now()
    run = await start_run(deps=deps, slot=schedule_slot(now, deps.config.reconcile_interval))
    if run is None:
        return None
    return await run_pass(run.run_id, deps=deps)


# -- the pass ---------------------------------------------------------------------------------


async def run_pass(run_id: str, *, deps: Deps) -> Run:
    """Do the run's comparison (see the module's docstring), then mark it FINISHED (or FAILED
    with the error, should the pass itself break)."""
    run = await get_run(run_id, deps=deps)
    try:
        for name in [run.provider] if run.provider else list(deps.providers):
            await _reconcile_provider(run, name, deps=deps)
    except Exception as exc:
        run.fail(deps.clock.now(), f"{type(exc).__name__}: {exc}")
        log.exception("reconciliation.failed", run_id=run_id)
    else:
        run.finish(deps.clock.now())
    await _save(run, deps=deps)
    log.info(
        "reconciliation.finished",
        run_id=run_id,
        status=run.status.value,
        checked=run.checked,
        healed=run.healed,
        flagged=run.flagged,
        resolved=run.resolved,
    )
    return run


async def _save(run: Run, *, deps: Deps) -> None:
    run.beat(deps.clock.now())
    async with deps.uow() as uow:
        await uow.reconciliations.save(run)
        await uow.commit()


async def _ours(run: Run, provider: str, *, deps: Deps) -> Iterable[Payment]:
    """Our payments of the window at `provider`, page by page."""
    filters = PaymentFilter(
        provider=provider, created_from=run.window_from, created_to=run.window_to
    )
    cursor: str | None = None
    found: list[Payment] = []
    while True:
        async with deps.uow() as uow:
            page, cursor = await uow.payments.page(filters, PAGE, cursor)
        found += page
        if cursor is None:
            return found


async def _reconcile_provider(run: Run, name: str, *, deps: Deps) -> None:
    provider = deps.providers[name]
    known: set[str] = set()
    for payment in await _ours(run, name, deps=deps):
        if payment.provider_payment_id:
            known.add(payment.provider_payment_id)
        known.add(payment.id)
        try:
            await Check(run, provider, payment, deps)()
        except (ProviderTimeout, ProviderUnavailable, ProviderError) as exc:
            # This payment is compared again by the next run; the rest of the window goes on.
            log.warning("reconciliation.lookup_failed", payment_id=payment.id, error=repr(exc))
            continue
        run.checked += 1
        await _save(run, deps=deps)
    if provider.capabilities.lists_payments:
        async for theirs in provider.payments(run.window_from, run.window_to):
            if theirs.provider_payment_id in known or (theirs.payment_id or "") in known:
                continue
            if await _ours_after_all(name, theirs, deps=deps):
                continue  # ours, created just outside our window (clocks and roundings differ)
            await _record(
                run,
                name,
                Kind.MISSING_LOCALLY,
                Action.FLAGGED,
                f"{theirs.provider_payment_id}",
                "the provider has a payment of this window that we do not know",
                deps=deps,
                provider_payment_id=theirs.provider_payment_id,
                theirs=_view(theirs),
            )
        await _save(run, deps=deps)


async def _ours_after_all(provider: str, theirs: ProviderPayment, *, deps: Deps) -> bool:
    async with deps.uow() as uow:
        if await uow.payments.by_provider_id(provider, theirs.provider_payment_id) is not None:
            return True
        return (
            bool(theirs.payment_id) and await uow.payments.get(theirs.payment_id or "") is not None
        )


async def _record(
    run: Run,
    provider: str,
    kind: Kind,
    action: Action,
    key: str,
    detail: str,
    *,
    deps: Deps,
    uow: UnitOfWork | None = None,
    payment_id: str | None = None,
    provider_payment_id: str | None = None,
    ours: dict[str, Any] | None = None,
    theirs: dict[str, Any] | None = None,
) -> Discrepancy | None:
    """Store a discrepancy (in `uow` when given, the caller commits); None when an earlier run
    found the same one."""
    found = Discrepancy(
        id=new_id("dsc"),
        run_id=run.run_id,
        provider=provider,
        kind=kind,
        action=action,
        fingerprint=f"{kind.value}:{provider}:{key}"[:255],
        detail=detail,
        created_at=deps.clock.now(),
        payment_id=payment_id,
        provider_payment_id=provider_payment_id,
        ours=ours or {},
        theirs=theirs or {},
    )
    if uow is not None:
        added = await uow.reconciliations.add_discrepancy(found)
    else:
        async with deps.uow() as own:
            added = await own.reconciliations.add_discrepancy(found)
            await own.commit()
    if not added:
        return None
    run.count(found)
    deps.telemetry.count("reconciliation_discrepancies_total", kind=kind.value, action=action.value)
    log.info(
        "reconciliation.discrepancy",
        run_id=run.run_id,
        kind=kind.value,
        action=action.value,
        payment_id=payment_id,
        provider_payment_id=provider_payment_id,
    )
    return found


def _ours_view(payment: Payment) -> dict[str, Any]:
    return {
        "status": payment.status.value,
        "currency": payment.amount.currency,
        "amount": payment.amount.format(),
        "authorized_amount": payment.money(payment.authorized_minor).format(),
        "captured_amount": payment.money(payment.captured_minor).format(),
        "refunded_amount": payment.money(payment.refunded_minor).format(),
    }


def _view(theirs: ProviderPayment) -> dict[str, Any]:
    def money(minor: int) -> str:
        return Money(minor, theirs.currency).format()

    return {
        "status": theirs.status.value,
        "currency": theirs.currency,
        "amount": money(theirs.amount_minor),
        "authorized_amount": money(theirs.authorized_minor),
        "captured_amount": money(theirs.captured_minor),
        "refunded_amount": money(theirs.refunded_minor),
        "refunds": [
            {"reference": r.reference, "amount": money(r.amount_minor), "status": r.status.value}
            for r in theirs.refunds
        ],
        "disputes": [
            {"reference": d.reference, "amount": money(d.amount_minor), "status": d.status}
            for d in theirs.disputes
        ],
    }


@dataclass
class Check:
    """One payment of a run: settle its open operations, then compare it with the provider."""

    run: Run
    provider: PaymentProvider
    payment: Payment
    deps: Deps

    async def __call__(self) -> None:
        await self._settle_open_operations()
        await self._stuck()
        if not self.payment.provider_payment_id or self.payment.status is S.INITIATED:
            return  # it never reached the provider: nothing to compare
        theirs = await self.provider.payment(self.payment.provider_payment_id)
        if theirs is None:
            await self._flag(
                Kind.MISSING_AT_PROVIDER,
                "",
                "the provider has no payment with our provider id",
                None,
            )
            return
        await self._compare(theirs)

    # -- 1. open operations ----------------------------------------------------------------

    async def _settle_open_operations(self) -> None:
        now = self.deps.clock.now()
        async with self.deps.uow() as uow:
            ops = await uow.operations.open_for(self.payment.id)
        before = self.payment.status
        for op in ops:
            if in_flight(op, now, self.deps):
                continue
            try:
                if await resolve_operation(op, deps=self.deps):
                    self.run.resolved += 1
            except Exception:
                log.exception("reconciliation.resolve_failed", transaction_id=op.id)
        await self._reload()
        if self.payment.status is not before:
            await self._record(
                Kind.STATUS_MISMATCH,
                Action.HEALED,
                f"{before.value}>{self.payment.status.value}",
                f"the provider had moved it from {before} to {self.payment.status} and we had "
                "not heard (a lost webhook or answer); settled by asking the provider",
                ours={"status": before.value},
                theirs={"status": self.payment.status.value},
            )

    async def _reload(self) -> None:
        async with self.deps.uow() as uow:
            fresh = await uow.payments.get(self.payment.id)
        if fresh is not None:
            self.payment = fresh

    # -- 2. the provider's view --------------------------------------------------------------

    async def _compare(self, theirs: ProviderPayment) -> None:
        ours = self.payment
        if theirs.currency != ours.amount.currency:
            await self._flag(
                Kind.AMOUNT_MISMATCH, "currency", "the provider charged another currency", theirs
            )
            return
        if ours.status in WAITING and theirs.status in SETTLED:
            await self._waiting_moved(theirs)
            return
        if ours.status in HELD and theirs.status is not P.AUTHORIZED:
            await self._held_moved(theirs)
        elif theirs.status not in EXPECTED.get(ours.status, frozenset({theirs.status})):
            await self._flag(
                Kind.STATUS_MISMATCH,
                f"{ours.status.value}:{theirs.status.value}",
                f"we have it {ours.status}, the provider {theirs.status}: "
                "not a forward move we can make",
                theirs,
            )
            return
        if self.payment.status in CAPTURED:
            await self._captured_amount(theirs)
            if not await self._refunds(theirs):
                await self._refunded_amount(theirs)
            for dispute in theirs.disputes:
                await self._dispute(dispute, theirs)

    async def _waiting_moved(self, theirs: ProviderPayment) -> None:
        """The outcome we were waiting for (a customer's 3-D Secure step, an asynchronous
        payment) happened at the provider and its webhook never came: applied as the webhook
        would have been, to the operation that waits for it."""
        status = P.CAPTURED if theirs.status is P.REFUNDED else theirs.status
        amount = {
            P.AUTHORIZED: theirs.authorized_minor,
            P.CAPTURED: theirs.captured_minor,
        }.get(status, theirs.amount_minor)
        now = self.deps.clock.now()
        async with self.deps.uow() as uow:
            payment = await uow.payments.get(self.payment.id, for_update=True)
            if payment is None or payment.version != self.payment.version:
                return  # it moved while we looked: the next run sees where it is now
            ours_before = _ours_view(payment)
            waiting = [
                op
                for op in await uow.operations.open_for(payment.id)
                if op.kind in (OperationKind.SALE, OperationKind.AUTHORIZE)
            ]
            op = waiting[0] if waiting else None
            outcome = Outcome(status, theirs.provider_payment_id, amount, theirs.currency)
            await apply_outcome(
                uow,
                payment,
                op,
                outcome,
                RECONCILIATION,
                deps=self.deps,
                transaction_id=theirs.provider_payment_id,
            )
            if op is not None:
                evidence = {
                    "discrepancy": Kind.STATUS_MISMATCH.value,
                    "provider_view": _view(theirs),
                }
                payment.reconciled(now, op, status.value, evidence=evidence)
                await uow.payments.save(payment)
            await self._record(
                Kind.STATUS_MISMATCH,
                Action.HEALED,
                f"{ours_before['status']}>{status.value}",
                f"the provider settled it {status} and its webhook never reached us",
                uow=uow,
                ours=ours_before,
                theirs=_view(theirs),
            )
            await uow.commit()
            self.payment = payment

    async def _held_moved(self, theirs: ProviderPayment) -> None:
        """A held payment the provider captured or released without us (its dashboard)."""
        ours = self.payment
        if theirs.status in (P.CAPTURED, P.REFUNDED) and theirs.captured_minor > 0:
            if theirs.captured_minor > ours.authorized_minor:
                await self._flag(
                    Kind.AMOUNT_MISMATCH,
                    f"captured:{theirs.captured_minor}",
                    "the provider captured more than we had authorized",
                    theirs,
                )
                return
            await self._heal(
                theirs,
                OperationKind.CAPTURE,
                Outcome(
                    P.CAPTURED,
                    theirs.provider_payment_id,
                    theirs.captured_minor,
                    theirs.currency,
                ),
                key=f"capture:{theirs.captured_minor}",
                detail="captured at the provider (its dashboard), not by us",
            )
        elif theirs.status is P.CANCELED:
            await self._heal(
                theirs,
                OperationKind.VOID,
                Outcome(P.CANCELED, theirs.provider_payment_id, 0, theirs.currency),
                key="cancel",
                detail="canceled at the provider (its dashboard), not by us",
            )
        else:
            await self._flag(
                Kind.STATUS_MISMATCH,
                f"{ours.status.value}:{theirs.status.value}",
                f"we hold it {ours.status}, the provider says {theirs.status}",
                theirs,
            )

    async def _captured_amount(self, theirs: ProviderPayment) -> None:
        if theirs.captured_minor != self.payment.captured_minor:
            await self._flag(
                Kind.AMOUNT_MISMATCH,
                f"captured:{self.payment.captured_minor}:{theirs.captured_minor}",
                "the captured amounts differ",
                theirs,
            )

    async def _refunded_amount(self, theirs: ProviderPayment) -> None:
        await self._reload()
        if theirs.refunded_minor != self.payment.refunded_minor:
            await self._flag(
                Kind.AMOUNT_MISMATCH,
                f"refunded:{self.payment.refunded_minor}:{theirs.refunded_minor}",
                "the refunded amounts differ",
                theirs,
            )

    async def _refunds(self, theirs: ProviderPayment) -> bool:
        """Heal or flag each refund on one side only; True when one was flagged."""
        flagged = False
        async with self.deps.uow() as uow:
            ours = await uow.refunds.for_payment(self.payment.id)
            ops = await uow.operations.for_payment(self.payment.id)
        keys = {op.idempotency_key: op for op in ops if op.kind is OperationKind.REFUND}
        references = {r.provider_refund_id for r in ours if r.provider_refund_id}
        refund_of_key = {op.refund_id: key for key, op in keys.items()}
        seen: set[str] = set()
        for refund in theirs.refunds:
            if refund.idempotency_key in keys or refund.reference in references:
                seen.add(refund.reference)
                if refund.idempotency_key in keys:
                    seen.add(refund.idempotency_key)
                continue
            if refund.status is not P.REFUNDED:
                continue  # pending or failed at the provider: no money moved (yet)
            if refund.amount_minor > self.payment.refundable.minor:
                await self._flag(
                    Kind.REFUND_MISMATCH,
                    f"refund:{refund.reference}",
                    "the provider refunded more than we can explain",
                    theirs,
                )
                flagged = True
                continue
            await self._heal(
                theirs,
                OperationKind.REFUND,
                Outcome(
                    P.REFUNDED,
                    theirs.provider_payment_id,
                    refund.amount_minor,
                    theirs.currency,
                    reference=refund.reference,
                ),
                key=f"refund:{refund.reference}",
                detail="refunded at the provider (its dashboard), not by us",
                found_as=Kind.REFUND_MISMATCH,
            )
        for mine in ours:
            if mine.status is not RefundStatus.SUCCEEDED:
                continue
            known = mine.provider_refund_id in seen or refund_of_key.get(mine.id) in seen
            if not known:
                await self._flag(
                    Kind.REFUND_MISMATCH,
                    f"ours:{mine.id}",
                    f"our refund {mine.id} succeeded but the provider has no such refund",
                    theirs,
                )
                flagged = True
        return flagged

    async def _dispute(self, dispute: ProviderDispute, theirs: ProviderPayment) -> None:
        """A chargeback we had not heard of (or whose news we missed) is recorded, through the
        same rule as the provider's dispute webhooks; one the rule refuses is flagged."""
        provider = self.payment.provider
        refused: Exception | None = None
        async with self.deps.uow() as uow:
            known = await uow.disputes.by_provider_id(provider, dispute.reference)
            if known is not None and known.status.value == dispute.status:
                return  # we know it as the provider does
            payment = await uow.payments.get(self.payment.id, for_update=True)
            if payment is None:
                return
            try:
                recorded = await apply_dispute(
                    uow,
                    payment,
                    reference=dispute.reference,
                    amount_minor=dispute.amount_minor,
                    reason=dispute.reason,
                    status=dispute.status,
                    evidence_due_by=dispute.evidence_due_by,
                    deps=self.deps,
                    source=RECONCILIATION.source,
                )
            except (DomainError, ValueError) as exc:
                refused = exc  # nothing is committed: the transaction ends unsaved
            else:
                if recorded.changed:
                    await self._record(
                        Kind.DISPUTE_OPENED if recorded.opened else Kind.STATUS_MISMATCH,
                        Action.HEALED,
                        f"dispute:{dispute.reference}:{dispute.status}",
                        f"the provider's dispute {dispute.reference} ({dispute.status}) was "
                        + ("not recorded here" if recorded.opened else "not up to date here"),
                        uow=uow,
                        ours={"dispute_status": known.status.value if known else None},
                        theirs=_view(theirs),
                    )
                await uow.commit()
        if refused is not None:
            await self._flag(
                Kind.DISPUTE_OPENED,
                f"dispute:{dispute.reference}:{dispute.status}",
                f"the provider's dispute {dispute.reference} cannot be recorded: {refused}",
                theirs,
            )
        await self._reload()

    # -- 3. operations nobody could settle -------------------------------------------------

    async def _stuck(self) -> None:
        now = self.deps.clock.now()
        async with self.deps.uow() as uow:
            ops = await uow.operations.open_for(self.payment.id)
        for op in ops:
            if now - op.created_at > self.deps.config.reconcile_stuck_after:
                await self._flag(
                    Kind.STUCK,
                    f"{op.id}",
                    f"{op.kind} {op.id} has been unresolved since {op.created_at.isoformat()}",
                    None,
                )

    # -- recording ---------------------------------------------------------------------------

    async def _flag(
        self, kind: Kind, key: str, detail: str, theirs: ProviderPayment | None
    ) -> None:
        await self._record(
            kind,
            Action.FLAGGED,
            key,
            detail,
            ours=_ours_view(self.payment),
            theirs=_view(theirs) if theirs is not None else {},
        )

    async def _record(
        self,
        kind: Kind,
        action: Action,
        key: str,
        detail: str,
        *,
        uow: UnitOfWork | None = None,
        ours: dict[str, Any] | None = None,
        theirs: dict[str, Any] | None = None,
    ) -> Discrepancy | None:
        return await _record(
            self.run,
            self.payment.provider,
            kind,
            action,
            f"{self.payment.id}:{key}",
            detail,
            deps=self.deps,
            uow=uow,
            payment_id=self.payment.id,
            provider_payment_id=self.payment.provider_payment_id,
            ours=ours,
            theirs=theirs,
        )

    async def _heal(
        self,
        theirs: ProviderPayment,
        operation: OperationKind,
        outcome: Outcome,
        *,
        key: str,
        detail: str,
        found_as: Kind = Kind.STATUS_MISMATCH,
    ) -> None:
        """Make the provider's move ours: a new operation of ours, marked as found at the
        provider, settled by the one outcome rule, with the evidence on a RECONCILED event and
        the discrepancy row, all in one transaction."""
        now = self.deps.clock.now()
        async with self.deps.uow() as uow:
            payment = await uow.payments.get(self.payment.id, for_update=True)
            if payment is None or payment.version != self.payment.version:
                return  # it moved while we looked: the next run sees where it is now
            ours_before = _ours_view(payment)
            amount = payment.money(outcome.amount_minor)
            reason = f"found at the provider by reconciliation {self.run.run_id}"
            refund = None
            op: Operation
            if operation is OperationKind.CAPTURE:
                op = payment.begin_capture(amount, now)
            elif operation is OperationKind.VOID:
                op = payment.begin_void(now, reason=reason)
            else:
                refund, op = payment.begin_refund(amount, "refunded at the provider", now)
                await uow.refunds.add(refund)
            op.reason = reason
            await uow.operations.add(op)
            await apply_outcome(uow, payment, op, outcome, RECONCILIATION, deps=self.deps)
            evidence = {"discrepancy": found_as.value, "provider_view": _view(theirs)}
            payment.reconciled(now, op, outcome.status.value, evidence=evidence)
            await uow.payments.save(payment)
            await self._record(
                found_as,
                Action.HEALED,
                key,
                detail,
                uow=uow,
                ours=ours_before,
                theirs=_view(theirs),
            )
            await uow.commit()
            self.payment = payment
