"""Feedback: written critiques and edited answers for one version of a turn's answer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("round_index", sa.Integer(), nullable=False),
        sa.Column("critique", sa.Text(), nullable=True),
        sa.Column("edited_answer", sa.Text(), nullable=True),
        sa.Column("voter_hash", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("critique IS NOT NULL OR edited_answer IS NOT NULL",
                           name=op.f("ck_feedback_has_content")),
        sa.CheckConstraint("round_index >= 0", name=op.f("ck_feedback_round_index_non_negative")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], name=op.f("fk_feedback_turn_id_turns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback")),
    )
    op.create_index(op.f("ix_feedback_turn_id"), "feedback", ["turn_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_feedback_turn_id"), table_name="feedback")
    op.drop_table("feedback")
