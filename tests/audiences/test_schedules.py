"""Segment journeys on real Temporal Schedules (the dev server: the time-skipping server
has none): kept in step with the journey files, and a broadcast that goes out once."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from temporalio.client import Client, ScheduleDescription
from temporalio.testing import WorkflowEnvironment

from journeyman.audiences import schedules
from journeyman.dsl.compiler import compile_file
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.names import schedule_id
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import AudienceTick, Customer, JourneyRun
from journeyman.wiring import build_worker, journey_activities
from tests.waiting import eventually

pytestmark = pytest.mark.slow

EMAIL = "{% block subject %}News{% endblock %}<p>Hello</p>"


def plan(root: Path, journey_id: str, entry: str, extra: str = "") -> Plan:
    (root / "templates" / "news").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "news" / "email.html").write_text(EMAIL)
    (root / "journeys").mkdir(exist_ok=True)
    path = root / "journeys" / f"{journey_id}.yaml"
    path.write_text(
        f"id: {journey_id}\nname: {journey_id.title()}\n{extra}entry:\n"
        + textwrap.indent(textwrap.dedent(entry).strip(), "  ")
        + "\nsteps:\n  - id: news\n    send: {template: news, channels: [email]}\n"
    )
    return compile_file(path, root / "templates").plan


async def mine(client: Client, task_queue: str) -> dict[str, ScheduleDescription]:
    found = {}
    for journey_id in ("lapsed", "daily", "news", "welcome"):
        description = await schedules.describe(client, journey_id, task_queue)
        if description is not None:
            found[journey_id] = description
    return found


async def test_sync_makes_one_schedule_per_segment_journey_and_keeps_them_in_step(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = local_env.client
    task_queue = f"tq-{uuid.uuid4()}"
    lapsed = plan(tmp_path, "lapsed", "segment: \"count('order_placed') == 0\"\nevery: 6h")
    daily = plan(tmp_path, "daily", 'segment: "true"\nevery: "30 9 * * mon-fri"')
    news = plan(tmp_path, "news", 'segment: "true"\nonce_at: 2099-12-04T09:00:00Z')
    welcome = plan(tmp_path, "welcome", "event: signed_up")
    plans = [lapsed, daily, news, welcome]

    created = await schedules.sync(client, plans, task_queue=task_queue, timezone="Europe/Paris")

    assert sorted(created.created) == ["daily", "lapsed", "news"]
    found = await mine(client, task_queue)
    assert set(found) == {"lapsed", "daily", "news"}
    assert found["lapsed"].schedule.spec.intervals[0].every == timedelta(hours=6)
    daily_spec = found["daily"].schedule.spec
    assert daily_spec.time_zone_name == "Europe/Paris"
    next_daily = found["daily"].info.next_action_times[0].astimezone(ZoneInfo("Europe/Paris"))
    assert (next_daily.hour, next_daily.minute) == (9, 30) and next_daily.weekday() < 5
    news_state = found["news"].schedule.state
    assert news_state.limited_actions and news_state.remaining_actions == 1
    assert found["news"].info.next_action_times[0] == datetime(2099, 12, 4, 9, 0, tzinfo=UTC)

    again = await schedules.sync(client, plans, task_queue=task_queue, timezone="Europe/Paris")
    assert (sorted(again.unchanged), again.created, again.updated) == (
        ["daily", "lapsed", "news"],
        [],
        [],
    )

    # An operator pauses the daily schedule in the UI; then the journey is edited.
    await client.get_schedule_handle(schedule_id("daily", task_queue)).pause(note="by alice")
    edited = plan(tmp_path, "daily", 'segment: "true"\nevery: "0 10 * * *"')
    changed = await schedules.sync(
        client, [lapsed, edited, welcome], task_queue=task_queue, timezone="Europe/Paris"
    )
    assert (changed.updated, changed.removed) == (["daily"], ["news"])
    found = await mine(client, task_queue)
    assert set(found) == {"lapsed", "daily"}
    state = found["daily"].schedule.state
    assert (state.paused, state.note) == (True, "by alice")
    assert found["daily"].schedule.action.typed_search_attributes  # type: ignore[union-attr]

    await schedules.sync(client, [], task_queue=task_queue)
    assert await mine(client, task_queue) == {}


async def test_sync_leaves_the_schedules_of_other_task_queues_alone(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    client = local_env.client
    ours, theirs = f"tq-{uuid.uuid4()}", f"tq-{uuid.uuid4()}"
    lapsed = plan(tmp_path, "lapsed", 'segment: "true"\nevery: 1d')
    await schedules.sync(client, [lapsed], task_queue=theirs)

    await schedules.sync(client, [], task_queue=ours)

    assert await schedules.describe(client, "lapsed", theirs) is not None
    await schedules.sync(client, [], task_queue=theirs)


async def test_a_broadcast_goes_out_once_at_its_time(
    local_env: WorkflowEnvironment, db: Database, tmp_path: Path
) -> None:
    client = local_env.client
    task_queue = f"tq-{uuid.uuid4()}"
    with db.session() as session:
        for customer_id in ("a", "b"):
            session.add(
                Customer(
                    id=customer_id, email=f"{customer_id}@example.com", traits={}, push_tokens=[]
                )
            )
    settings = Settings(database_url=db.url, secret_key="schedule-test")
    async with build_worker(client, task_queue, journey_activities(db, settings, {})):
        once_at = await arm_broadcast(client, db, tmp_path, task_queue)
        ticks = await eventually(
            lambda: done_ticks(db, "news"),
            what=f"the broadcast due at {once_at:%H:%M:%S} gone out",
            within=60,
        )
        description = await schedules.describe(client, "news", task_queue)

    assert description is not None
    assert description.schedule.state.remaining_actions == 0
    assert description.info.num_actions == 1
    assert [(t.kind, t.status, t.entered) for t in ticks] == [("broadcast", "done", 2)]
    assert ticks[0].at == once_at  # the segment was checked as of the time it was due
    assert ticks[0].tick_id == f"{schedule_id('news', task_queue)}-{once_at:%Y-%m-%dT%H:%M:%SZ}"
    with db.session() as session:
        entered = sorted(session.scalars(select(JourneyRun.workflow_id)))
    assert entered == ["news/a", "news/b"]
    await schedules.sync(client, [], task_queue=task_queue)


async def arm_broadcast(client: Client, db: Database, tmp_path: Path, task_queue: str) -> datetime:
    """Make the `news` broadcast's schedule for a moment just ahead, and return that
    moment once the schedule is armed for it (or has already acted on it).

    A real server's real clock decides when a schedule acts, and a schedule made after
    its moment never acts: on a machine slow enough for the moment to pass while the
    schedule is made, it is removed and made again further ahead. How soon it is due
    only decides how long the test takes, never whether it passes."""
    lead = timedelta(seconds=2)
    while True:
        once_at = (datetime.now(UTC) + lead).replace(microsecond=0)
        news = plan(tmp_path, "news", f'segment: "true"\nonce_at: {once_at.isoformat()}')
        Catalog(
            [compile_file(tmp_path / "journeys" / "news.yaml", tmp_path / "templates")]
        ).register(db)
        report = await schedules.sync(client, [news], task_queue=task_queue)
        assert report.created == ["news"]
        description = await schedules.describe(client, "news", task_queue)
        assert description is not None
        info = description.info
        if info.next_action_times == [once_at] or info.num_actions:
            return once_at
        assert lead < timedelta(minutes=2), f"no schedule made in time for {once_at}: {info}"
        await client.get_schedule_handle(schedule_id("news", task_queue)).delete()
        lead *= 2


def done_ticks(db: Database, journey_id: str) -> list[AudienceTick]:
    with db.session() as session:
        return list(
            session.scalars(
                select(AudienceTick).where(
                    AudienceTick.journey_id == journey_id, AudienceTick.status == "done"
                )
            )
        )
