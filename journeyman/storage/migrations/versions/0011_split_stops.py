"""split stops: cases of an optimized split an operator stopped

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-07 05:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0011"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "split_stops",
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("goto", sa.String(length=100), nullable=False),
        sa.Column("stopped_by", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("journey_id", "step_id", "goto"),
    )


def downgrade() -> None:
    op.drop_table("split_stops")
