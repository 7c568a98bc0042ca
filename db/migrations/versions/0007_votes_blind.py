"""Blind votes and the Arena: `votes.blind` says whether the voter knew which version was which
(false for every vote stored before: they were cast beside the Refinement panel, which names the
versions), and `votes.right_turn_id` lets a vote compare two turns' revisions of the same prompt
(two CnR models, in the Arena). The statistics index leads with `blind`, so blind and other votes
are each aggregated in index order, and covers `right_turn_id`, which the per-round statistics
leave out.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OLD_INDEX = ["turn_id", "high_round", "left_round", "right_round", "high_score"]
NEW_INDEX = "ix_votes_stats"
NEW_INDEX_COLUMNS = ["blind", "turn_id", "high_round", "left_round", "right_round", "high_score", "right_turn_id"]
OLD_ROUNDS_DIFFER = "left_round <> right_round"
NEW_ROUNDS_DIFFER = "left_round <> right_round OR right_turn_id IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        batch.add_column(sa.Column("blind", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("right_turn_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_votes_right_turn_id_turns"), "turns", ["right_turn_id"], ["id"],
                                 ondelete="CASCADE")
        batch.drop_constraint(op.f("ck_votes_rounds_differ"), type_="check")
        batch.create_check_constraint(op.f("ck_votes_rounds_differ"), NEW_ROUNDS_DIFFER)
        batch.create_check_constraint(op.f("ck_votes_right_turn_other"),
                                      "right_turn_id IS NULL OR right_turn_id <> turn_id")
        batch.drop_index(op.f("ix_votes_" + "_".join(OLD_INDEX)))
        batch.create_index(NEW_INDEX, NEW_INDEX_COLUMNS)


def downgrade() -> None:
    # A vote across two turns has no place in the old schema: it goes (blind votes of one turn
    # stay, as votes).
    op.execute("DELETE FROM votes WHERE right_turn_id IS NOT NULL")
    with op.batch_alter_table("votes") as batch:
        batch.drop_index(NEW_INDEX)
        batch.drop_constraint(op.f("ck_votes_right_turn_other"), type_="check")
        batch.drop_constraint(op.f("ck_votes_rounds_differ"), type_="check")
        batch.create_check_constraint(op.f("ck_votes_rounds_differ"), OLD_ROUNDS_DIFFER)
        batch.drop_constraint(op.f("fk_votes_right_turn_id_turns"), type_="foreignkey")
        batch.drop_column("right_turn_id")
        batch.drop_column("blind")
        batch.create_index(op.f("ix_votes_" + "_".join(OLD_INDEX)), OLD_INDEX)
