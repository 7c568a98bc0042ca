"""votes.high_round (the later of the two versions compared) and a statistics index on it,
so win rates group votes by (turn, round) in index order instead of sorting them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

HIGH_ROUND_SQL = "CASE WHEN left_round > right_round THEN left_round ELSE right_round END"
OLD_INDEX = ["turn_id", "left_round", "right_round", "choice"]
NEW_INDEX = ["turn_id", "high_round", "left_round", "right_round", "choice"]


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("high_round", sa.Integer(), nullable=True))
    op.execute(f"UPDATE votes SET high_round = {HIGH_ROUND_SQL}")
    with op.batch_alter_table("votes") as batch:
        batch.alter_column("high_round", existing_type=sa.Integer(), nullable=False)
        batch.create_check_constraint(op.f("ck_votes_high_round_is_max"), f"high_round = {HIGH_ROUND_SQL}")
        batch.drop_index(op.f("ix_votes_" + "_".join(OLD_INDEX)))
        batch.create_index(op.f("ix_votes_" + "_".join(NEW_INDEX)), NEW_INDEX)


def downgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.drop_index(op.f("ix_votes_" + "_".join(NEW_INDEX)))
        batch.drop_constraint(op.f("ck_votes_high_round_is_max"), type_="check")
        batch.drop_column("high_round")
        batch.create_index(op.f("ix_votes_" + "_".join(OLD_INDEX)), OLD_INDEX)
