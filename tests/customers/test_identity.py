"""A customer and its merged ids (journeyman/customers/identity.py), both directions,
after merges made as intake makes them (journeyman/events/intake.py `merge`)."""

from __future__ import annotations

from sqlalchemy import select

from journeyman.customers import identity
from journeyman.events.intake import merge
from journeyman.storage.db import Database
from journeyman.storage.models import Customer


def merged_twice(db: Database) -> None:
    """`known` with two anonymous ids merged into it; `other` with none."""
    with db.session() as session:
        merge(session, source_id="phone", target_id="known")
        merge(session, source_id="laptop", target_id="known")
        session.add(Customer(id="other", traits={}, push_tokens=[]))


def test_the_ids_merged_into_a_customer_in_id_order(db: Database) -> None:
    merged_twice(db)
    with db.session() as session:
        assert identity.merged_ids(session, "known") == ["laptop", "phone"]
        assert identity.identities(session, "known") == ["known", "laptop", "phone"]
        assert identity.identities(session, "other") == ["other"]
        assert identity.identities(session, "nobody") == ["nobody"]


def test_the_subqueries_select_the_same_ids(db: Database) -> None:
    merged_twice(db)
    with db.session() as session:
        assert set(session.scalars(identity.merged_ids_query("known"))) == {"laptop", "phone"}
        both = select(Customer.id).where(Customer.id.in_(identity.identities_query("customer_id")))
        found = session.scalars(both, {"customer_id": "known"})
        assert set(found) == {"known", "laptop", "phone"}


def test_owners_maps_each_merged_id_to_its_customer(db: Database) -> None:
    merged_twice(db)
    with db.session() as session:
        assert identity.owners(session, ["known", "other"]) == {
            "known": "known",
            "other": "other",
            "phone": "known",
            "laptop": "known",
        }


def test_a_merged_id_points_to_the_customer_it_was_merged_into(db: Database) -> None:
    merged_twice(db)
    with db.session() as session:
        behind = identity.customer_behind(session, "phone")
        assert behind is not None and behind.id == "known"
        known = identity.customer_behind(session, "known")
        assert known is not None and known.id == "known"
        assert identity.customer_behind(session, "nobody") is None
