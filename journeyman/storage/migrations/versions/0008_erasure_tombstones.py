"""erasure tombstones: keyed digests of erased identities

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0008"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "erasure_tombstones",
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column(
            "erased_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("digest"),
    )


def downgrade() -> None:
    op.drop_table("erasure_tombstones")
