"""goal attribution window: when a goal event converted a run after it ended

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("journey_runs") as batch:
        batch.add_column(
            sa.Column(
                "attributed_at",
                journeyman.storage.models.UTCDateTime(timezone=True),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("attributed_event", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("journey_runs") as batch:
        batch.drop_column("attributed_event")
        batch.drop_column("attributed_at")
