"""The journeys in force: what `Router` (journeyman/events/routing.py) enters customers into.

`Catalog` holds the live version of every journey (the release the database says is
live, journeyman/operations/releases.py; every version is registered with its templates, so a
run can always render the templates of the version it entered), and the journeys
switched off, whose passed-by entries are counted as "journey off".

`Catalog.hears` tells intake whether an event name can matter to any journey: an event
that enters none, is passed by by none switched off, converts no goal window and is
waited for by no version ever registered (the live ones and those runs may still be
on) is stored handed over, and the dispatcher never reads it (issue 19: many of a
retailer's events, page views, searches, clicks, are in no journey).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select

from journeyman.dsl.compiler import Compiled, compile_dir
from journeyman.dsl.plan import Plan
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyVersion


class Catalog:
    """The journeys in force, by id (the live release in the API; a file's version in
    simulate and backtest), and those switched off (`off`)."""

    def __init__(
        self,
        compiled: list[Compiled],
        off: Sequence[Plan] = (),
        listened: frozenset[str] | None = None,
    ) -> None:
        """`listened`: the event names every version ever registered listens for
        (`registered_listens`); without it, `hears` answers yes to every name."""
        self.compiled = {c.plan.journey.id: c for c in compiled}
        # Journeys switched off (journeyman/operations/releases.py): entries they pass by
        # are counted.
        self._off: dict[str, list[Plan]] = {}
        for plan in off:
            if plan.journey.entry.event is not None:
                self._off.setdefault(plan.journey.entry.event, []).append(plan)
        self._plans: dict[tuple[str, str], Plan] = {
            (c.plan.journey.id, c.plan.version): c.plan for c in compiled
        }
        # Looked up for every event routed: by name, not by a walk over every journey.
        self._entries: dict[str, list[Plan]] = {}
        for c in self.compiled.values():
            if c.plan.journey.entry.event is not None:  # None: entered by a segment
                self._entries.setdefault(c.plan.journey.entry.event, []).append(c.plan)
        # What the router reacts to besides entries (journeyman/events/routing.py
        # `Router.route`): what runs listen for, a goal's event among it (so a goal
        # counted within its window after a run ended too).
        self._heard: frozenset[str] | None = None
        if listened is not None:
            live = {name for c in self.compiled.values() for name in c.plan.listens}
            self._heard = frozenset({*listened, *live, *self._entries, *self._off})

    @classmethod
    def from_dirs(cls, journeys_dir: Path, templates_dir: Path) -> Catalog:
        return cls(compile_dir(journeys_dir, templates_dir))

    @property
    def plans(self) -> list[Plan]:
        return [c.plan for c in self.compiled.values()]

    def entered_by(self, event_name: str) -> list[Plan]:
        return list(self._entries.get(event_name, ()))

    def hears(self, event_name: str | None) -> bool:
        """Whether routing an event of this name could do anything (enter a customer,
        count a journey switched off passing them by, reach a running run of any
        version, convert a goal within its window). No only when the catalog knows what
        every registered version listens for; the router's own checks stay as they are."""
        return self._heard is None or event_name in self._heard

    def switched_off(self, event_name: str) -> list[Plan]:
        """The switched-off journeys `event_name` would enter."""
        return list(self._off.get(event_name, ()))

    def register(self, db: Database) -> None:
        """Store each version with its templates (idempotent): runs render from here."""
        with db.session() as session:
            for c in self.compiled.values():
                key = {"journey_id": c.plan.journey.id, "version": c.plan.version}
                if session.get(JourneyVersion, key) is None:
                    session.add(
                        JourneyVersion(
                            **key, plan=c.plan.model_dump(mode="json"), templates=c.templates
                        )
                    )

    def plan(self, db: Database, journey_id: str, version: str) -> Plan | None:
        """Any version ever registered, current or not (running runs of old versions)."""
        key = (journey_id, version)
        if key not in self._plans:
            with db.session() as session:
                row = session.get(JourneyVersion, {"journey_id": journey_id, "version": version})
            if row is None:
                return None
            self._plans[key] = Plan.model_validate(row.plan)
        return self._plans[key]


# Each registered version's `listens`, by (journey id, version): versions never change,
# so a process reads each one's plan once, however often it loads the catalog.
_LISTENS: dict[tuple[str, str], tuple[str, ...]] = {}
_LISTENS_LOCK = threading.Lock()


def registered_listens(db: Database) -> frozenset[str]:
    """The event names any version ever registered listens for (goal, exit, wait_for):
    what a run still going on an old version may wait for."""
    table = JourneyVersion.__table__
    with db.engine.connect() as connection:
        keys = [
            (row.journey_id, row.version)
            for row in connection.execute(select(table.c.journey_id, table.c.version))
        ]
        with _LISTENS_LOCK:
            missing = {key for key in keys if key not in _LISTENS}
        if missing:  # the first load reads every plan once; later ones the new versions
            rows = connection.execute(select(table.c.journey_id, table.c.version, table.c.plan))
            found = {
                (row.journey_id, row.version): tuple(row.plan.get("listens") or ())
                for row in rows
                if (row.journey_id, row.version) in missing
            }
            with _LISTENS_LOCK:
                _LISTENS.update(found)
    with _LISTENS_LOCK:
        return frozenset(name for key in keys for name in _LISTENS.get(key, ()))
