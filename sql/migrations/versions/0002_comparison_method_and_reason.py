"""comparisons: the comparison method and the reason of a verdict ("not enough repetitions",
"insufficient data", or the repetitions a decision would need).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

Frozen like every migration: plain SQLAlchemy types only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.add_column(sa.Column("method", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("comparisons") as batch:
        batch.drop_column("reason")
        batch.drop_column("method")
