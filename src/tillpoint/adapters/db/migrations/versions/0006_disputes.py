"""disputes: chargebacks, and the money they hold or took on payments

Revision ID: 0006
Revises: 0005

`disputes` keeps one row per provider dispute (unique `(provider, provider_dispute_id)`; ours is
`dispute_id`, `dsp_…`). `payments.disputed_minor` is what open disputes hold plus what lost ones
took, `payments.dispute_lost_minor` the lost part, which is no longer refundable: the checks
`refunded + refund pending + lost ≤ captured` and `lost ≤ disputed ≤ captured` hold in the
database as in the code. Existing payments start with no disputes (both 0).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tillpoint.adapters.db.tables

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("disputed_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("dispute_lost_minor", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_payments_refunded_and_lost_le_captured"),
            "refunded_minor + refund_pending_minor + dispute_lost_minor <= captured_minor",
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_payments_disputed_le_captured"),
            "dispute_lost_minor >= 0 AND dispute_lost_minor <= disputed_minor "
            "AND disputed_minor <= captured_minor",
        )
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(length=40), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("provider_dispute_id", sa.String(length=128), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "evidence_due_by",
            tillpoint.adapters.db.tables.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "created_at", tillpoint.adapters.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", tillpoint.adapters.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "closed_at", tillpoint.adapters.db.tables.UTCDateTime(timezone=True), nullable=True
        ),
        sa.CheckConstraint("amount_minor > 0", name=op.f("ck_disputes_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.payment_id"],
            name=op.f("fk_disputes_payment_id_payments"),
        ),
        sa.PrimaryKeyConstraint("dispute_id", name=op.f("pk_disputes")),
        sa.UniqueConstraint("provider", "provider_dispute_id", name="uq_disputes_provider_dispute"),
    )
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disputes_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index("ix_disputes_status", ["status", "dispute_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("disputes", schema=None) as batch_op:
        batch_op.drop_index("ix_disputes_status")
        batch_op.drop_index(batch_op.f("ix_disputes_payment_id"))
    op.drop_table("disputes")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_payments_disputed_le_captured"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("ck_payments_refunded_and_lost_le_captured"), type_="check"
        )
        batch_op.drop_column("dispute_lost_minor")
        batch_op.drop_column("disputed_minor")
