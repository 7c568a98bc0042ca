"""Initial schema: conversations, turns, rounds and votes.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.Integer(), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("backend", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("given", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ttft", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name=op.f("fk_turns_conversation_id_conversations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_turns")),
        sa.UniqueConstraint("conversation_id", "position", name=op.f("uq_turns_conversation_id_position")),
    )
    op.create_table(
        "rounds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("round_index", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=512), nullable=False),
        sa.Column("adapter", sa.String(length=512), nullable=True),
        sa.Column("critique", sa.Text(), nullable=False),
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("nothing_to_fix", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ttft", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Integer(), nullable=False),
        _created_at(),
        sa.CheckConstraint("status IN ('complete', 'failed', 'cancelled')", name=op.f("ck_rounds_status")),
        sa.CheckConstraint("round_index >= 1", name=op.f("ck_rounds_round_index_positive")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], name=op.f("fk_rounds_turn_id_turns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rounds")),
        sa.UniqueConstraint("turn_id", "round_index", name=op.f("uq_rounds_turn_id_round_index")),
    )
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("left_round", sa.Integer(), nullable=False),
        sa.Column("right_round", sa.Integer(), nullable=False),
        sa.Column("choice", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("voter_hash", sa.String(length=128), nullable=True),
        _created_at(),
        sa.CheckConstraint("choice IN ('left', 'right', 'tie', 'both_bad')", name=op.f("ck_votes_choice")),
        sa.CheckConstraint("left_round <> right_round", name=op.f("ck_votes_rounds_differ")),
        sa.CheckConstraint("left_round >= 0 AND right_round >= 0", name=op.f("ck_votes_rounds_non_negative")),
        sa.ForeignKeyConstraint(["turn_id"], ["turns.id"], name=op.f("fk_votes_turn_id_turns"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint("key", name=op.f("uq_votes_key")),
    )
    op.create_index(op.f("ix_votes_turn_id_left_round_right_round_choice"), "votes",
                    ["turn_id", "left_round", "right_round", "choice"])


def downgrade() -> None:
    op.drop_index(op.f("ix_votes_turn_id_left_round_right_round_choice"), table_name="votes")
    op.drop_table("votes")
    op.drop_table("rounds")
    op.drop_table("turns")
    op.drop_table("conversations")
