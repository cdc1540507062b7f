"""Every table, as SQLAlchemy Core. Alembic migrations are written against this metadata.

Amount invariants (`refunded + refund pending + lost to disputes ≤ captured ≤ authorized ≤ amount`,
`lost ≤ disputed ≤ captured`) are check constraints, and one
active payment per order is a partial unique index: the database refuses what the code must
never do, even from parallel processes.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from tillpoint.domain.payment import (
    ACTIVE,
    OPEN_OPERATION,
    OperationStatus,
    PaymentStatus,
)
from tillpoint.service.ports import CLAIMABLE, WebhookStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = sa.MetaData(naming_convention=NAMING)


def status_in(statuses: type[StrEnum], members: Collection[StrEnum]) -> str:
    """The SQL text `status IN ('A', 'B')` of a partial index's predicate, from the set the code
    decides with, so the index cannot cover other statuses than the rule. Members come in the
    enum's order: the text stays the same however the set iterates (the migrations wrote it so,
    and a query repeats it word for word for the database to use the index)."""
    listed = ", ".join(f"'{s.value}'" for s in statuses if s in members)
    return f"status IN ({listed})"


ACTIVE_PAYMENTS = status_in(PaymentStatus, ACTIVE)
OPEN_OPERATIONS = status_in(OperationStatus, OPEN_OPERATION)
CLAIMABLE_WEBHOOKS = status_in(WebhookStatus, CLAIMABLE)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite keeps no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Money = sa.BigInteger


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("buyer_id", sa.String(128), nullable=False, index=True),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    # The request (principal, route, Idempotency-Key) that registered the order, so its retry
    # answers with this order instead of `order_exists`.
    sa.Column("request_key", sa.String(64)),
    _ts("created_at"),
    _ts("updated_at"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
)

order_status_history = sa.Table(
    "order_status_history",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False, index=True
    ),
    sa.Column("from_status", sa.String(24)),
    sa.Column("to_status", sa.String(24), nullable=False),
    sa.Column("reason", sa.String(200), nullable=False),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(128)),
    sa.Column("correlation_id", sa.String(128)),
    _ts("created_at"),
)

checkout_snapshots = sa.Table(
    "checkout_snapshots",
    metadata,
    sa.Column("snapshot_id", sa.String(40), primary_key=True),
    sa.Column(
        "order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False, index=True
    ),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("items", sa.JSON, nullable=False),
    sa.Column("subtotal_minor", Money, nullable=False),
    sa.Column("discount_minor", Money, nullable=False),
    sa.Column("shipping_minor", Money, nullable=False),
    sa.Column("tax_minor", Money, nullable=False),
    sa.Column("total_minor", Money, nullable=False),
    _ts("created_at"),
    _ts("expires_at"),
    sa.CheckConstraint("total_minor > 0", name="total_positive"),
)

# `payment_number`: a numeric id for systems that want one (the `foodies` event dialect's
# `paymentId`). PostgreSQL draws it from this sequence (no two transactions can get the same
# value, and nobody waits); SQLite, which has no sequences, takes max + 1 inside its one write
# transaction at a time (every transaction is `BEGIN IMMEDIATE`). The unique index backs both.
PAYMENT_NUMBERS = sa.Sequence("payments_payment_number_seq", metadata=metadata)

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", sa.String(40), primary_key=True),
    sa.Column("payment_number", sa.BigInteger, PAYMENT_NUMBERS, nullable=True, unique=True),
    sa.Column(
        "order_id", sa.String(64), sa.ForeignKey("orders.order_id"), nullable=False, index=True
    ),
    sa.Column("buyer_id", sa.String(128), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("capture_method", sa.String(16), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_payment_id", sa.String(128)),
    sa.Column("payment_method", sa.JSON, nullable=False),
    sa.Column("authorized_minor", Money, nullable=False, server_default="0"),
    sa.Column("captured_minor", Money, nullable=False, server_default="0"),
    sa.Column("refunded_minor", Money, nullable=False, server_default="0"),
    sa.Column("refund_pending_minor", Money, nullable=False, server_default="0"),
    # Under open disputes or lost to closed ones, and of that the lost part (Payment.refundable).
    sa.Column("disputed_minor", Money, nullable=False, server_default="0"),
    sa.Column("dispute_lost_minor", Money, nullable=False, server_default="0"),
    sa.Column("failure_code", sa.String(64)),
    sa.Column("failure_message", sa.String(500)),
    sa.Column("next_action", sa.JSON),
    sa.Column("snapshot_id", sa.String(40)),
    # Not unique: it only has to find the payment of a request retried within the
    # idempotency key's lifetime, and a key may be used again once it was reaped.
    sa.Column("request_key", sa.String(64), index=True),
    sa.Column("sequence", sa.Integer, nullable=False, server_default="0"),
    sa.Column("version", sa.Integer, nullable=False, server_default="0"),
    sa.Column("operation_count", sa.Integer, nullable=False, server_default="0"),
    _ts("created_at"),
    _ts("updated_at"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.CheckConstraint("authorized_minor <= amount_minor", name="authorized_le_amount"),
    sa.CheckConstraint("captured_minor <= authorized_minor", name="captured_le_authorized"),
    sa.CheckConstraint(
        "refunded_minor >= 0 AND refund_pending_minor >= 0 "
        "AND refunded_minor + refund_pending_minor <= captured_minor",
        name="refunded_le_captured",
    ),
    sa.CheckConstraint(
        "refunded_minor + refund_pending_minor + dispute_lost_minor <= captured_minor",
        name="refunded_and_lost_le_captured",
    ),
    sa.CheckConstraint(
        "dispute_lost_minor >= 0 AND dispute_lost_minor <= disputed_minor "
        "AND disputed_minor <= captured_minor",
        name="disputed_le_captured",
    ),
    sa.Index("ix_payments_created", "created_at", "payment_id"),
    sa.Index("ix_payments_provider_ref", "provider", "provider_payment_id"),
    sa.Index(
        "uq_payments_one_active_per_order",
        "order_id",
        unique=True,
        postgresql_where=sa.text(ACTIVE_PAYMENTS),
        sqlite_where=sa.text(ACTIVE_PAYMENTS),
    ),
)

payment_events = sa.Table(
    "payment_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(40), nullable=False, unique=True),
    sa.Column(
        "payment_id",
        sa.String(40),
        sa.ForeignKey("payments.payment_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("event_type", sa.String(40), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    _ts("created_at"),
)

payment_transactions = sa.Table(
    "payment_transactions",
    metadata,
    sa.Column("transaction_id", sa.String(40), primary_key=True),
    sa.Column(
        "payment_id",
        sa.String(40),
        sa.ForeignKey("payments.payment_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),
    sa.Column("provider_reference", sa.String(128)),
    sa.Column("refund_id", sa.String(40)),
    # The request that sent this operation: its retry resumes this row (same provider key).
    sa.Column("request_key", sa.String(64)),
    sa.Column("reason", sa.String(500)),  # the client's reason (a void's)
    sa.Column("error_code", sa.String(64)),
    sa.Column("error_message", sa.String(500)),
    sa.Column("check_count", sa.Integer, nullable=False, server_default="0"),
    _ts("next_check_at", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.Index("ix_payment_transactions_request_key", "payment_id", "request_key"),
    # The janitor's queue: only open operations, in the order it asks about them.
    sa.Index(
        "ix_payment_transactions_due",
        "next_check_at",
        postgresql_where=sa.text(OPEN_OPERATIONS),
        sqlite_where=sa.text(OPEN_OPERATIONS),
    ),
)

refunds = sa.Table(
    "refunds",
    metadata,
    sa.Column("refund_id", sa.String(40), primary_key=True),
    sa.Column(
        "payment_id",
        sa.String(40),
        sa.ForeignKey("payments.payment_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(500)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("provider_refund_id", sa.String(128)),
    _ts("created_at"),
    _ts("processed_at", nullable=True),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
)

# Chargebacks. `dispute_id` is ours (`dsp_…`); the provider's id is unique per provider, so a
# repeated or reordered report updates its dispute and never adds a second one.
disputes = sa.Table(
    "disputes",
    metadata,
    sa.Column("dispute_id", sa.String(40), primary_key=True),
    sa.Column(
        "payment_id",
        sa.String(40),
        sa.ForeignKey("payments.payment_id"),
        nullable=False,
        index=True,
    ),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_dispute_id", sa.String(128), nullable=False),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    _ts("evidence_due_by", nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("closed_at", nullable=True),
    sa.CheckConstraint("amount_minor > 0", name="amount_positive"),
    sa.UniqueConstraint("provider", "provider_dispute_id", name="uq_disputes_provider_dispute"),
    sa.Index("ix_disputes_status", "status", "dispute_id"),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(40), nullable=False, unique=True),
    sa.Column("aggregate_id", sa.String(64), nullable=False, index=True),
    sa.Column("routing_key", sa.String(64), nullable=False),
    sa.Column("message_type", sa.String(64), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    _ts("created_at"),
    _ts("published_at", nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(500)),
    sa.Index(
        "ix_outbox_unpublished",
        "id",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("scope", sa.String(300), nullable=False),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("response_code", sa.Integer),
    sa.Column("response_body", sa.LargeBinary),
    sa.Column("response_headers", sa.JSON),
    _ts("locked_at", nullable=True),
    _ts("created_at"),
    _ts("expires_at"),
    sa.UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),
    sa.Index("ix_idempotency_keys_expires_at", "expires_at"),
)

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("webhook_event_id", sa.String(40), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("provider_event_id", sa.String(255), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("signature_valid", sa.Boolean, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("provider_payment_id", sa.String(128)),
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("last_error", sa.String(1000)),
    _ts("received_at"),
    _ts("processed_at", nullable=True),
    _ts("next_attempt_at", nullable=True),
    sa.UniqueConstraint("provider", "provider_event_id", name="uq_webhook_events_provider_event"),
    # The processor's queue: only claimable events, in the order it claims them, so taking the
    # next one stays an index lookup however many are waiting.
    sa.Index(
        "ix_webhook_events_due",
        "next_attempt_at",
        "webhook_event_id",
        postgresql_where=sa.text(CLAIMABLE_WEBHOOKS),
        sqlite_where=sa.text(CLAIMABLE_WEBHOOKS),
    ),
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("message_id", sa.String(255), primary_key=True),
    sa.Column("order_id", sa.String(64)),
    sa.Column("payment_id", sa.String(40)),
    _ts("received_at"),
)

mock_gateway_ledger = sa.Table(
    "mock_gateway_ledger",
    metadata,
    sa.Column("idempotency_key", sa.String(128), primary_key=True),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("payment_id", sa.String(40), nullable=False, index=True),
    sa.Column("provider_payment_id", sa.String(64), nullable=False, index=True),
    sa.Column("reference", sa.String(64), nullable=False),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("amount_minor", Money, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

reconciliation_runs = sa.Table(
    "reconciliation_runs",
    metadata,
    sa.Column("run_id", sa.String(40), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("checked", sa.Integer, nullable=False, server_default="0"),
    sa.Column("resolved", sa.Integer, nullable=False, server_default="0"),
    _ts("started_at"),
    _ts("finished_at", nullable=True),
    # Migration 0007: a run compares a window of one provider's payments (or all providers').
    sa.Column("provider", sa.String(32)),
    _ts("window_from", nullable=True),
    _ts("window_to", nullable=True),
    sa.Column("healed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("flagged", sa.Integer, nullable=False, server_default="0"),
    _ts("heartbeat_at", nullable=True),
    sa.Column("error", sa.Text),
    # A scheduled run's slot: one run per slot, whichever worker starts it.
    sa.Column("slot", sa.String(40), unique=True),
)
sa.Index("ix_reconciliation_runs_started_at", reconciliation_runs.c.started_at)

reconciliation_discrepancies = sa.Table(
    "reconciliation_discrepancies",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    # The difference itself: a later run finding it again records nothing new.
    sa.Column("fingerprint", sa.String(255), nullable=False, unique=True),
    sa.Column("payment_id", sa.String(40)),
    sa.Column("provider_payment_id", sa.String(255)),
    sa.Column("ours", sa.JSON, nullable=False),
    sa.Column("theirs", sa.JSON, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    _ts("created_at"),
    _ts("resolved_at", nullable=True),
    sa.Column("resolved_by", sa.String(128)),
    sa.Column("resolution_note", sa.Text),
)
sa.Index(
    "ix_reconciliation_discrepancies_run_id",
    reconciliation_discrepancies.c.run_id,
    reconciliation_discrepancies.c.created_at,
)

# One row per outbound provider call attempt (retries included), written by the resilient call
# layer in its own short transaction; bodies are redacted before they get here.
provider_call_audit = sa.Table(
    "provider_call_audit",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("operation", sa.String(32), nullable=False),
    sa.Column("payment_id", sa.String(40)),
    sa.Column("idempotency_key", sa.String(128)),
    sa.Column("provider_request_id", sa.String(255)),
    sa.Column("http_status", sa.Integer),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("latency_ms", sa.Integer, nullable=False),
    sa.Column("correlation_id", sa.String(128)),
    sa.Column("request_body", sa.JSON),
    sa.Column("response_body", sa.JSON),
    _ts("created_at"),
    # A payment's calls, oldest first (the admin's provider-calls listing).
    sa.Index("ix_provider_call_audit_payment", "payment_id", "created_at"),
)
