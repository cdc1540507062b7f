"""provider_call_audit: one row per outbound provider call attempt

Revision ID: 0005
Revises: 0004

Written by the resilient call layer (adapters/providers/resilient.py), outside the use cases'
transactions; listed by `GET /api/v1/admin/payments/{payment_id}/provider-calls`. No foreign key
to payments: an audit row is kept whatever happens to the rest.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tillpoint.adapters.db.tables

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "provider_call_audit",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=True),
        sa.Column("idempotency_key", sa.String(length=128), nullable=True),
        sa.Column("provider_request_id", sa.String(length=255), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("correlation_id", sa.String(length=128), nullable=True),
        sa.Column("request_body", sa.JSON(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column(
            "created_at", tillpoint.adapters.db.tables.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_call_audit")),
    )
    with op.batch_alter_table("provider_call_audit", schema=None) as batch_op:
        batch_op.create_index(
            "ix_provider_call_audit_payment", ["payment_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("provider_call_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_provider_call_audit_payment")
    op.drop_table("provider_call_audit")
