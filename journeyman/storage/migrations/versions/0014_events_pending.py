"""events pending: indexes of the events the dispatcher has still to hand over

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 15:30:00.000000

The dispatcher reads the undispatched, unparked events in id order, a page at a time
(journeyman/events/dispatcher.py), and when it leases customers, their pending events
(journeyman/events/claims.py). Both walked the index of `parked_at` on SQLite (every event
but the parked ones), reads that grew with the table; with these partial indexes, of
the pending events only, in id order and by customer, they read the pending events alone.
The indexes of `dispatched_at` and `parked_at`, which SQLite's planner took for those
reads, go: the parked events (`journeyman events failed`) get a partial index of their
own, and nothing reads events by `dispatched_at` alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("dispatched_at IS NULL AND parked_at IS NULL")
PARKED = sa.text("parked_at IS NOT NULL")
INDEXES = {"ix_events_pending": ["id"], "ix_events_pending_customer": ["customer_id", "id"]}
PLAIN = {"ix_events_dispatched_at": ["dispatched_at"], "ix_events_parked_at": ["parked_at"]}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "events", columns, postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index(
        "ix_events_parked", "events", ["parked_at"], postgresql_where=PARKED, sqlite_where=PARKED
    )
    for name in PLAIN:
        op.drop_index(name, table_name="events")


def downgrade() -> None:
    for name, columns in PLAIN.items():
        op.create_index(name, "events", columns)
    for name in [*INDEXES, "ix_events_parked"]:
        op.drop_index(name, table_name="events")
