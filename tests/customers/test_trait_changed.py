"""`trait_changed` (journey DSL v2): an identify or an update_profile step that changes a
trait stores one routed track event per changed trait, with `trait`, `old` and `new`,
under a message id derived from the source and the trait, so nothing is stored twice."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from journeyman.contracts import CustomerEvent
from journeyman.customers import traits
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.intake import Incoming, accept
from journeyman.events.routing import RouteResult
from journeyman.storage.db import Database
from journeyman.storage.models import Event

AT = datetime(2026, 11, 30, 12, tzinfo=UTC)


def identify(message_id: str, **values: Any) -> Incoming:
    return Incoming(
        type="identify", message_id=message_id, timestamp=AT, user_id="c1", traits=values
    )


def changes(db: Database) -> list[tuple[str, dict[str, Any], bool]]:
    """(message id, properties, routed yet) of every stored trait_changed, in order."""
    with db.session() as session:
        rows = session.scalars(
            select(Event).where(Event.name == "trait_changed").order_by(Event.id)
        ).all()
        assert all(row.type == "track" for row in rows)
        return [(row.message_id, row.properties, row.dispatched_at is not None) for row in rows]


def test_changes_compare_values_not_spellings() -> None:
    before = {"tier": "silver", "points": 1, "vip": True, "plan": "pro", "gone": "x"}
    after = {"tier": "gold", "points": 1.0, "vip": 1, "plan": "pro", "gone": None}

    assert traits.changes(before, after) == [
        traits.TraitChange("gone", "x", None),
        traits.TraitChange("tier", "silver", "gold"),
        traits.TraitChange("vip", True, 1),
    ]


def test_an_identify_stores_one_routed_event_per_changed_trait(db: Database) -> None:
    accept(db, [identify("m1", tier="silver", email="ana@example.com")])
    accept(db, [identify("m2", tier="gold", email="ana@example.com", first_name="Ana")])

    stored = changes(db)

    # Contact fields (email, phone, timezone, locale) are no traits: no event for them.
    assert [props for _, props, _ in stored] == [
        {"trait": "tier", "old": None, "new": "silver"},
        {"trait": "first_name", "old": None, "new": "Ana"},
        {"trait": "tier", "old": "silver", "new": "gold"},
    ]
    assert not any(routed for _, _, routed in stored)  # left for the dispatcher
    assert stored[2][0] == traits.message_id("m2", "tier")


def test_the_same_value_again_and_a_retried_identify_store_nothing(db: Database) -> None:
    accept(db, [identify("m1", tier="gold")])
    accept(db, [identify("m1", tier="gold")])  # a retry: the same message id
    accept(db, [identify("m2", tier="gold")])  # no change

    assert [props for _, props, _ in changes(db)] == [{"trait": "tier", "old": None, "new": "gold"}]


def test_clearing_a_trait_is_a_change_to_null(db: Database) -> None:
    accept(db, [identify("m1", tier="gold"), identify("m2", tier=None)])

    assert [props["new"] for _, props, _ in changes(db)] == ["gold", None]


class _Recorder:
    def __init__(self) -> None:
        self.routed: list[tuple[str, str, dict[str, Any]]] = []

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        self.routed.append((customer_id, event.name, event.properties))
        return RouteResult()


async def test_the_dispatcher_routes_them_like_track_events(db: Database) -> None:
    accept(db, [identify("m1", tier="gold")])
    router = _Recorder()

    await Dispatcher(db, router).dispatch_pending()  # type: ignore[arg-type]
    await Dispatcher(db, router).dispatch_pending()  # type: ignore[arg-type]

    assert router.routed == [("c1", "trait_changed", {"trait": "tier", "old": None, "new": "gold"})]
    assert [routed for _, _, routed in changes(db)] == [True]
