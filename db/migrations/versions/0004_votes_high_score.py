"""votes.high_score: the later version's points in the vote (2 won, 1 tie, 0 lost, NULL both
bad), in the statistics index instead of `choice`, so win rates sum a stored integer instead
of evaluating the choice against the placement for every vote (2-3x faster on 1M votes).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

HIGH_SCORE_SQL = ("CASE WHEN choice = 'tie' THEN 1 WHEN choice = CASE WHEN left_round > right_round"
                  " THEN 'left' ELSE 'right' END THEN 2 ELSE 0 END")
OLD_INDEX = ["turn_id", "high_round", "left_round", "right_round", "choice"]
NEW_INDEX = ["turn_id", "high_round", "left_round", "right_round", "high_score"]


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("high_score", sa.Integer(), nullable=True))
    op.execute(f"UPDATE votes SET high_score = {HIGH_SCORE_SQL} WHERE choice <> 'both_bad'")
    with op.batch_alter_table("votes") as batch:
        batch.create_check_constraint(
            op.f("ck_votes_high_score_matches"),
            f"(choice = 'both_bad' AND high_score IS NULL) OR (choice <> 'both_bad' AND "
            f"high_score IS NOT NULL AND high_score = {HIGH_SCORE_SQL})")
        batch.drop_index(op.f("ix_votes_" + "_".join(OLD_INDEX)))
        batch.create_index(op.f("ix_votes_" + "_".join(NEW_INDEX)), NEW_INDEX)


def downgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.drop_index(op.f("ix_votes_" + "_".join(NEW_INDEX)))
        batch.drop_constraint(op.f("ck_votes_high_score_matches"), type_="check")
        batch.drop_column("high_score")
        batch.create_index(op.f("ix_votes_" + "_".join(OLD_INDEX)), OLD_INDEX)
