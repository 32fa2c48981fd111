"""The step log: each run's path recorded once per entry, complete wherever the run
waits and once it ends (`journey.record_steps`, workflows/journey.py), and the run's
`journey_runs` row closed by the last record; on the time-skipping test server."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from journeyman.contracts import (
    CURRENT_ERA,
    CustomerEvent,
    JourneyInput,
    JourneyResult,
    PathEntry,
    RecordStepsInput,
    RunStatus,
    SendInput,
    SendOutcome,
)
from journeyman.insight.stats import journey_stats
from journeyman.messaging.channels import Channels
from journeyman.names import EVENT_SIGNAL, JOURNEY_STEP, JOURNEY_WORKFLOW
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun, StepLog
from journeyman.wiring import build_worker
from tests.harness import Harness
from tests.workflows.test_journey import LOOP, cart

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def step_log(db: Database) -> list[StepLog]:
    with db.session() as session:
        return list(session.scalars(select(StepLog).order_by(StepLog.run_id, StepLog.seq)))


def first_run_id(db: Database, workflow_id: str) -> str:
    with db.session() as session:
        run_id = session.scalar(
            select(JourneyRun.run_id).where(JourneyRun.workflow_id == workflow_id)
        )
    assert run_id is not None
    return run_id


def as_rows(path: list[PathEntry], first: int = 0) -> list[tuple[object, ...]]:
    return [
        (seq, e.step, e.action, {"detail": e.detail, "channel": e.channel, "template": e.template})
        for seq, e in enumerate(path, start=first)
    ]


def rows(log: list[StepLog]) -> list[tuple[object, ...]]:
    return [(r.seq, r.step_id, r.action, r.detail) for r in log]


async def running_state(harness: Harness, workflow_id: str) -> RunStatus:
    status: RunStatus = await harness.handle(workflow_id).query("state", result_type=RunStatus)
    return status


def run_row(db: Database, workflow_id: str) -> JourneyRun:
    with db.session() as session:
        run = session.scalar(select(JourneyRun).where(JourneyRun.workflow_id == workflow_id))
    assert run is not None
    return run


# An email, then a text held by quiet hours all day but a minute: the text is deferred.
QUIET = """
id: quiet
name: Quiet
entry: {event: signed_up}
settings: {quiet_hours: "21:00-08:00"}
steps:
  - id: evening
    wait: {until: "22:00"}
  - id: hello
    send: {template: hello, channels: [email]}
  - id: text
    send: {template: hello, channels: [sms]}
