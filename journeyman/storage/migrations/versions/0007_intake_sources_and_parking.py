"""intake: parked events, the key class an event came with, identified customers

Revision ID: 0007
Revises: 0003
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0007"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(
            sa.Column("parked_at", journeyman.storage.models.UTCDateTime(timezone=True))
        )
        batch.add_column(sa.Column("source", sa.String(length=10)))
        batch.create_index("ix_events_parked_at", ["parked_at"], unique=False)
    with op.batch_alter_table("customers") as batch:
        batch.add_column(
            sa.Column("identified_at", journeyman.storage.models.UTCDateTime(timezone=True))
        )


def downgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("identified_at")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_parked_at")
        batch.drop_column("source")
        batch.drop_column("parked_at")
