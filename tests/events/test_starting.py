"""Starting a run with its trigger in the input (journeyman/events/starting.py), against
a client that answers as Temporal does when a run is already going under the id."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from journeyman.contracts import CURRENT_ERA, CustomerEvent, JourneyInput
from journeyman.dsl.compiler import compile_dir, compile_file
from journeyman.dsl.plan import Plan
from journeyman.events import starting
from journeyman.events.claims import TRIGGER_MEMO
from journeyman.names import (
    CUSTOMER_ID,
    EVENT_SIGNAL,
    JOURNEY_ERA,
    JOURNEY_STEP,
    JOURNEY_WORKFLOW,
)
from tests.events.test_run_rows import plan

EVENT = CustomerEvent("m-1", "signed_up", {"list": "news"})


class _Handle:
    def __init__(self, client: _Client, run_id: str | None) -> None:
        self.client, self.run_id = client, run_id

    async def signal(self, name: str, arg: Any) -> None:
        self.client.calls.append(("signal", self.run_id, name, arg))
        if self.run_id in self.client.ended:
            raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")


class _Client:
    """Start answers: a run id to start, or the run already going (`("going", run id)`)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.ended: set[str] = set()
        self.calls: list[tuple[Any, ...]] = []

    async def start_workflow(self, workflow: str, arg: JourneyInput, **options: Any) -> Any:
        self.calls.append(("start", workflow, arg, options))
        answer = self.answers.pop(0)
        if isinstance(answer, tuple):
            raise WorkflowAlreadyStartedError(options["id"], workflow, run_id=answer[1])
        return _Handle(self, answer)

    def get_workflow_handle(self, workflow_id: str, run_id: str | None = None) -> _Handle:
        return _Handle(self, run_id)


async def _start(client: _Client, tmp_path: Path) -> Any:
    return await starting.start_run(
        client,  # type: ignore[arg-type]
        "tq",
        plan(tmp_path),
        "c1",
        "news",
        EVENT,
        "quick/c1/news",
    )


async def test_a_new_run_gets_its_trigger_in_the_input_and_no_signal(tmp_path: Path) -> None:
    client = _Client("run-1")
    handle = await _start(client, tmp_path)
    assert handle.run_id == "run-1"
    [(kind, workflow, arg, options)] = client.calls
    assert (kind, workflow) == ("start", JOURNEY_WORKFLOW)
    assert (arg.trigger, arg.customer_id, arg.entry_key) == (EVENT, "c1", "news")
    # In the current era: every patch so far taken unasked, no marker at its start; the
    # era is in visibility from the start too (`--without-patch`).
    assert arg.era == CURRENT_ERA >= 1
    assert options["search_attributes"].get(JOURNEY_ERA) == CURRENT_ERA
    assert options["id_conflict_policy"] == WorkflowIDConflictPolicy.FAIL
    assert options["memo"] == {TRIGGER_MEMO: "m-1"}
    assert "start_signal" not in options


async def test_a_run_already_going_hears_the_event_as_a_signal(tmp_path: Path) -> None:
    client = _Client(("going", "run-0"))
    handle = await _start(client, tmp_path)
    assert handle.run_id == "run-0"
    assert [c[0] for c in client.calls] == ["start", "signal"]
    assert client.calls[1][1:] == ("run-0", EVENT_SIGNAL, EVENT)


async def test_a_run_that_ends_before_the_signal_is_started_again(tmp_path: Path) -> None:
    client = _Client(("going", "run-0"), "run-1")
    client.ended.add("run-0")
    handle = await _start(client, tmp_path)
    assert handle.run_id == "run-1"
    assert [c[0] for c in client.calls] == ["start", "signal", "start"]


async def test_starts_that_keep_meeting_ending_runs_give_up(tmp_path: Path) -> None:
    going = [("going", f"run-{n}") for n in range(starting.STARTS)]
    client = _Client(*going)
    client.ended.update(run_id for _, run_id in going)
    with pytest.raises(RPCError):
        await _start(client, tmp_path)
    assert [c[0] for c in client.calls].count("start") == starting.STARTS


# -- the step a new run shows in JourneyStep from its start -------------------------------

ROOT = Path(__file__).parents[2]


def _shipped() -> dict[str, Plan]:
    return {c.plan.journey.id: c.plan for c in compile_dir(ROOT / "journeys", ROOT / "templates")}


def test_a_run_is_shown_from_its_start_at_the_step_where_it_first_stays() -> None:
    plans = _shipped()
    # Sends first, then a wait or a wait_for: that one (no upsert when the run gets there).
    assert starting.first_stay(plans["gold_tier_welcome"]) == "wait_a_week"
    assert starting.first_stay(plans["welcome_series"]) == "wait_two_days"  # two sends
    assert starting.first_stay(plans["order_ready_for_pickup"]) == "wait_for_pickup"
    # A first step where the run stays: itself, as before.
    assert starting.first_stay(plans["abandoned_cart"]) == "wait_an_hour"
    assert starting.first_stay(plans["replenishment"]) == "supply_lasts"
    # A branch, a split or a send that ends the journey: the plan does not say where the
    # run will stay, if anywhere; the first step, as before.
    assert starting.first_stay(plans["birthday"]) == "morning_or_now"
    assert starting.first_stay(plans["win_back"]) == "choose_offer"
    assert starting.first_stay(plans["store_news_december"]) == "newsletter"
    attributes = starting.start_search_attributes(plans["gold_tier_welcome"], "c1")
    assert attributes.get(JOURNEY_STEP) == "wait_a_week"
    assert attributes.get(CUSTOMER_ID) == "c1"


def _journey(tmp_path: Path, steps: str) -> Plan:
    (tmp_path / "templates" / "hello").mkdir(parents=True, exist_ok=True)
    (tmp_path / "templates" / "hello" / "email.html").write_text(
        "{% block subject %}Hi{% endblock %}<p>Hi</p>"
    )
    path = tmp_path / "opening.yaml"
    path.write_text(
        "id: opening\nname: Opening\nentry: {event: signed_up}\nsteps:\n"
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return compile_file(path, tmp_path / "templates").plan


def test_the_first_stay_is_found_past_profile_updates_and_webhooks(tmp_path: Path) -> None:
    plan = _journey(
        tmp_path,
        """
        - {id: tag, update_profile: {set: {source: signup}}}
        - {id: tell_crm, webhook: {url: "https://crm.example.com/hook", method: POST}}
        - {id: hello, send: {template: hello, channels: [email]}}
        - {id: at_nine, wait: {until: "09:00"}}
        - {id: done, end: true}
        """,
    )
    assert starting.first_stay(plan) == "at_nine"


@pytest.mark.parametrize(
    "second",
    [
        # May have passed: the run then goes on without staying.
        '{id: later, wait: {at: "trigger.timestamp + hours(1)"}}',
        # Waits for the customer's best hour, or not: the plan does not say.
        "{id: best, send: {template: hello, channels: [email], timing: best}}",
    ],
)
def test_a_step_that_may_or_may_not_stay_leaves_the_first_step_shown(
    tmp_path: Path, second: str
) -> None:
    plan = _journey(
        tmp_path,
        f"""
        - {{id: hello, send: {{template: hello, channels: [email]}}}}
        - {second}
        - {{id: pause, wait: 1h}}
        """,
    )
    assert starting.first_stay(plan) == "hello"