"""


# -- a run's path, as it goes ---------------------------------------------------------------


async def test_a_runs_step_log_rows_are_its_path_in_order(harness: Harness) -> None:
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    await harness.event("cart_abandoned", cart_id="k1")
    result = await harness.result("cart/c1/k1")
    run_id = first_run_id(harness.db, "cart/c1/k1")
    log = step_log(harness.db)
    assert rows(log) == as_rows(result.path)
    assert [r.at for r in log] == [e.at for e in result.path]
    assert {(r.run_id, r.journey_id, r.customer_id) for r in log} == {(run_id, "cart", "c1")}
    assert {r.detail["channel"] for r in log if r.action == "sent"} == {"email", "sms"}


async def test_the_log_is_complete_wherever_the_run_waits(harness: Harness) -> None:
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(minutes=10))  # in wait_an_hour
    status = await running_state(harness, "cart/c1/k1")
    assert status.current_step == "wait_an_hour"
    assert rows(step_log(harness.db)) == as_rows(status.path)
    await harness.sleep(timedelta(hours=2))  # in wait_for_open (1 day)
    status = await running_state(harness, "cart/c1/k1")
    assert status.current_step == "wait_for_open"
    assert rows(step_log(harness.db)) == as_rows(status.path)
    assert [(r.step_id, r.action) for r in step_log(harness.db)] == [
        ("entry", "entered"),
        ("wait_an_hour", "waited"),
        ("remind", "sent"),
    ]


@pytest.mark.clock_sensitive
async def test_the_log_is_complete_while_a_send_is_deferred(harness: Harness) -> None:
    await harness.journey(QUIET)
    harness.customer("c1", email="ana@example.com", phone="+15550001", timezone="UTC")
    await harness.event("signed_up")
    await harness.sleep_past("22:00", by=timedelta(minutes=5))
    status = await running_state(harness, "quiet/c1")
    assert [(p.step, p.action) for p in status.path][-2:] == [
        ("hello", "sent"),
        ("text", "deferred"),
    ]
    assert rows(step_log(harness.db)) == as_rows(status.path)


# -- JourneyStep: where the run stays ----------------------------------------------------------


async def journey_step(harness: Harness, workflow_id: str) -> str | None:
    description = await harness.handle(workflow_id).describe()
    return description.typed_search_attributes.get(JOURNEY_STEP)


async def test_journey_step_names_the_step_where_the_run_waits(harness: Harness) -> None:
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(minutes=10))
    assert await journey_step(harness, "cart/c1/k1") == "wait_an_hour"  # set at start
    await harness.sleep(timedelta(hours=2))
    assert await journey_step(harness, "cart/c1/k1") == "wait_for_open"
    await harness.result("cart/c1/k1")
    # Shown only where the run stayed, once each: never `remind` or `nudge`, whose sends
    # went at once, and not again the first step, which the router set.
    upserts = await journey_step_upserts(harness, "cart/c1/k1")
    assert upserts == ["wait_for_open"]


@pytest.mark.clock_sensitive
async def test_journey_step_names_a_deferred_send(harness: Harness) -> None:
    await harness.journey(QUIET)
    harness.customer("c1", email="ana@example.com", phone="+15550001", timezone="UTC")
    await harness.event("signed_up")
    await harness.sleep_past("22:00", by=timedelta(minutes=5))
    assert await journey_step(harness, "quiet/c1") == "text"


async def journey_step_upserts(harness: Harness, workflow_id: str) -> list[str]:
    """The values the run upserted to `JourneyStep`, in order, from its history."""
    history = await harness.handle(workflow_id).fetch_history()
    converter = harness.client.data_converter.payload_converter
    values = []
    for event in history.events:
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        if JOURNEY_STEP.name in fields.indexed_fields:
            values.append(converter.from_payload(fields.indexed_fields[JOURNEY_STEP.name], str))
    return values


async def test_journey_stats_count_the_steps_runs_reached(harness: Harness) -> None:
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    harness.customer("c2", email="bo@example.com")
    await harness.event("cart_abandoned", "c1", cart_id="k1")
    await harness.event("cart_abandoned", "c2", cart_id="k2")
    await harness.sleep(timedelta(minutes=10))
    await harness.event("order_placed", "c2", cart_id="k2")  # converts in the first wait
    await harness.result("cart/c1/k1")
    await harness.result("cart/c2/k2")
    with harness.db.session() as session:
        overall = journey_stats(session, "cart").overall
    assert overall.reached == {
        "wait_an_hour": 2,
        "remind": 1,
        "wait_for_open": 1,
        "thanks": 0,
        "nudge": 1,
        "done": 1,
    }
    assert overall.held_out_messages == 0


# -- idempotent -----------------------------------------------------------------------------


def _input(entries: list[PathEntry], first_seq: int = 0) -> RecordStepsInput:
    return RecordStepsInput(
        run_id="run-1",
        journey_id="cart",
        version="v1",
        customer_id="c1",
        first_seq=first_seq,
        entries=entries,
    )


PATH = [
    PathEntry(T0, "entry", "entered", "entered on cart_abandoned"),
    PathEntry(T0 + timedelta(hours=1), "wait_an_hour", "waited", "1h"),
    PathEntry(T0 + timedelta(hours=1), "remind", "sent", "reminder on email", "email", "reminder"),
]


def test_recording_the_same_entries_again_adds_nothing(db: Database) -> None:
    activities = JourneyActivities(db, Channels())
    env = ActivityEnvironment()
    assert env.run(activities.record_steps, _input(PATH)) == 3
    assert env.run(activities.record_steps, _input(PATH)) == 0  # a retry
    assert env.run(activities.record_steps, _input(PATH[1:], first_seq=1)) == 0
    assert rows(step_log(db)) == as_rows(PATH)


def test_a_later_batch_overlapping_a_recorded_one_adds_only_its_new_entries(
    db: Database,
) -> None:
    activities = JourneyActivities(db, Channels())
    env = ActivityEnvironment()
    env.run(activities.record_steps, _input(PATH[:2]))
    assert env.run(activities.record_steps, _input(PATH)) == 1
    assert rows(step_log(db)) == as_rows(PATH)


def test_the_last_record_closes_the_run_once(db: Database) -> None:
    with db.session() as session:
        session.add(
            JourneyRun(
                run_id="run-1",
                workflow_id="cart/c1/k1",
                journey_id="cart",
                version="v1",
                customer_id="c1",
                status="running",
                current_step="wait_an_hour",
                started_at=T0,
            )
        )
    activities = JourneyActivities(db, Channels())
    env = ActivityEnvironment()
    closing = _input(PATH)
    closing.outcome, closing.ended_at = "ended", T0 + timedelta(hours=2)
    assert env.run(activities.record_steps, closing) == 3
    again = _input(PATH)
    again.outcome, again.ended_at = "converted", T0 + timedelta(hours=3)
    assert env.run(activities.record_steps, again) == 0  # closed already: nothing changes
    assert rows(step_log(db)) == as_rows(PATH)
    run = run_row(db, "cart/c1/k1")
    assert (run.status, run.outcome, run.current_step) == ("completed", "ended", None)
    assert run.ended_at is not None and run.ended_at.replace(tzinfo=UTC) == T0 + timedelta(hours=2)


def test_a_closing_record_for_a_run_without_a_row_still_records(db: Database) -> None:
    closing = _input(PATH)
    closing.outcome, closing.ended_at = "ended", T0
    assert ActivityEnvironment().run(JourneyActivities(db, Channels()).record_steps, closing) == 3
    assert rows(step_log(db)) == as_rows(PATH)


class _CommitThenFail(JourneyActivities):
    """Records, then fails the first attempt of every call: Temporal retries it."""

    added: list[tuple[int, int, int]]  # (first seq, attempt, rows added)
    closes: list[tuple[int, bool]]  # (attempt, whether it closed the run)

    @activity.defn(name="journey.record_steps")
    def record_steps(self, inp: RecordStepsInput) -> int:
        added = super().record_steps(inp)
        self.added.append((inp.first_seq, activity.info().attempt, added))
        if activity.info().attempt == 1:
            raise RuntimeError("connection lost after the commit")
        return added

    def _close_run(
        self, session: Session, run_id: str, workflow_id: str, outcome: str, ended_at: datetime
    ) -> bool:
        closed = super()._close_run(session, run_id, workflow_id, outcome, ended_at)
        self.closes.append((activity.info().attempt, closed))
        return closed


class _DownAtFirst(JourneyActivities):
    """The step log cannot be written for the first call (and, with `sends_fail`, by any
    send: the entries are left to the run's own records)."""

    first_seqs: list[int]
    sends_fail = False

    @activity.defn(name="journey.record_steps")
    def record_steps(self, inp: RecordStepsInput) -> int:
        self.first_seqs.append(inp.first_seq)
        if len(self.first_seqs) <= 1:
            raise ApplicationError("database unavailable", non_retryable=True)
        return super().record_steps(inp)

    def _write_steps(self, session: Session, inp: RecordStepsInput, rows: list[Any]) -> int:
        if self.sends_fail and activity.info().activity_type == "journey.send":
            raise RuntimeError("database unavailable")
        return super()._write_steps(session, inp, rows)


class _SendCommitThenFail(JourneyActivities):
    """Every send's first attempt fails after its commit: Temporal retries it."""

    @activity.defn(name="journey.send")
    def send(self, inp: SendInput) -> SendOutcome:
        outcome = super().send(inp)
        if activity.info().attempt == 1:
            raise RuntimeError("connection lost after the commit")
        return outcome


async def _run_cart(harness: Harness, activities: JourneyActivities) -> JourneyResult:
    """The cart journey for one customer, on a worker with these activities."""
    (harness.journeys_dir / "cart.yaml").write_text(textwrap.dedent(cart()))
    harness.template("reminder")
    await harness.start_catalog_only()
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    async with build_worker(harness.client, harness.task_queue, activities):
        await harness.event("cart_abandoned", cart_id="k1")
        return await harness.result("cart/c1/k1")


async def test_a_retried_record_counts_each_entry_once(harness: Harness) -> None:
    activities = _CommitThenFail(harness.db, Channels())
    activities.added, activities.closes = [], []
    result = await _run_cart(harness, activities)
    assert rows(step_log(harness.db)) == as_rows(result.path)
    retries = [(seq, added) for seq, attempt, added in activities.added if attempt > 1]
    assert retries and all(added == 0 for _, added in retries)


async def test_the_run_is_closed_once_by_its_last_record_even_when_retried(
    harness: Harness,
) -> None:
    activities = _CommitThenFail(harness.db, Channels())
    activities.added, activities.closes = [], []
    result = await _run_cart(harness, activities)
    # The first attempt closed the row and committed; its retry found it closed.
    assert activities.closes == [(1, True), (2, False)]
    run = run_row(harness.db, "cart/c1/k1")
    assert (run.status, run.outcome, run.current_step) == ("completed", "ended", None)
    assert run.ended_at is not None
    assert run.ended_at.replace(tzinfo=UTC) == result.path[-1].at.astimezone(UTC)
    # Closing took no activity of its own: one record where the run first waits and one
    # at the end; each send wrote the entries before it and its own (perf-fold-steps),
    # so the wait after `remind` needed none.
    assert [seq for seq, attempt, _ in activities.added if attempt == 1] == [0, 5]


async def test_a_failing_record_does_not_fail_the_run_and_is_tried_again_later(
    harness: Harness,
) -> None:
    activities = _DownAtFirst(harness.db, Channels())
    activities.first_seqs = []
    result = await _run_cart(harness, activities)
    assert result.outcome == "ended"
    # The record at the first wait failed; the `remind` send wrote its entries with its
    # own (from seq 0), the `nudge` send the next ones: the end's record holds the last.
    assert activities.first_seqs == [0, 5]
    assert rows(step_log(harness.db)) == as_rows(result.path)


async def test_a_send_that_cannot_write_the_log_leaves_its_entries_to_the_run(
    harness: Harness,
) -> None:
    activities = _DownAtFirst(harness.db, Channels())
    activities.first_seqs, activities.sends_fail = [], True
    result = await _run_cart(harness, activities)
    assert result.outcome == "ended"
    assert [m.channel for m in harness.outbox()] == ["email", "sms"]  # sent all the same
    # From the entry on, written where the run waits next, and at the end.
    assert activities.first_seqs == [0, 0, 3]
    assert rows(step_log(harness.db)) == as_rows(result.path)
    run = run_row(harness.db, "cart/c1/k1")
    assert (run.status, run.outcome) == ("completed", "ended")


async def test_a_retried_send_writes_its_entries_once_at_their_first_time(
    harness: Harness,
) -> None:
    result = await _run_cart(harness, _SendCommitThenFail(harness.db, Channels()))
    log = step_log(harness.db)
    assert rows(log) == as_rows(result.path)
    # The path has each send's entry as its first attempt wrote it.
    assert [r.at for r in log] == [e.at for e in result.path]
    assert [m.channel for m in harness.outbox()] == ["email", "sms"]  # once each


LAST_SEND = """
id: last
name: Last
entry: {event: signed_up}
steps:
  - id: pause
    wait: 1h
  - id: hello
    send: {template: hello, channels: [email]}
"""


async def test_a_send_that_is_the_last_step_closes_the_run(harness: Harness) -> None:
    (harness.journeys_dir / "last.yaml").write_text(LAST_SEND)
    harness.template("hello")
    await harness.start_catalog_only()
    harness.customer("c1", email="ana@example.com")
    activities = _CommitThenFail(harness.db, Channels())
    activities.added, activities.closes = [], []
    async with build_worker(harness.client, harness.task_queue, activities):
        await harness.event("signed_up")
        result = await harness.result("last/c1")
    assert result.outcome == "completed"
    assert rows(step_log(harness.db)) == as_rows(result.path)
    run = run_row(harness.db, "last/c1")
    assert (run.status, run.outcome, run.current_step) == ("completed", "completed", None)
    assert run.ended_at is not None
    assert run.ended_at.replace(tzinfo=UTC) == result.path[-1].at.astimezone(UTC)
    # The send closed it (`_close_run` in the send's attempt): no record after it.
    assert [seq for seq, _attempt, _ in activities.added] == [0, 0]  # the wait's, retried
    assert activities.closes == [(1, True)]


# -- across continue-as-new -----------------------------------------------------------------


# Era 0: a chain from before eras (signal-with-start), as a new worker continues it; era
# 1: started as the router starts runs since (the trigger in the input).
@pytest.mark.parametrize("era", [0, CURRENT_ERA])
async def test_seq_keeps_counting_across_continue_as_new(harness: Harness, era: int) -> None:
    catalog = await harness.journey(LOOP)
    harness.customer("c1", email="a@example.com")
    plan = catalog.compiled["loop"].plan
    trigger = CustomerEvent("t-1", "signed_up", {}, datetime.now(UTC))
    signal: dict[str, Any] = {"start_signal": EVENT_SIGNAL, "start_signal_args": [trigger]}
    handle = await harness.client.start_workflow(
        JOURNEY_WORKFLOW,
        JourneyInput(
            plan=plan,
            customer_id="c1",
            history_limit=40,
            era=era,
            trigger=trigger if era else None,
        ),
        id="loop/c1",
        task_queue=harness.task_queue,
        result_type=JourneyResult,
        **({} if era else signal),
    )
    harness.started.add("loop/c1")
    # Long enough for the path to outgrow what continue-as-new carries (200 entries).
    await harness.sleep(timedelta(hours=110))
    await handle.signal(EVENT_SIGNAL, CustomerEvent("o-1", "order_placed", {}, datetime.now(UTC)))
    result = await harness.result("loop/c1")
    first_run = handle.result_run_id
    assert first_run is not None
    assert (await handle.describe()).run_id != first_run  # it continued as new
    log = step_log(harness.db)
    assert {r.run_id for r in log} == {first_run}
    assert [r.seq for r in log] == list(range(len(log)))
    assert len(log) > len(result.path)  # the path kept only its latest entries
    dropped = len(log) - len(result.path)
    assert rows(log[dropped:]) == as_rows(result.path, first=dropped)
    assert (log[0].action, log[-1].action) == ("entered", "converted")
    assert [r.at for r in log] == sorted(r.at for r in log)


async def test_the_log_is_complete_where_a_continued_run_waits(harness: Harness) -> None:
    catalog = await harness.journey(LOOP)
    harness.customer("c1", email="a@example.com")
    plan = catalog.compiled["loop"].plan
    trigger = CustomerEvent("t-1", "signed_up", {}, datetime.now(UTC))
    handle = await harness.client.start_workflow(
        JOURNEY_WORKFLOW,
        # A chain from before eras (signal-with-start, era 0), as a new worker continues it.
        JourneyInput(plan=plan, customer_id="c1", history_limit=40, era=0),
        id="loop/c1",
        task_queue=harness.task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger],
        result_type=JourneyResult,
    )
    harness.started.add("loop/c1")
    await harness.sleep(timedelta(hours=20, minutes=30))  # under PATH_KEPT entries
    assert (await handle.describe()).run_id != handle.result_run_id  # it continued as new
    status = await running_state(harness, "loop/c1")
    assert status.current_step == "pause"
    assert rows(step_log(harness.db)) == as_rows(status.path)
    assert await journey_step(harness, "loop/c1") == "pause"
