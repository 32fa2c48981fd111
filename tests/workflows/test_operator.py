"""Operator controls: steering one run with validated updates, pausing a whole journey."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.contracts import OperatorRequest, RunStatus
from journeyman.events.routing import Skipped
from journeyman.names import END_RUN_UPDATE, MOVE_TO_UPDATE
from journeyman.operations import controls
from journeyman.operations.controls import ControlError
from journeyman.settings import get_settings
from journeyman.storage.models import HeldEntry, JourneyRun, OperatorAction
from tests.harness import Harness, actions
from tests.workflows.test_step_log import as_rows, journey_step, rows, step_log
from workflows.journey import JourneyWorkflow

ONBOARDING = """
id: onboarding
name: Onboarding
entry:
  event: signed_up
  reentry: always
exit:
  - event: account_closed
steps:
  - id: wait_a_day
    wait: 1d
  - id: hello
    send: {template: hello, channels: [email]}
  - id: wait_for_order
    wait_for: {event: order_placed, timeout: 3d, on_timeout: nudge}
  - id: thanks
    send: {template: thanks, channels: [email]}
    goto: done
  - id: nudge
    send: {template: nudge, channels: [email]}
  - id: done
    end: true
"""
RUN = "onboarding/c1"
ALICE = OperatorRequest("alice", "customer called support")


async def entered(harness: Harness, customer: str = "c1") -> str:
    await harness.journey(ONBOARDING)
    harness.customer(customer, email=f"{customer}@example.com")
    routed = await harness.event("signed_up", customer)
    assert routed.entered == [f"onboarding/{customer}"]
    return routed.entered[0]


async def state(harness: Harness, workflow_id: str = RUN) -> RunStatus:
    status: RunStatus = await harness.handle(workflow_id).query("state", result_type=RunStatus)
    return status


async def control(harness: Harness, action: str, request: OperatorRequest = ALICE) -> str:
    return await controls.control_run(harness.client, harness.db, RUN, action, request)


def audit(harness: Harness) -> list[tuple[str, str | None, str, str]]:
    with harness.db.session() as session:
        rows = session.scalars(select(OperatorAction).order_by(OperatorAction.id))
        return [(r.action, r.workflow_id, r.who, r.why) for r in rows]


# -- one run --------------------------------------------------------------------------


async def test_skip_wait_ends_a_one_day_wait_and_the_next_step_runs_now(harness):
    await entered(harness)
    started = await harness.now()
    await harness.sleep(timedelta(minutes=5))
    detail = await control(harness, "skip-wait")
    await harness.sleep(timedelta(minutes=1))
    assert detail == "skip_wait by alice: customer called support"
    assert [m.customer_id for m in harness.outbox()] == ["c1"]
    assert await harness.now() - started < timedelta(hours=1)
    status = await state(harness)
    assert status.current_step == "wait_for_order"
    assert [(p.step, p.action, p.detail) for p in status.path[1:3]] == [
        ("wait_a_day", "operator", "skip_wait by alice: customer called support"),
        ("wait_a_day", "waited", "1d"),
    ]


async def test_skip_wait_on_a_wait_for_counts_as_its_timeout(harness):
    await entered(harness)
    await harness.sleep(timedelta(days=1, hours=1))
    await control(harness, "skip-wait")
    result = await harness.result(RUN)
    assert actions(result)[-4:] == [
        ("wait_for_order", "operator"),
        ("wait_for_order", "timeout"),
        ("nudge", "sent"),
        ("done", "ended"),
    ]


async def test_controls_on_a_finished_run_are_refused(harness):
    await entered(harness)
    await control(harness, "move", OperatorRequest("alice", "test", to="done"))
    await harness.result(RUN)
    with pytest.raises(ControlError, match="is finished"):
        await control(harness, "skip-wait")


async def test_move_to_a_later_step_skips_the_steps_between(harness):
    await entered(harness)
    request = OperatorRequest("bob", "already ordered by phone", to="thanks")
    assert await control(harness, "move", request) == (
        "move_to thanks by bob: already ordered by phone"
    )
    result = await harness.result(RUN)
    assert actions(result) == [
        ("entry", "entered"),
        ("wait_a_day", "operator"),
        ("thanks", "sent"),
        ("done", "ended"),
    ]
    assert result.outcome == "ended"
    assert [m.customer_id for m in harness.outbox()] == ["c1"]


async def test_move_to_a_step_that_does_not_exist_is_refused_and_the_run_goes_on(harness):
    await entered(harness)
    with pytest.raises(ControlError) as refused:
        await control(harness, "move", OperatorRequest("bob", "typo", to="thank_you"))
    assert refused.value.kind == "rejected"
    assert "no step 'thank_you' in journey onboarding" in refused.value.message
    assert "valid steps: wait_a_day, hello, wait_for_order, thanks, nudge, done" in (
        refused.value.message
    )
    status = await state(harness)
    assert status.current_step == "wait_a_day"
    assert [p.action for p in status.path] == ["entered"]
    assert audit(harness) == []
    await harness.sleep(timedelta(days=1, minutes=1))
    assert (await state(harness)).current_step == "wait_for_order"


async def test_end_run_finishes_it_as_ended_by_operator(harness):
    await entered(harness)
    await control(harness, "end", OperatorRequest("carol", "duplicate account"))
    result = await harness.result(RUN)
    assert result.outcome == "ended_by_operator"
    assert actions(result) == [("entry", "entered"), ("wait_a_day", "operator")]
    assert result.path[-1].detail == "end_run by carol: duplicate account"
    with harness.db.session() as session:
        run = session.scalar(select(JourneyRun).where(JourneyRun.workflow_id == RUN))
        assert run is not None and run.outcome == "ended_by_operator"
    assert harness.outbox() == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (OperatorRequest("", "a reason"), "who is required"),
        (OperatorRequest("alice", "  "), "why is required"),
    ],
)
async def test_the_run_refuses_a_control_without_who_or_why(harness, request_, message):
    await entered(harness)
    handle = harness.handle(RUN)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(END_RUN_UPDATE, request_, result_type=str)
    assert message in str(refused.value.cause)
    with pytest.raises(ControlError, match=message):
        await control(harness, "end", request_)
    assert [p.action for p in (await state(harness)).path] == ["entered"]


async def test_the_run_refuses_a_move_without_a_step(harness):
    await entered(harness)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await harness.handle(RUN).execute_update(MOVE_TO_UPDATE, ALICE, result_type=str)
    assert "to is required" in str(refused.value.cause)


async def test_controls_on_an_unknown_run_say_so(harness):
    await harness.journey(ONBOARDING)
    with pytest.raises(ControlError) as unknown:
        await controls.control_run(harness.client, harness.db, "onboarding/nobody", "end", ALICE)
    assert unknown.value.kind == "not_found"
    with pytest.raises(ControlError) as unknown:
        await controls.show_run(harness.client, "onboarding/nobody")
    assert unknown.value.kind == "not_found"


async def test_every_control_on_a_run_is_audited_with_who_and_why(harness):
    await entered(harness)
    await control(harness, "skip-wait")
    await harness.sleep(timedelta(minutes=1))
    await control(harness, "end", OperatorRequest("carol", "done here"))
    await harness.result(RUN)
    assert audit(harness) == [
        ("skip_wait", RUN, "alice", "customer called support"),
        ("end_run", RUN, "carol", "done here"),
    ]


async def test_the_step_log_and_journey_step_follow_the_controls(harness):
    await entered(harness)
    await control(harness, "skip-wait")
    await harness.sleep(timedelta(minutes=1))
    status = await state(harness)
    assert status.current_step == "wait_for_order"
    assert await journey_step(harness, RUN) == "wait_for_order"
    assert rows(step_log(harness.db)) == as_rows(status.path)  # the operator's entry too

    await control(harness, "move", OperatorRequest("bob", "start over", to="wait_a_day"))
    await harness.sleep(timedelta(minutes=1))
    status = await state(harness)
    assert status.current_step == "wait_a_day"
    assert await journey_step(harness, RUN) == "wait_a_day"
    assert rows(step_log(harness.db)) == as_rows(status.path)

    await control(harness, "end", OperatorRequest("carol", "duplicate account"))
    result = await harness.result(RUN)
    assert rows(step_log(harness.db)) == as_rows(result.path)
    with harness.db.session() as session:
        run = session.scalar(select(JourneyRun).where(JourneyRun.workflow_id == RUN))
        assert run is not None and (run.status, run.outcome) == ("completed", "ended_by_operator")


# -- pausing a journey ----------------------------------------------------------------


async def test_pause_holds_entries_and_sends_and_resume_releases_each_once(harness):
    await entered(harness, "c1")
    harness.customer("c2", email="c2@example.com")
    assert harness.router is not None
    known = set(harness.router.catalog.compiled)
    controls.pause(harness.db, known, "onboarding", "alice", "fixing a typo")

    routed = await harness.event("signed_up", "c2")
    assert routed.entered == []
    assert routed.skipped == [
        Skipped("onboarding", "journey paused by alice: fixing a typo; entry held")
    ]

    # Past the day's wait into the held send, ending between two of its 5-minute
    # rechecks: a wake that reaches the run at the very instant its recheck timer fires
    # makes the time-skipping server reject the run's next workflow task ("invalid
    # history builder state for action"), a race of the test server's alone.
    await harness.sleep(timedelta(days=1, minutes=32))
    assert harness.outbox() == []
    held = [p for p in (await state(harness)).path if p.action == "deferred"]
    assert held and held[0].step == "hello"
    assert await journey_step(harness, RUN) == "hello"  # where the run stays
    assert held[0].detail.startswith("journey paused by alice: fixing a typo; until ")

    report = await controls.resume(harness.router, "onboarding", "alice", "typo fixed")
    assert report.entered == ["onboarding/c2"]
    assert report.woken == ["onboarding/c1"]  # c2 starts after the pause, unheld
    # Well within a pause's 5-minute recheck, in steps: a loaded machine may take a few
    # seconds of virtual time to run the woken send.
    for _ in range(12):
        await harness.sleep(timedelta(seconds=10))
        if harness.outbox():
            break
    assert [m.customer_id for m in harness.outbox()] == ["c1"]
    assert (await state(harness, "onboarding/c2")).current_step == "wait_a_day"

    await harness.sleep(timedelta(hours=1))
    assert [m.customer_id for m in harness.outbox()] == ["c1"]
    assert [d.status for d in harness.deliveries()] == ["sent"]
    with harness.db.session() as session:
        assert session.scalars(select(HeldEntry)).all() == []
    assert audit(harness) == [
        ("pause", None, "alice", "fixing a typo"),
        ("resume", None, "alice", "typo fixed"),
    ]


async def test_held_entries_that_no_longer_apply_are_skipped_on_resume(harness):
    await harness.journey(ONBOARDING.replace("reentry: always", "reentry: never"))
    harness.customer("c1", email="c1@example.com")
    assert harness.router is not None
    known = set(harness.router.catalog.compiled)
    controls.pause(harness.db, known, "onboarding", "alice", "holding")
    await harness.event("signed_up", "c1")
    await harness.event("signed_up", "c1")
    report = await controls.resume(harness.router, "onboarding", "alice", "go")
    assert report.entered == ["onboarding/c1"]
    assert report.skipped == [Skipped("onboarding", "already in the journey")]


async def test_pause_and_resume_refuse_what_they_cannot_do(harness):
    await harness.journey(ONBOARDING)
    assert harness.router is not None
    known = set(harness.router.catalog.compiled)
    with pytest.raises(ControlError, match="no journey 'nope'"):
        controls.pause(harness.db, known, "nope", "alice", "x")
    with pytest.raises(ControlError, match="why is required"):
        controls.pause(harness.db, known, "onboarding", "alice", "")
    with pytest.raises(ControlError, match="journey onboarding is not paused"):
        await controls.resume(harness.router, "onboarding", "alice", "x")
    assert audit(harness) == []


# -- replay ---------------------------------------------------------------------------


async def test_a_run_steered_by_operators_replays_deterministically(harness):
    await entered(harness)
    assert harness.router is not None
    controls.pause(harness.db, set(harness.router.catalog.compiled), "onboarding", "a", "hold")
    await control(harness, "skip-wait")
    await harness.sleep(timedelta(minutes=1))
    await controls.resume(harness.router, "onboarding", "a", "go")
    await harness.sleep(timedelta(minutes=1))
    await control(harness, "move", OperatorRequest("b", "again", to="hello"))
    await harness.sleep(timedelta(minutes=1))
    await control(harness, "end", OperatorRequest("c", "enough"))
    result = await harness.result(RUN)
    assert [a for _, a in actions(result)] == [
        "entered",
        "operator",
        "waited",
        "deferred",
        "sent",
        "operator",
        "sent",
        "operator",
    ]
    history = await harness.handle(RUN).fetch_history()
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=pydantic_data_converter)
    replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure


# -- the command line -----------------------------------------------------------------


@pytest.fixture
def cli(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Any]]:
    """`journeyman ...` against the harness's server, database and journeys; it runs in
    a thread, as the commands run their own event loop."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", harness.client.service_client.config.target_host)
    monkeypatch.setenv("DATABASE_URL", harness.db.url)
    monkeypatch.setenv("JOURNEYS_DIR", str(harness.journeys_dir))
    monkeypatch.setenv("TEMPLATES_DIR", str(harness.templates_dir))
    monkeypatch.setenv("JOURNEYMAN_TASK_QUEUE", harness.task_queue)
    monkeypatch.delenv("JOURNEYMAN_PAYLOAD_KEY", raising=False)
    get_settings.cache_clear()

    async def invoke(*args: str) -> Any:
        runner = CliRunner()
        return await asyncio.to_thread(runner.invoke, app, list(args), catch_exceptions=False)

    yield invoke
    get_settings.cache_clear()


