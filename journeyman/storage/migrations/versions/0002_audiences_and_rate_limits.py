"""audiences and provider rate limits

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audience_ticks",
        sa.Column("tick_id", sa.String(length=400), nullable=False),
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("evaluated", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("entered", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("error_samples", sa.JSON(), nullable=False),
        sa.Column(
            "started_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "finished_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.PrimaryKeyConstraint("tick_id"),
    )
    with op.batch_alter_table("audience_ticks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audience_ticks_journey_id"), ["journey_id"], unique=False
        )

    op.create_table(
        "rate_limits",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column(
            "next_slot_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("provider"),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "rate_slot_at",
                journeyman.storage.models.UTCDateTime(timezone=True),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_column("rate_slot_at")
    op.drop_table("rate_limits")
    with op.batch_alter_table("audience_ticks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audience_ticks_journey_id"))
    op.drop_table("audience_ticks")
