"""entry errors: events whose entry condition or key failed to evaluate

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 21:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entry_errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("journey_id", "message_id", name="uq_entry_error_journey_message"),
    )
    op.create_index(
        op.f("ix_entry_errors_customer_id"), "entry_errors", ["customer_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_entry_errors_customer_id"), table_name="entry_errors")
    op.drop_table("entry_errors")
