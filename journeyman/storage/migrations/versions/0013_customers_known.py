"""customers known: an index of the customer ids that are customers of their own

Revision ID: 0013
Revises: 0011
Create Date: 2026-12-07 13:00:00.000000

A segment tick walks the customers not merged into another in id order, in windows of
ids it counts (journeyman/audiences/segments.py). With this partial index, counting a
window reads the index alone, not every profile row.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KNOWN = sa.text("merged_into IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_customers_known",
        "customers",
        ["id"],
        postgresql_where=KNOWN,
        sqlite_where=KNOWN,
    )


def downgrade() -> None:
    op.drop_index("ix_customers_known", table_name="customers")