async def test_cli_shows_a_run_and_moves_it(harness, cli):
    await entered(harness)
    shown = await cli("run", "show", RUN)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].split() == [RUN, "running"]
    assert lines[2] == "current step: wait_a_day"
    assert lines[-1].split()[2:] == ["entry", "entered", "entered", "on", "signed_up"]

    moved = await cli("run", "move", RUN, "--to", "done", "--who", "bob", "--why", "asked")
    assert moved.exit_code == 0, moved.output
    assert moved.stdout.strip() == f"{RUN}: move_to done by bob: asked"
    assert (await harness.result(RUN)).outcome == "ended"


async def test_cli_refusals_are_one_line_and_exit_1(harness, cli):
    await entered(harness)
    refused = await cli("run", "move", RUN, "--to", "nope", "--who", "bob", "--why", "typo")
    assert refused.exit_code == 1
    assert "no step 'nope' in journey onboarding" in refused.stderr
    assert "valid steps: wait_a_day, hello" in refused.stderr
    unknown = await cli("run", "end", "onboarding/nobody", "--who", "bob", "--why", "x")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("no run onboarding/nobody")
    no_why = await cli("run", "skip-wait", RUN, "--who", "bob", "--why", "")
    assert no_why.exit_code == 1
    assert "why is required" in no_why.stderr


async def test_cli_pauses_and_resumes_a_journey(harness, cli):
    await entered(harness)
    paused = await cli("pause", "onboarding", "--who", "alice", "--why", "copy review")
    assert paused.exit_code == 0, paused.output
    assert paused.stdout.startswith("paused onboarding")
    harness.customer("c2", email="c2@example.com")
    assert (await harness.event("signed_up", "c2")).entered == []
    resumed = await cli("resume", "onboarding", "--who", "alice", "--why", "approved")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.splitlines()[0] == (
        "resumed onboarding: 1 held entry entered, 0 no longer apply, 1 running run woken"
    )
    again = await cli("resume", "onboarding", "--who", "alice", "--why", "twice")
    assert again.exit_code == 1
    assert "journey onboarding is not paused" in again.stderr
    assert [a[0] for a in audit(harness)] == ["pause", "resume"]
