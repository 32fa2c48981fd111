"""The step log: each run's path recorded once per entry as the run goes
(`journey.record_steps`, workflows/journey.py), on the time-skipping test server."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels import Channels
from activities.journey import JourneyActivities
from journeyman.names import EVENT_SIGNAL, JOURNEY_WORKFLOW
from journeyman.runtime import build_worker
from journeyman.stats import journey_stats
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun, StepLog
from journeyman.types import (
    CustomerEvent,
    JourneyInput,
    JourneyResult,
    PathEntry,
    RecordStepsInput,
)
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


async def test_entries_are_recorded_before_the_next_step_starts(harness: Harness) -> None:
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(hours=2))  # now in wait_for_open (1 day)
    assert [(r.step_id, r.action) for r in step_log(harness.db)] == [
        ("entry", "entered"),
        ("wait_an_hour", "waited"),
        ("remind", "sent"),
    ]


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


class _CommitThenFail(JourneyActivities):
    """Records, then fails the first attempt of every call: Temporal retries it."""

    added: list[tuple[int, int, int]]  # (first seq, attempt, rows added)

    @activity.defn(name="journey.record_steps")
    def record_steps(self, inp: RecordStepsInput) -> int:
        added = super().record_steps(inp)
        self.added.append((inp.first_seq, activity.info().attempt, added))
        if activity.info().attempt == 1:
            raise RuntimeError("connection lost after the commit")
        return added


class _DownAtFirst(JourneyActivities):
    """The step log cannot be written for the first two calls."""

    first_seqs: list[int]

    @activity.defn(name="journey.record_steps")
    def record_steps(self, inp: RecordStepsInput) -> int:
        self.first_seqs.append(inp.first_seq)
        if len(self.first_seqs) <= 2:
            raise ApplicationError("database unavailable", non_retryable=True)
        return super().record_steps(inp)


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
    activities.added = []
    result = await _run_cart(harness, activities)
    assert rows(step_log(harness.db)) == as_rows(result.path)
    retries = [(seq, added) for seq, attempt, added in activities.added if attempt > 1]
    assert retries and all(added == 0 for _, added in retries)


async def test_a_failing_record_does_not_fail_the_run_and_is_tried_again_later(
    harness: Harness,
) -> None:
    activities = _DownAtFirst(harness.db, Channels())
    activities.first_seqs = []
    result = await _run_cart(harness, activities)
    assert result.outcome == "ended"
    assert activities.first_seqs[:3] == [0, 0, 0]  # from the entry on, until it works
    assert rows(step_log(harness.db)) == as_rows(result.path)


# -- across continue-as-new -----------------------------------------------------------------


async def test_seq_keeps_counting_across_continue_as_new(harness: Harness) -> None:
    catalog = await harness.journey(LOOP)
    harness.customer("c1", email="a@example.com")
    plan = catalog.compiled["loop"].plan
    trigger = CustomerEvent("t-1", "signed_up", {}, datetime.now(UTC))
    handle = await harness.client.start_workflow(
        JOURNEY_WORKFLOW,
        JourneyInput(plan=plan, customer_id="c1", history_limit=40),
        id="loop/c1",
        task_queue=harness.task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger],
        result_type=JourneyResult,
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
