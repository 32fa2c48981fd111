"""The journeys in force: what `Router` (journeyman/events/routing.py) enters customers into.

`Catalog` holds the live version of every journey (the release the database says is
live, journeyman/operations/releases.py; every version is registered with its templates, so a
run can always render the templates of the version it entered), and the journeys
switched off, whose passed-by entries are counted as "journey off".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from journeyman.dsl.compiler import Compiled, compile_dir
from journeyman.dsl.plan import Plan
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyVersion


class Catalog:
    """The journeys in force, by id (the live release in the API; a file's version in
    simulate and backtest), and those switched off (`off`)."""

    def __init__(self, compiled: list[Compiled], off: Sequence[Plan] = ()) -> None:
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

    @classmethod
    def from_dirs(cls, journeys_dir: Path, templates_dir: Path) -> Catalog:
        return cls(compile_dir(journeys_dir, templates_dir))

    @property
    def plans(self) -> list[Plan]:
        return [c.plan for c in self.compiled.values()]

    def entered_by(self, event_name: str) -> list[Plan]:
        return list(self._entries.get(event_name, ()))

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
