"""How intake stores a call's messages (journeyman/events/intake.py `_store`): events go in as
multi-row inserts, not one ORM object each, and still keep the guarantees of one by
one: ids in the order of the messages (the dispatcher hands each customer's events over
in that order), an identify's `trait_changed` right after it, a merge re-keying the
events stored before it in the same call, and duplicates stored once. Runs on SQLite
and, on the PostgreSQL pass, on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from journeyman.customers import traits
from journeyman.customers.traits import TRAIT_CHANGED
from journeyman.events.intake import Incoming, accept
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

WHEN = datetime(2026, 12, 7, 6, tzinfo=UTC)


def message(kind: str, message_id: str, **fields: object) -> Incoming:
    return Incoming(type=kind, message_id=message_id, timestamp=WHEN, **fields)  # type: ignore[arg-type]


def events(db: Database) -> list[tuple[str, str, str | None]]:
    with db.session() as session:
        rows = session.execute(
            select(Event.message_id, Event.customer_id, Event.name).order_by(Event.id)
        )
        return [(m, c, n) for m, c, n in rows]


def test_one_call_stores_its_events_in_order_with_trait_changes_after_their_identify(
    db: Database,
) -> None:
    accept(db, [message("identify", "i0", user_id="u1", traits={"tier": "silver"})])
    result = accept(
        db,
        [
            message("track", "t1", user_id="u1", name="viewed"),
            message("identify", "i1", user_id="u1", traits={"tier": "gold"}),
            message("track", "t2", user_id="u1", name="bought"),
            message("track", "t1", user_id="u1", name="viewed"),  # a duplicate
            message("track", "t3", anonymous_id="anon", name="browsed"),
        ],
    )
    assert (result.stored, result.duplicates) == (4, 1)
    # t1, t2, t3 and the trait change wait for the dispatcher; identifies do not.
    assert result.to_dispatch == 4
    assert events(db) == [
        ("i0", "u1", None),
        (traits.message_id("i0", "tier"), "u1", TRAIT_CHANGED),
        ("t1", "u1", "viewed"),
        ("i1", "u1", None),
        (traits.message_id("i1", "tier"), "u1", TRAIT_CHANGED),
        ("t2", "u1", "bought"),
        ("t3", "anon", "browsed"),
    ]


def test_a_merge_in_a_call_rekeys_the_events_stored_before_it_in_that_call(
    db: Database,
) -> None:
    accept(
        db,
        [
            message("track", "a1", anonymous_id="anon", name="browsed"),
            message("track", "a2", anonymous_id="anon", name="carted"),
            message("identify", "login", user_id="u9", anonymous_id="anon", traits={}),
            message("track", "a3", anonymous_id="anon", name="paid"),
        ],
    )
    assert [(m, c) for m, c, _ in events(db)] == [
        ("a1", "u9"),
        ("a2", "u9"),
        ("login", "u9"),
        ("a3", "u9"),  # the merged anonymous id's later events go to the customer
    ]
    with db.session() as session:
        anonymous = session.get(Customer, "anon")
        assert anonymous is not None and anonymous.merged_into == "u9"


def test_new_and_known_customers_of_one_call_are_each_created_once(db: Database) -> None:
    accept(db, [message("track", "k0", user_id="known", name="x")])
    accept(
        db,
        [
            message("track", f"m{n}", user_id=f"c{n % 3}" if n % 2 else "known", name="x")
            for n in range(12)
        ],
    )
    with db.session() as session:
        ids = sorted(session.scalars(select(Customer.id)))
        identified = session.scalars(
            select(Customer.id).where(Customer.identified_at.is_not(None))
        ).all()
    assert ids == ["c0", "c1", "c2", "known"]
    assert sorted(identified) == ids
    assert len(events(db)) == 13
