"""request keys on operations and orders

A retried request (same Idempotency-Key) finds the operation or order its first attempt
committed, so it resumes that work instead of starting a second one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payment_transactions") as batch:
        batch.add_column(sa.Column("request_key", sa.String(length=64), nullable=True))
        batch.create_index(
            "ix_payment_transactions_request_key", ["payment_id", "request_key"], unique=False
        )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("request_key", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("request_key")
    with op.batch_alter_table("payment_transactions") as batch:
        batch.drop_index("ix_payment_transactions_request_key")
        batch.drop_column("request_key")
