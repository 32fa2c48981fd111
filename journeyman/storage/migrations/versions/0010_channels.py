"""channels: inbox messages and WhatsApp customer-service windows

Revision ID: 0010
Revises: 0007
Create Date: 2026-12-07 05:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0010"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inbox_messages",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("delivery_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("link", sa.Text(), nullable=True),
        sa.Column("image", sa.Text(), nullable=True),
        sa.Column(
            "created_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("read_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id"),
    )
    op.create_index(
        "ix_inbox_customer_created", "inbox_messages", ["customer_id", "created_at"], unique=False
    )
    op.create_table(
        "whatsapp_windows",
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "last_inbound_at",
            journeyman.storage.models.UTCDateTime(timezone=True),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("address_hash"),
    )


def downgrade() -> None:
    op.drop_table("whatsapp_windows")
    op.drop_index("ix_inbox_customer_created", table_name="inbox_messages")
    op.drop_table("inbox_messages")
