"""payments.payment_number: a unique numeric id per payment

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:00:00

PostgreSQL draws new numbers from the sequence `payments_payment_number_seq`; SQLite assigns
max + 1 inside its single write transaction (see tables.py). Existing payments are numbered in
the order they were created.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SEQUENCE = "payments_payment_number_seq"


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(sa.schema.CreateSequence(sa.Sequence(SEQUENCE)))
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payment_number", sa.BigInteger(), nullable=True))
    if postgres:
        op.execute(
            f"UPDATE payments SET payment_number = numbered.n FROM ("  # noqa: S608
            f"SELECT payment_id, nextval('{SEQUENCE}') AS n FROM "
            f"(SELECT payment_id FROM payments ORDER BY created_at, payment_id) AS ordered"
            f") AS numbered WHERE payments.payment_id = numbered.payment_id"
        )
    else:
        op.execute(
            "UPDATE payments SET payment_number = (SELECT count(*) FROM payments AS earlier "
            "WHERE earlier.created_at < payments.created_at OR (earlier.created_at = "
            "payments.created_at AND earlier.payment_id <= payments.payment_id))"
        )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_payments_payment_number"), ["payment_number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_payments_payment_number"), type_="unique")
        batch_op.drop_column("payment_number")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.schema.DropSequence(sa.Sequence(SEQUENCE)))
