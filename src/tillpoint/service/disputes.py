"""Disputes (chargebacks): what a provider reports about one, from a webhook or found by
reconciliation, recorded on its payment. The rule is `Payment.record_dispute`; this finds the
payment and the dispute, and saves what changed with the payment's events and outbox rows.

Both callers hand over the provider's facts as `ProviderDispute` carries them (`reference`,
`amount_minor`, `reason`, `status`, `evidence_due_by`), in the payment's currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from tillpoint.domain.errors import DomainError, NotFound
from tillpoint.domain.payment import Dispute, DisputeStatus, Payment
from tillpoint.service.context import Deps
from tillpoint.service.ports import DisputeFilter, UnitOfWork

log = structlog.get_logger("tillpoint.disputes")


class DisputedPaymentNotFound(NotFound):
    """No payment of this provider has that id (yet: a webhook is retried)."""


class DisputeOfAnotherPayment(DomainError):
    """The provider's dispute id is recorded on another of our payments."""


@dataclass(frozen=True, slots=True)
class RecordedDispute:
    """The dispute as recorded, and whether this report opened it or changed it at all."""

    dispute: Dispute | None  # None: the report was stale for a dispute closed otherwise
    opened: bool
    changed: bool


async def record_dispute(
    provider: str,
    provider_payment_id: str,
    *,
    reference: str,
    amount_minor: int,
    reason: str,
    status: DisputeStatus | str,
    evidence_due_by: datetime | None,
    deps: Deps,
    source: str,
) -> RecordedDispute:
    """Record one report about a dispute in its own transaction. Raises
    `DisputedPaymentNotFound` when the provider's payment is none we know."""
    async with deps.uow() as uow:
        payment = await uow.payments.by_provider_id(provider, provider_payment_id, for_update=True)
        if payment is None:
            raise DisputedPaymentNotFound(
                f"no {provider} payment {provider_payment_id} for dispute {reference}"
            )
        recorded = await apply_dispute(
            uow,
            payment,
            reference=reference,
            amount_minor=amount_minor,
            reason=reason,
            status=status,
            evidence_due_by=evidence_due_by,
            deps=deps,
            source=source,
        )
        await uow.commit()
    return recorded


async def apply_dispute(
    uow: UnitOfWork,
    payment: Payment,
    *,
    reference: str,
    amount_minor: int,
    reason: str,
    status: DisputeStatus | str,
    evidence_due_by: datetime | None,
    deps: Deps,
    source: str,
) -> RecordedDispute:
    """`record_dispute` in the caller's transaction, on a payment it loaded `for_update` (the
    lock serializes two reports of the same new dispute; the unique provider id backs it). The
    payment is saved either way (a stale report is recorded on it); the caller commits."""
    known = await uow.disputes.by_provider_id(payment.provider, reference)
    if known is not None and known.payment_id != payment.id:
        raise DisputeOfAnotherPayment(
            f"{payment.provider} dispute {reference} is on payment {known.payment_id}, "
            f"not {payment.id}"
        )
    dispute = payment.record_dispute(
        known,
        reference=reference,
        amount=payment.money(amount_minor),
        reason=reason,
        status=DisputeStatus(status),
        evidence_due_by=evidence_due_by,
        now=deps.clock.now(),
        source=source,
    )
    if dispute is not None and known is None:
        await uow.disputes.add(dispute)
    elif dispute is not None:
        await uow.disputes.save(dispute)
    await uow.payments.save(payment)
    payment.check_invariants()
    if dispute is not None:
        log.info(
            "payment.dispute_recorded",
            payment_id=payment.id,
            order_id=payment.order_id,
            dispute_id=dispute.id,
            provider_dispute_id=reference,
            dispute_status=dispute.status.value,
            opened=known is None,
            source=source,
        )
    return RecordedDispute(
        dispute=dispute or known,
        opened=known is None and dispute is not None,
        changed=dispute is not None,
    )


async def list_disputes(
    status: DisputeStatus | None,
    payment_id: str | None,
    limit: int,
    cursor: str | None,
    *,
    deps: Deps,
) -> tuple[list[Dispute], str | None]:
    async with deps.uow() as uow:
        filters = DisputeFilter(status=status.value if status else None, payment_id=payment_id)
        return await uow.disputes.page(filters, limit, cursor)
