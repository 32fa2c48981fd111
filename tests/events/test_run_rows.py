"""A run's row in `journey_runs` when the run ends before the router has recorded it.

The router records an entry just after Temporal accepted the start; a run with nothing
to wait for (a holdout customer of a one-send broadcast) can end, and its last record
close the row, first. Either order must leave one row, closed, with the entry's fields.
"""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from activities.journey import JourneyActivities
from journeyman.contracts import CustomerEvent, RecordStepsInput
from journeyman.dsl.compiler import compile_file
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog, Router
from journeyman.messaging.channels import Channels
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun

STARTED = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
ENDED = STARTED + timedelta(seconds=1)


def plan(tmp_path: Path) -> Plan:
    path = tmp_path / "quick.yaml"
    path.write_text(
        textwrap.dedent(
            """
            id: quick
            name: Quick
            entry: {event: signed_up, key: "event.properties.list"}
            steps:
              - {id: done, end: true}
            """
        )
    )
    return compile_file(path, tmp_path).plan


def close(db: Database, plan: Plan) -> None:
    """The run's last record, as the workflow sends it when it ends."""
    JourneyActivities(db, Channels()).record_steps(
        RecordStepsInput(
            run_id="run-1",
            journey_id=plan.journey.id,
            version=plan.version,
            customer_id="c1",
            first_seq=0,
            entries=[],
            workflow_id="quick/c1/news",
            outcome="ended",
            ended_at=ENDED,
            entry_key="news",
        )
    )


def record(db: Database, plan: Plan) -> None:
    """The router's record of the entry, as `Router.enter` makes it after the start."""
    router: Any = Router(None, db, Catalog([]), "tq")  # type: ignore[arg-type]
    event = CustomerEvent(message_id="m-1", name="signed_up", timestamp=STARTED)
    router._record_run(plan, "run-1", "quick/c1/news", "c1", "news", event, STARTED)


def rows(db: Database) -> list[tuple[Any, ...]]:
    with db.session() as session:
        return [
            (r.run_id, r.status, r.outcome, r.entry_key, r.trigger_message_id, r.started_at)
            for r in session.query(JourneyRun)
        ]


EXPECTED = [("run-1", "completed", "ended", "news", "m-1", STARTED)]


def test_a_run_recorded_then_closed_has_one_closed_row(db: Database, tmp_path: Path) -> None:
    journey = plan(tmp_path)
    record(db, journey)
    close(db, journey)

    assert rows(db) == EXPECTED


def test_a_run_closed_before_it_was_recorded_has_one_closed_row(
    db: Database, tmp_path: Path
) -> None:
    journey = plan(tmp_path)
    close(db, journey)
    assert rows(db) == [("run-1", "completed", "ended", "news", None, ENDED)]

    record(db, journey)
    close(db, journey)  # a retried close changes nothing

    assert rows(db) == EXPECTED


def test_a_run_closed_while_it_was_being_recorded_has_one_closed_row(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The close commits between the router's read (no row yet) and its insert.
    journey = plan(tmp_path)
    real_get = Session.get
    reads = 0

    def get(session: Session, entity: Any, ident: Any, **kw: Any) -> Any:
        nonlocal reads
        if entity is JourneyRun and reads >= 0:
            reads += 1
            if reads == 1:
                reads = -1  # the close's own reads are not the router's
                close(db, journey)
                reads = 1
                return None
        return real_get(session, entity, ident, **kw)

    monkeypatch.setattr(Session, "get", get)
    record(db, journey)

    assert reads == 2  # read again after the insert failed
    assert rows(db) == EXPECTED
