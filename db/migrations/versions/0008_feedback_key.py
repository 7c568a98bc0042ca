"""Feedback is stored once: `feedback.key` is a digest of the turn, the version and the texts
(db.store.feedback_key), unique, so saving the same feedback twice keeps one record. Rows stored
before get their key; of identical ones stored twice before, the first keeps it and the others
stay, without a key (nothing collected is deleted).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-12
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _key(turn_id: int, round_index: int, critique: str | None, edited_answer: str | None) -> str:
    """db.store.feedback_key as of this revision (a migration keeps its own copy)."""
    data = json.dumps([turn_id, round_index, critique, edited_answer], ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8", "surrogatepass")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("key", sa.String(length=64), nullable=True))
    feedback = sa.table("feedback", sa.column("id", sa.Integer), sa.column("turn_id", sa.Integer),
                        sa.column("round_index", sa.Integer), sa.column("critique", sa.Text),
                        sa.column("edited_answer", sa.Text), sa.column("key", sa.String))
    connection = op.get_bind()
    seen: set[str] = set()
    rows = connection.execute(sa.select(feedback.c.id, feedback.c.turn_id, feedback.c.round_index,
                                        feedback.c.critique, feedback.c.edited_answer).order_by(feedback.c.id))
    for row in rows.all():
        key = _key(row.turn_id, row.round_index, row.critique, row.edited_answer)
        if key not in seen:
            seen.add(key)
            connection.execute(sa.update(feedback).where(feedback.c.id == row.id).values(key=key))
    with op.batch_alter_table("feedback") as batch:
        batch.create_unique_constraint(op.f("uq_feedback_key"), ["key"])


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_constraint(op.f("uq_feedback_key"), type_="unique")
        batch.drop_column("key")
