"""reconciliation: runs over a window, and the discrepancies they find

Revision ID: 0007
Revises: 0006

A run compares our payments of a window with the provider's view (adapters' `payment` and
`payments`); each difference is a discrepancy row, healed or flagged. `fingerprint` is unique so
a re-run over the same window records nothing it already found; `slot` is unique so two workers
never both start the same scheduled run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tillpoint.adapters.db.tables

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = tillpoint.adapters.db.tables.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.add_column(sa.Column("provider", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("window_from", UTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("window_to", UTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("healed", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("flagged", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("heartbeat_at", UTC(timezone=True), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("slot", sa.String(length=40), nullable=True))
        batch.create_unique_constraint(op.f("uq_reconciliation_runs_slot"), ["slot"])
    op.create_index("ix_reconciliation_runs_started_at", "reconciliation_runs", ["started_at"])
    op.create_table(
        "reconciliation_discrepancies",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("fingerprint", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("provider_payment_id", sa.String(length=255), nullable=True),
        sa.Column("ours", sa.JSON(), nullable=False),
        sa.Column("theirs", sa.JSON(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.Column("resolved_at", UTC(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=128), nullable=True),
        sa.Column("resolution_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconciliation_discrepancies")),
        sa.UniqueConstraint(
            "fingerprint", name=op.f("uq_reconciliation_discrepancies_fingerprint")
        ),
    )
    op.create_index(
        "ix_reconciliation_discrepancies_run_id",
        "reconciliation_discrepancies",
        ["run_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_reconciliation_discrepancies_run_id", "reconciliation_discrepancies")
    op.drop_table("reconciliation_discrepancies")
    op.drop_index("ix_reconciliation_runs_started_at", "reconciliation_runs")
    with op.batch_alter_table("reconciliation_runs") as batch:
        batch.drop_constraint(op.f("uq_reconciliation_runs_slot"), type_="unique")
        for column in (
            "slot",
            "error",
            "heartbeat_at",
            "flagged",
            "healed",
            "window_to",
            "window_from",
            "provider",
        ):
            batch.drop_column(column)
