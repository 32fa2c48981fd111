"""intake: parked events, the key class an event came with, identified customers,
contact points awaiting confirmation, dispatch leases and entry claims

Revision ID: 0007
Revises: 0008
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import journeyman.storage.models

revision: str = "0007"
down_revision: str | None = "0008"
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
    # Customers identified before this revision: a message named them as its userId.
    # Intake keys events by that id, and an anonymous visitor's own events carry its id
    # as anonymousId too (merged visitors' events were moved to the customer they joined):
    # a customer with an event not sent as their own anonymous id was identified.
    op.execute(
        "UPDATE customers SET identified_at = created_at WHERE merged_into IS NULL AND "
        "EXISTS (SELECT 1 FROM events WHERE events.customer_id = customers.id AND "
        "(events.anonymous_id IS NULL OR events.anonymous_id <> customers.id))"
    )
    op.create_table(
        "contact_confirmations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column(
            "requested_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("confirmed_at", journeyman.storage.models.UTCDateTime(timezone=True)),
        sa.Column("confirmed_by", sa.String(length=20)),
        sa.Column("delivery_id", sa.Integer()),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("customer_id", "channel", "address", name="uq_contact_confirmation"),
    )
    op.create_index(
        op.f("ix_contact_confirmations_customer_id"),
        "contact_confirmations",
        ["customer_id"],
        unique=False,
    )

    op.create_table(
        "dispatch_leases",
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("until", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("customer_id"),
    )
    op.create_table(
        "entry_claims",
        sa.Column("journey_id", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column(
            "claimed_at", journeyman.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("journey_id", "message_id"),
    )


def downgrade() -> None:
    op.drop_table("entry_claims")
    op.drop_table("dispatch_leases")
    op.drop_index(op.f("ix_contact_confirmations_customer_id"), table_name="contact_confirmations")
    op.drop_table("contact_confirmations")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("identified_at")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_parked_at")
        batch.drop_column("source")
        batch.drop_column("parked_at")
