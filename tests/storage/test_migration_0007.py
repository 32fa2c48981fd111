"""Migration 0007 marks the customers identified before it, so that client keys cannot
merge those either (docs/api.md, *Keys*)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from journeyman.storage import migrate
from journeyman.storage.db import Database


def test_customers_named_as_a_user_id_before_0007_count_as_identified(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/m.db")
    migrate.upgrade(db, "0003")
    now = "2026-01-01 00:00:00.000000"
    with db.engine.begin() as connection:
        for customer, merged_into in (("known", None), ("visitor", None), ("joined", "known")):
            connection.execute(
                text(
                    "INSERT INTO customers (id, push_tokens, traits, merged_into, created_at, "
                    "updated_at) VALUES (:id, '[]', '{}', :merged, :now, :now)"
                ),
                {"id": customer, "merged": merged_into, "now": now},
            )
        events = (
            ("e1", "known", None),  # sent with userId only
            ("e2", "known", "joined"),  # the visitor's event, moved on login
            ("e3", "visitor", "visitor"),  # an anonymous visitor's own
        )
        for message_id, customer, anonymous in events:
            connection.execute(
                text(
                    "INSERT INTO events (message_id, type, customer_id, anonymous_id, name, "
                    "properties, timestamp, received_at, attempts) VALUES (:m, 'track', :c, "
                    ":a, 'x', '{}', :now, :now, 0)"
                ),
                {"m": message_id, "c": customer, "a": anonymous, "now": now},
            )
    migrate.upgrade(db)
    with db.engine.connect() as connection:
        rows = dict(connection.execute(text("SELECT id, identified_at FROM customers")).all())
    assert rows["known"] is not None
    assert rows["visitor"] is None
    assert rows["joined"] is None
    db.dispose()
