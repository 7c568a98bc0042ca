"""Accepting revisions: rounds may be `rejected` (an acceptance rule kept the previous answer);
each round stores its rejection rule, the generation's finish reason and its candidates (with
the selector's verdicts); each turn stores its base answer's finish reason and reasoning.

(The id is 0005a, not 0005: a database stamped with an unknown 0005 must stay "newer than this
code", see the database-newer-than-code case.)

Revision ID: 0005a
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005a"
down_revision = "0004"
branch_labels = None
depends_on = None

OLD_STATUSES = "status IN ('complete', 'failed', 'cancelled')"
NEW_STATUSES = "status IN ('complete', 'rejected', 'failed', 'cancelled')"


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("rejection", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("finish_reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
        batch.drop_constraint(op.f("ck_rounds_status"), type_="check")
        batch.create_check_constraint(op.f("ck_rounds_status"), NEW_STATUSES)
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("finish_reason", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("thinking", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM rounds WHERE status = 'rejected'")
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("thinking")
        batch.drop_column("finish_reason")
    with op.batch_alter_table("rounds") as batch:
        batch.drop_constraint(op.f("ck_rounds_status"), type_="check")
        batch.create_check_constraint(op.f("ck_rounds_status"), OLD_STATUSES)
        batch.drop_column("candidates")
        batch.drop_column("finish_reason")
        batch.drop_column("rejection")
