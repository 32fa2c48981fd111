"""Parked events: after 10 failed hand-overs an event is kept aside, never dropped, and
its customer's later events go on; `journeyman events failed|retry` and the metric."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.events import parked
from journeyman.events.dispatcher import MAX_ATTEMPTS
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import Event
from tests.api.support import FakeClock
from tests.events.test_dispatcher import Recorder, dispatcher, store


async def park(db: Database, router: Recorder, clock: FakeClock) -> Any:
    """Passes until the dispatcher has nothing left to try; returns the last report."""
    d = dispatcher(db, router, clock=clock, retry_max=timedelta(seconds=1))
    for _ in range(MAX_ATTEMPTS + 2):
        report = await d.dispatch_pending()
        clock.advance(timedelta(seconds=2))
    return report, d


def event(db: Database, message_id: str) -> Event:
    with db.session() as session:
        found = session.scalar(select(Event).where(Event.message_id == message_id))
        assert found is not None
        return found


async def test_a_poison_event_is_parked_after_10_tries_and_the_customer_goes_on(
    db: Database,
) -> None:
    store(db, ("c1", "c1-e0"), ("c1", "c1-e1"), ("c2", "c2-e0"), ("c1", "c1-e2"))
    router = Recorder(fail=lambda m: m == "c1-e0")
    await park(db, router, FakeClock())
    # Tried exactly MAX_ATTEMPTS times, then left alone; the rest in order, once each.
    assert router.attempts["c1"] == ["c1-e0"] * MAX_ATTEMPTS + ["c1-e1", "c1-e2"]
    assert router.routed == {"c1-e1": 1, "c1-e2": 1, "c2-e0": 1}
    poison = event(db, "c1-e0")
    assert poison.parked_at is not None
    assert poison.dispatched_at is None  # kept, not dropped
    assert poison.attempts == MAX_ATTEMPTS
    assert poison.last_error == "ConnectionError: cannot route c1-e0"
    with db.session() as session:
        [listed] = parked.listing(session)
        assert (listed.message_id, listed.customer_id) == ("c1-e0", "c1")
        assert parked.count(session) == 1


async def test_retry_hands_a_parked_event_over_again(db: Database) -> None:
    store(db, ("c1", "c1-e0"), ("c1", "c1-e1"))
    broken = {"c1-e0"}
    router = Recorder(fail=lambda m: m in broken)
    clock = FakeClock()
    _report, d = await park(db, router, clock)
    assert event(db, "c1-e0").parked_at is not None
    broken.clear()  # the cause is fixed
    result = parked.retry(db, [str(event(db, "c1-e0").id), "no-such-event"])
    assert result.not_parked == ["no-such-event"]
    assert len(result.retried) == 1
    report = await d.dispatch_pending()
    assert report.dispatched == 1
    routed = event(db, "c1-e0")
    assert routed.dispatched_at is not None
    assert routed.parked_at is None
    assert router.routed["c1-e0"] == 1


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, db: Database) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db.url)
    get_settings.cache_clear()
    return CliRunner()


async def test_the_commands_list_and_retry_parked_events(db: Database, cli: CliRunner) -> None:
    store(db, ("c1", "c1-e0"), ("c2", "c2-e0"))
    await park(db, Recorder(fail=lambda _m: True), FakeClock())
    listed = cli.invoke(app, ["events", "failed"], catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    assert "c1-e0" in listed.output and "c2-e0" in listed.output
    assert "ConnectionError: cannot route c1-e0" in listed.output
    one = cli.invoke(app, ["events", "retry", "c1-e0"], catch_exceptions=False)
    assert one.exit_code == 0, one.output
    assert "1 event pending again" in one.output
    assert event(db, "c1-e0").parked_at is None
    assert event(db, "c2-e0").parked_at is not None
    unknown = cli.invoke(app, ["events", "retry", "nope"], catch_exceptions=False)
    assert unknown.exit_code == 1
    assert "nope" in unknown.output
    rest = cli.invoke(app, ["events", "retry"], catch_exceptions=False)
    assert rest.exit_code == 0 and "1 event pending again" in rest.output
    empty = cli.invoke(app, ["events", "failed"], catch_exceptions=False)
    assert empty.output.strip() == "no parked events"
    get_settings.cache_clear()
