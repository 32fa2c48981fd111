"""Replay the checked-in histories of every shipped journey with today's interpreter.

A change to the commands the interpreter issues fails here unless it is guarded by
`workflow.patched()`. Histories are recorded by `python -m tests.histories.export`.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from journeyman.names import JOURNEY_WORKFLOW
from tests.histories.export import SCENARIOS, history_path
from workflows.journey import JourneyWorkflow

HISTORIES = sorted(Path(__file__).parent.glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_shipped_journey_has_recorded_histories():
    shipped = {p.stem for p in (Path(__file__).parents[2] / "journeys").glob("*.yaml")}
    recorded = {path.stem.split("__")[0] for path in HISTORIES}
    assert shipped <= recorded
    assert {history_path(j, s) for j, s, _ in SCENARIOS} == set(HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_with_the_current_interpreter(path):
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_recorded_scenarios_reached_their_outcomes():
    def outcome(journey: str, scenario: str) -> str:
        events = json.loads(history_path(journey, scenario).read_text())["events"]
        completed = events[-1]["workflowExecutionCompletedEventAttributes"]
        payload = completed["result"]["payloads"][0]["data"]
        import base64

        return json.loads(base64.b64decode(payload))["outcome"]

    assert outcome("abandoned_cart", "emptied") == "exited"
    assert outcome("welcome_series", "first_order") == "converted"
    assert outcome("win_back", "came_back") == "converted"
    assert outcome("abandoned_cart", "no_response") == "ended"


@workflow.defn(name=JOURNEY_WORKFLOW, sandboxed=False)
class _ChangedInterpreter:
    """Issues different commands than the recorded runs: must not replay."""

    @workflow.run
    async def run(self, _input: dict) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_a_changed_interpreter_is_caught_as_nondeterministic():
    replayer = Replayer(workflows=[_ChangedInterpreter], data_converter=pydantic_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history(history_path("abandoned_cart", "no_response")))
