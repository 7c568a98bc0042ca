"""CnR formats: each round stores the format version it was generated in (`cnr-v1` for the
`rewrite` format, `edits-v1` for `edits`; NULL on rounds stored before) and, in the `edits`
format, its edits (refine.edits.Edit as JSON, applied or dropped).

Revision ID: 0006
Revises: 0005a
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005a"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.add_column(sa.Column("cnr_format", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("edits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rounds") as batch:
        batch.drop_column("edits")
        batch.drop_column("cnr_format")
