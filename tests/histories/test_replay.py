"""Replay the checked-in histories of every shipped journey with today's interpreter.

A change to the commands the interpreter issues fails here unless it is guarded by
`workflow.patched()`. Histories are recorded by `python -m tests.histories.export`.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from journeyman.dsl.plan import Plan
from journeyman.events.starting import first_stay
from journeyman.names import JOURNEY_WORKFLOW
from journeyman.platform.codec import plain_data_converter
from tests.histories.export import (
    AUDIENCE_SCENARIOS,
    SCENARIOS,
    audience_history_path,
    history_path,
)
from workflows.audience import AudienceWorkflow
from workflows.journey import JourneyWorkflow
from workflows.patches import (
    BEST_HOUR,
    CHANGE_VERSION,
    CONDITION_ERRORS,
    FIRST_WAIT_HEARS,
    FOLD_STEPS,
    LEAN_STEPS,
    ONE_MARKER,
    OPTIMIZED_SPLIT,
    RECORD_STEPS,
    SEND_PACING,
    SINCE_ENTRY,
)

HISTORIES = sorted(Path(__file__).parent.glob("*.json"))
AUDIENCE_HISTORIES = sorted((Path(__file__).parent / "audience").glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text())


def test_every_shipped_journey_has_recorded_histories():
    shipped = {p.stem for p in (Path(__file__).parents[2] / "journeys").glob("*.yaml")}
    recorded = {path.stem.split("__")[0] for path in HISTORIES}
    assert shipped <= recorded
    assert {history_path(j, s) for j, s, _ in SCENARIOS} == set(HISTORIES)


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_history_replays_with_the_current_interpreter(path):
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=plain_data_converter)
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_every_recorded_segment_check_is_a_known_scenario():
    assert {audience_history_path(j, s) for j, s in AUDIENCE_SCENARIOS} == set(AUDIENCE_HISTORIES)
    assert AUDIENCE_HISTORIES


@pytest.mark.parametrize("path", AUDIENCE_HISTORIES, ids=lambda p: p.stem)
async def test_segment_check_history_replays_with_the_current_workflow(path):
    replayer = Replayer(workflows=[AudienceWorkflow], data_converter=plain_data_converter)
    result = await replayer.replay_workflow(_history(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


def test_recorded_scenarios_reached_their_outcomes():
    def outcome(journey: str, scenario: str) -> str:
        events = json.loads(history_path(journey, scenario).read_text())["events"]
        completed = events[-1]["workflowExecutionCompletedEventAttributes"]
        payload = completed["result"]["payloads"][0]["data"]
        return json.loads(base64.b64decode(payload))["outcome"]

    assert outcome("abandoned_cart", "emptied") == "exited"
    assert outcome("welcome_series", "first_order") == "converted"
    assert outcome("win_back", "came_back") == "converted"
    assert outcome("abandoned_cart", "no_response") == "ended"
    assert outcome("abandoned_cart", "recorded_steps") == "ended"
    assert outcome("abandoned_cart", "recorded_steps_opened") == "ended"
    assert outcome("welcome_series", "recorded_steps_first_order") == "converted"
    assert outcome("order_ready_for_pickup", "paced_picked_up") == "converted"
    assert outcome("win_back", "segment_came_back") == "converted"
    assert outcome("birthday", "gift_used") == "converted"
    assert outcome("store_news_december", "sent") == "completed"
    assert outcome("abandoned_cart", "lean_steps") == "ended"
    assert outcome("abandoned_cart", "lean_steps_opened") == "ended"
    assert outcome("welcome_series", "lean_steps_first_order") == "converted"
    assert outcome("welcome_series", "lean_steps_operator") == "ended_by_operator"
    assert outcome("order_ready_for_pickup", "lean_steps_paced_picked_up") == "converted"
    assert outcome("abandoned_cart", "v2a_opened") == "ended"
    assert outcome("support_nps", "v2a_detractor") == "ended"
    assert outcome("support_nps", "v2a_unreadable_score") == "ended"
    assert outcome("browse_abandonment", "v2a_looked_again") == "ended"
    assert outcome("order_shipped", "v2a_no_push") == "ended"
    assert outcome("price_drop", "v2a_reminded") == "ended"
    assert outcome("review_request", "reviewed_during_wait") == "ended"
    assert outcome("review_request", "reviewed_after_asking") == "ended"
    assert outcome("review_request", "never_reviewed") == "ended"
    assert outcome("gold_tier_welcome", "no_order") == "ended"
    assert outcome("gold_tier_welcome", "downgraded") == "exited"
    assert outcome("replenishment", "reordered_then_reminded") == "ended"
    assert outcome("store_pickup_hold", "picked_up") == "ended"
    assert outcome("store_pickup_hold", "cancelled") == "ended"
    assert outcome("abandoned_cart", "fold_steps_opened") == "ended"
    assert outcome("welcome_series", "fold_steps_operator") == "ended_by_operator"
    assert outcome("order_ready_for_pickup", "fold_steps_paced_picked_up") == "converted"
    assert outcome("recently_viewed", "fold_steps_suggested") == "completed"
    assert outcome("store_news_december", "fold_steps_sent") == "completed"


def _path_of(journey: str, scenario: str) -> list[tuple[str, str, str]]:
    """(step, action, detail) of a recorded run's path, from its result."""
    events = json.loads(history_path(journey, scenario).read_text())["events"]
    payload = events[-1]["workflowExecutionCompletedEventAttributes"]["result"]["payloads"][0]
    path = json.loads(base64.b64decode(payload["data"]))["path"]
    return [(entry["step"], entry["action"], entry["detail"]) for entry in path]


def test_histories_cover_the_since_entry_patch_and_the_runs_before_it():
    """`wait_for` with `since: entry` asks for the patch; no run before it ever did."""
    recorded = {path.stem: SINCE_ENTRY in _patches(path) for path in HISTORIES}
    assert {stem for stem, patched in recorded.items() if patched} == {
        "review_request__reviewed_during_wait",
        "review_request__reviewed_after_asking",
        "review_request__never_reviewed",
        "store_pickup_hold__picked_up",
        "store_pickup_hold__cancelled",
    }
    # The review written during the 3-day wait is found at once and thanked, unasked.
    during = _path_of("review_request", "reviewed_during_wait")
    assert [(step, action) for step, action, _ in during] == [
        ("entry", "entered"),
        ("settle_in", "waited"),
        ("reviewed_already", "event"),
        ("thank_you", "sent"),
        ("done", "ended"),
    ]
    after = _path_of("review_request", "reviewed_after_asking")
    assert [(step, action) for step, action, _ in after][2:] == [
        ("reviewed_already", "timeout"),
        ("ask", "sent"),
        ("wait_for_review", "event"),
        ("thank_you", "sent"),
        ("done", "ended"),
    ]


# Runs through patch `first-wait-hears-arrivals` (on `perf-fold-steps` too).
FIRST_WAIT_RUNS = {"replenishment__reordered_with_its_trigger"}


def test_histories_cover_the_first_wait_patch_and_the_runs_before_it():
    """Only a run whose first step is a `wait_for` with events beside its trigger asks
    `first-wait-hears-arrivals`: the reorder routed with the first purchase starts the
    next cycle. Every other recorded run, from before the patch or not, never asked."""
    recorded = {path.stem: FIRST_WAIT_HEARS in _patches(path) for path in HISTORIES}
    assert {stem for stem, patched in recorded.items() if patched} == FIRST_WAIT_RUNS
    here = Path(__file__).parent
    for stem in FIRST_WAIT_RUNS:
        assert _patches(here / f"{stem}.json") == {FOLD_STEPS, FIRST_WAIT_HEARS}, stem
        events = json.loads((here / f"{stem}.json").read_text())["events"]
        # The reorder was signalled before the run's first task: what the patch is for.
        assert [e["eventType"].removeprefix("EVENT_TYPE_") for e in events[:4]] == [
            "WORKFLOW_EXECUTION_STARTED",
            "WORKFLOW_TASK_SCHEDULED",
            "WORKFLOW_EXECUTION_SIGNALED",
            "WORKFLOW_TASK_STARTED",
        ]
    path = _path_of("replenishment", "reordered_with_its_trigger")
    assert [(step, action) for step, action, _ in path] == [
        ("entry", "entered"),
        ("supply_lasts", "event"),
        ("supply_lasts", "timeout"),
        ("remind", "sent"),
        ("reordered", "timeout"),
        ("done", "ended"),
    ]


def _patches(path: Path) -> set[str]:
    """The patch ids a recorded history went through."""
    found = set()
    for event in json.loads(path.read_text())["events"]:
        marker = event.get("markerRecordedEventAttributes")
        if marker and marker["markerName"] == "core_patch":
            for payload in marker["details"]["patch-data"]["payloads"]:
                found.add(json.loads(base64.b64decode(payload["data"]))["id"])
    return found


def test_histories_cover_the_record_steps_patch_and_the_runs_before_it():
    recorded = {path.stem: RECORD_STEPS in _patches(path) for path in HISTORIES}
    assert {stem for stem, patched in recorded.items() if patched} == {
        "abandoned_cart__recorded_steps",
        "abandoned_cart__recorded_steps_opened",
        "welcome_series__recorded_steps_first_order",
        "order_ready_for_pickup__paced_picked_up",  # recorded after both patches
        "win_back__segment_came_back",  # the segment journeys, recorded since
        "birthday__gift_used",
        "store_news_december__sent",
    }
    assert not recorded["abandoned_cart__no_response"]  # recorded before the patch


def test_histories_cover_the_send_pacing_patch_and_the_runs_before_it():
    recorded = {path.stem: SEND_PACING in _patches(path) for path in HISTORIES}
    assert {stem for stem, patched in recorded.items() if patched} == {
        "order_ready_for_pickup__paced_picked_up",
        "order_ready_for_pickup__lean_steps_paced_picked_up",
    }
    # The same journey's runs before it: never paced, so never asked for the patch.
    assert not recorded["order_ready_for_pickup__picked_up"]


LEAN_HISTORIES = {
    "abandoned_cart__lean_steps",
    "abandoned_cart__lean_steps_opened",
    "welcome_series__lean_steps_first_order",
    "welcome_series__lean_steps_operator",
    "order_ready_for_pickup__lean_steps_paced_picked_up",  # with send-pacing too
    # Recorded since (with v2b-since-entry).
    "review_request__reviewed_during_wait",
    "review_request__reviewed_after_asking",
    "review_request__never_reviewed",
    "gold_tier_welcome__no_order",
    "gold_tier_welcome__downgraded",
    "replenishment__reordered_then_reminded",
    "store_pickup_hold__picked_up",
    "store_pickup_hold__cancelled",
    # Journeys reading catalogs at send time (send.only_if changes no command).
    "back_in_stock__guarded_sold_out_before_reminder",
    # With opt-best-hour and opt-split.
    "win_back__best_hour_came_back",
    "win_back__no_opens_no_order",
}
# Recorded with DSL v2's failing conditions (and lean-steps, on since before).
V2A_HISTORIES = {
    "abandoned_cart__v2a_opened",
    "support_nps__v2a_detractor",
    "support_nps__v2a_unreadable_score",
    "browse_abandonment__v2a_looked_again",
    "order_shipped__v2a_no_push",
    "price_drop__v2a_reminded",
    # Catalog journeys recorded since (send.only_if changes no command; every run since
    # v2a asks for its patch at the start).
    "price_alert__price_held",
    "recently_viewed__suggested",
}
LEAN_HISTORIES |= V2A_HISTORIES


def test_histories_cover_the_condition_errors_patch_and_the_runs_before_it():
    patches = {path.stem: _patches(path) for path in HISTORIES}
    assert {stem for stem, found in patches.items() if CONDITION_ERRORS in found} == V2A_HISTORIES
    # The same journey's runs before it replay without it.
    assert CONDITION_ERRORS not in patches["abandoned_cart__lean_steps_opened"]


def test_histories_cover_the_lean_steps_patch_and_the_runs_before_it():
    patches = {path.stem: _patches(path) for path in HISTORIES}
    assert {stem for stem, found in patches.items() if LEAN_STEPS in found} == LEAN_HISTORIES
    # Runs on it never ask for record-steps: the lean path records by itself.
    assert all(RECORD_STEPS not in patches[stem] for stem in LEAN_HISTORIES)
    assert SEND_PACING in patches["order_ready_for_pickup__lean_steps_paced_picked_up"]
    assert RECORD_STEPS in patches["abandoned_cart__recorded_steps"]  # recorded before it


def _commands(path: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The run's first `JourneyStep` and the commands it issued, in order, as (kind,
    detail): the step of an upsert, the type of an activity or local activity."""
    events = json.loads(path.read_text())["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    first = started["searchAttributes"]["indexedFields"].get("JourneyStep")
    commands = []
    for event in events:
        kind = event["eventType"].removeprefix("EVENT_TYPE_")
        detail = ""
        if upsert := event.get("upsertWorkflowSearchAttributesEventAttributes"):
            fields = upsert["searchAttributes"]["indexedFields"]
            if "JourneyStep" not in fields:
                continue  # TemporalChangeVersion, upserted with a patch marker
            detail = json.loads(base64.b64decode(fields["JourneyStep"]["data"]))
        elif marker := event.get("markerRecordedEventAttributes"):
            if marker["markerName"] != "core_local_activity":
                continue
            data = marker["details"]["data"]["payloads"][0]["data"]
            detail = json.loads(base64.b64decode(data))["activity_type"]
        elif scheduled := event.get("activityTaskScheduledEventAttributes"):
            detail = scheduled["activityType"]["name"]
        elif kind not in ("TIMER_STARTED", "WORKFLOW_EXECUTION_COMPLETED"):
            continue
        commands.append((kind, detail))
    return (json.loads(base64.b64decode(first["data"])) if first else None), commands


# Recorded since "perf-one-marker", each beside a run of the same scenario that asked
# the patches one by one (same journey, same events).
ONE_MARKER_PAIRS = {
    "abandoned_cart__one_marker_opened": "abandoned_cart__v2a_opened",
    "welcome_series__one_marker_operator": "welcome_series__lean_steps_operator",
    "order_ready_for_pickup__one_marker_paced_picked_up": (
        "order_ready_for_pickup__lean_steps_paced_picked_up"
    ),
    "review_request__one_marker_reviewed_during_wait": "review_request__reviewed_during_wait",
    "support_nps__one_marker_unreadable_score": "support_nps__v2a_unreadable_score",
    "win_back__one_marker_best_hour_came_back": "win_back__best_hour_came_back",
}


def _patch_markers(path: Path) -> int:
    events = json.loads(path.read_text())["events"]
    return sum(
        1
        for event in events
        if event.get("markerRecordedEventAttributes", {}).get("markerName") == "core_patch"
    )


def test_histories_cover_the_one_marker_patch_and_the_runs_before_it():
    patches = {path.stem: _patches(path) for path in HISTORIES}
    assert {stem for stem, found in patches.items() if ONE_MARKER in found} == set(ONE_MARKER_PAIRS)
    here = Path(__file__).parent
    compared = 0
    for stem, before in ONE_MARKER_PAIRS.items():
        # One marker: every patch before it taken unasked, at the start or at a step
        # (a paced send, a since-entry wait_for, a best-hour send, an optimized split).
        assert _patch_markers(here / f"{stem}.json") == 1, stem
        assert len(patches[before]) == _patch_markers(here / f"{before}.json") >= 1, before
        if _version(here / f"{stem}.json") != _version(here / f"{before}.json"):
            continue  # the journey changed between the recordings (welcome_series)
        # Otherwise the very same commands, in the same order, and the same path.
        assert _commands(here / f"{stem}.json") == _commands(here / f"{before}.json"), stem
        journey, scenario = stem.split("__")
        old_journey, old_scenario = before.split("__")
        ours, theirs = _path_of(journey, scenario), _path_of(old_journey, old_scenario)
        assert [e[:2] for e in ours] == [e[:2] for e in theirs], stem
        compared += 1
    assert compared >= 4


def _version(path: Path) -> str:
    """The journey version a recorded run entered (its plan, in the start input)."""
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))["plan"]["version"]


@pytest.mark.parametrize("stem", sorted(LEAN_HISTORIES | set(ONE_MARKER_PAIRS)))
def test_runs_on_lean_steps_show_and_record_only_where_they_stay(stem: str):
    shown, commands = _commands(Path(__file__).parent / f"{stem}.json")
    assert ("ACTIVITY_TASK_SCHEDULED", "journey.finish_run") not in commands
    assert commands[-2:] == [
        ("MARKER_RECORDED", "journey.record_steps"),  # the last entries; closes the run
        ("WORKFLOW_EXECUTION_COMPLETED", ""),
    ]
    _assert_only_where_it_stays(shown, commands, len(commands) - 2, {"TIMER_STARTED"})


def _assert_only_where_it_stays(
    shown: str | None, commands: list[tuple[str, str]], upto: int, record_before: set[str]
) -> None:
    """`JourneyStep` upserted, each value once, only right before a timer (where the run
    stays); a step log record only right before one of `record_before`."""
    for index, (kind, detail) in enumerate(commands[:upto]):
        later = [k for k, d in commands[index + 1 :] if d != "journey.record_steps"]
        if kind == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            assert detail != shown, f"JourneyStep upserted again as {detail!r}"
            shown = detail
            assert later[0] == "TIMER_STARTED", f"JourneyStep {detail!r} where the run goes on"
        if detail == "journey.record_steps":
            assert later[0] in record_before, "a step log record where the run goes on"


# Recorded since "perf-fold-steps", each beside a run of the same scenario on
# "perf-one-marker" (same journey version, same events).
FOLD_PAIRS = {
    "abandoned_cart__fold_steps_opened": "abandoned_cart__one_marker_opened",
    "welcome_series__fold_steps_operator": "welcome_series__one_marker_operator",
    "order_ready_for_pickup__fold_steps_paced_picked_up": (
        "order_ready_for_pickup__one_marker_paced_picked_up"
    ),
}
# Recorded since "perf-fold-steps": journeys whose last step is a send.
FOLD_LAST_SEND = {"recently_viewed__fold_steps_suggested", "store_news_december__fold_steps_sent"}
RECORD = ("MARKER_RECORDED", "journey.record_steps")
# Started showing the step where the run first stays (`first_stay`), each beside a run
# of the same scenario started showing the first step (same journey version, same events).
FIRST_STAY_PAIRS = {
    "welcome_series__first_stay_operator": "welcome_series__fold_steps_operator",
    "order_ready_for_pickup__first_stay_paced_picked_up": (
        "order_ready_for_pickup__fold_steps_paced_picked_up"
    ),
}


def _trigger_in_input(path: Path) -> bool:
    events = json.loads(path.read_text())["events"]
    started = events[0]["workflowExecutionStartedEventAttributes"]
    start = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    return start.get("trigger") is not None and not any(
        e["eventType"] == "EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED" for e in events[:3]
    )


def test_histories_cover_the_fold_steps_patch_and_the_runs_before_it():
    patches = {path.stem: _patches(path) for path in HISTORIES}
    folded = set(FOLD_PAIRS) | FOLD_LAST_SEND | set(FIRST_STAY_PAIRS)
    taking = {stem for stem, found in patches.items() if FOLD_STEPS in found}
    assert taking == folded | FIRST_WAIT_RUNS
    here = Path(__file__).parent
    for stem in folded:
        # One marker, standing for perf-one-marker (not asked) and all it stands for.
        assert patches[stem] == {FOLD_STEPS}, stem
        assert _patch_markers(here / f"{stem}.json") == 1, stem
        # The trigger came in the start input: no signal-with-start.
        assert _trigger_in_input(here / f"{stem}.json"), stem
    for stem, before in FOLD_PAIRS.items():
        assert _version(here / f"{stem}.json") == _version(here / f"{before}.json"), stem
        _, ours = _commands(here / f"{stem}.json")
        _, theirs = _commands(here / f"{before}.json")
        # The same commands but fewer step log records: the sends wrote those.
        assert [c for c in ours if c != RECORD] == [c for c in theirs if c != RECORD], stem
        assert ours.count(RECORD) < theirs.count(RECORD), stem
        journey, scenario = stem.split("__")
        old_journey, old_scenario = before.split("__")
        ours_path, theirs_path = _path_of(journey, scenario), _path_of(old_journey, old_scenario)
        assert [e[:2] for e in ours_path] == [e[:2] for e in theirs_path], stem
    for stem in FOLD_LAST_SEND:
        # The last send wrote the last entries and closed the run: no record after it.
        _, commands = _commands(here / f"{stem}.json")
        assert commands[-2:] == [
            ("ACTIVITY_TASK_SCHEDULED", "journey.send"),
            ("WORKFLOW_EXECUTION_COMPLETED", ""),
        ], stem
    _, sent = _commands(Path(__file__).parent / "store_news_december__fold_steps_sent.json")
    assert RECORD not in sent  # a run that is one send writes its whole path with it


@pytest.mark.parametrize("stem", sorted(set(FOLD_PAIRS) | set(FIRST_STAY_PAIRS)))
def test_runs_on_fold_steps_record_only_where_they_stay_and_no_send_wrote(stem: str):
    shown, commands = _commands(Path(__file__).parent / f"{stem}.json")
    ends = {"TIMER_STARTED", "WORKFLOW_EXECUTION_COMPLETED"}
    _assert_only_where_it_stays(shown, commands, len(commands), ends)


def _shown_where_it_stays(path: Path) -> list[str | None]:
    """The `JourneyStep` a run showed at each of its timers, from its start on."""
    shown, commands = _commands(path)
    at_timers = []
    for kind, detail in commands:
        if kind == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            shown = detail
        elif kind == "TIMER_STARTED":
            at_timers.append(shown)
    return at_timers


def _plan_started(path: Path) -> Plan:
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    start = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    return Plan.model_validate(start["plan"])


@pytest.mark.parametrize("stem", sorted(FIRST_STAY_PAIRS))
def test_runs_started_at_their_first_stay_show_the_same_steps_where_they_stay(stem: str):
    here = Path(__file__).parent
    ours, theirs = here / f"{stem}.json", here / f"{FIRST_STAY_PAIRS[stem]}.json"
    assert _version(ours) == _version(theirs)
    plan = _plan_started(ours)
    first, commands = _commands(ours)
    assert first == first_stay(plan) != plan.journey.steps[0].id
    _, before = _commands(theirs)
    upsert = "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"
    # The same commands but for `JourneyStep` upserts, and the same step shown wherever
    # the run stayed (a timer): the value shown from the start saves the upsert there...
    assert [c for c in commands if c[0] != upsert] == [c for c in before if c[0] != upsert]
    assert _shown_where_it_stays(ours) == _shown_where_it_stays(theirs)
    # ...unless the run first stays sooner (the paced send's deferral): then it shows that
    # step there, and its first stay again after it.
    upserts = [c for c in commands if c[0] == upsert]
    upserts_before = [c for c in before if c[0] == upsert]
    if _shown_where_it_stays(ours)[0] == first:
        upserts_before.remove((upsert, first))  # its first one: shown from the start
        assert upserts == upserts_before
    else:
        assert len(upserts) == len(upserts_before) + 1


def _era(path: Path) -> int:
    """The era a recorded run was started in: 0 for a run from before eras (no `era`)."""
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    return int(json.loads(base64.b64decode(started["input"]["payloads"][0]["data"])).get("era", 0))


def _change_version_upserts(path: Path) -> int:
    return sum(
        1
        for event in json.loads(path.read_text())["events"]
        if CHANGE_VERSION
        in event.get("upsertWorkflowSearchAttributesEventAttributes", {})
        .get("searchAttributes", {})
        .get("indexedFields", {})
    )


ERA_1 = {path.stem for path in HISTORIES if "__era1_" in path.stem}
# Era 1 runs, each beside the run of the same scenario and journey version in era 0 on
# the latest patches (perf-fold-steps, started at its first stay, first-wait-hears-arrivals).
ERA_1_PAIRS = {
    "abandoned_cart__era1_opened": "abandoned_cart__fold_steps_opened",
    "welcome_series__era1_operator": "welcome_series__first_stay_operator",
    "order_ready_for_pickup__era1_paced_picked_up": (
        "order_ready_for_pickup__first_stay_paced_picked_up"
    ),
    "recently_viewed__era1_suggested": "recently_viewed__fold_steps_suggested",
    "store_news_december__era1_sent": "store_news_december__fold_steps_sent",
    "replenishment__era1_reordered_with_its_trigger": "replenishment__reordered_with_its_trigger",
}


def test_histories_cover_era_1_and_the_runs_before_it():
    """Era 1 runs (started as the router starts them) take every patch unasked: no patch
    marker, no `TemporalChangeVersion` upsert, `JourneyEra` set at the start. Every
    history recorded before eras is kept, and replays (above) asking each patch."""
    here = Path(__file__).parent
    shipped = {p.stem for p in (Path(__file__).parents[2] / "journeys").glob("*.yaml")}
    assert {stem.split("__")[0] for stem in ERA_1} == shipped
    assert len(ERA_1) >= len(shipped) >= 17
    for stem in ERA_1:
        path = here / f"{stem}.json"
        assert _era(path) == 1, stem
        events = json.loads(path.read_text())["events"]
        started = events[0]["workflowExecutionStartedEventAttributes"]
        era = started["searchAttributes"]["indexedFields"]["JourneyEra"]
        assert json.loads(base64.b64decode(era["data"])) == 1, stem
        assert _patches(path) == set(), stem
        assert _patch_markers(path) == 0, stem
        assert _change_version_upserts(path) == 0, stem
        start = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
        assert start["trigger"] is not None, stem  # as the router starts runs
    before = {path.stem for path in HISTORIES if _era(path) == 0}
    assert before == {path.stem for path in HISTORIES} - ERA_1
    assert len(before) >= 55  # every history recorded before eras
    assert all(_patch_markers(here / f"{stem}.json") >= 1 for stem in FOLD_PAIRS)


@pytest.mark.parametrize("stem", sorted(ERA_1_PAIRS))
def test_era_1_runs_issue_the_same_commands_without_patch_markers(stem: str):
    """The same commands, in the same order, and the same path as the run of era 0 on
    the latest patches; two history events fewer for each patch that run asked (its
    marker and sdk-core's `TemporalChangeVersion` upsert)."""
    here = Path(__file__).parent
    ours, theirs = here / f"{stem}.json", here / f"{ERA_1_PAIRS[stem]}.json"
    assert _era(theirs) == 0
    assert _version(ours) == _version(theirs)
    assert _commands(ours) == _commands(theirs)
    journey, scenario = stem.split("__")
    old_journey, old_scenario = ERA_1_PAIRS[stem].split("__")
    ours_path, theirs_path = _path_of(journey, scenario), _path_of(old_journey, old_scenario)
    assert [e[:2] for e in ours_path] == [e[:2] for e in theirs_path]
    markers = _patch_markers(theirs)
    assert markers >= 1 and _change_version_upserts(theirs) == markers
    ours_events = json.loads(ours.read_text())["events"]
    theirs_events = json.loads(theirs.read_text())["events"]
    assert len(ours_events) == len(theirs_events) - 2 * markers


def _as_started_in_era_1(path: Path) -> WorkflowHistory:
    """The history a worker from before eras records for a run the router started in era
    1: the same as for an era 0 run (it reads no `era`, so asks `perf-fold-steps`), but
    for the `era` in the recorded input."""
    history = json.loads(path.read_text())
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]
    payload = started["input"]["payloads"][0]
    start = json.loads(base64.b64decode(payload["data"]))
    assert "era" not in start
    payload["data"] = base64.b64encode(json.dumps({**start, "era": 1}).encode()).decode()
    return WorkflowHistory.from_json(path.stem, json.dumps(history))


@pytest.mark.parametrize(
    "stem",
    ["abandoned_cart__fold_steps_opened", "replenishment__reordered_with_its_trigger"],
)
async def test_an_era_1_run_an_older_worker_started_replays_on_its_markers(stem: str):
    """During a rolling deployment a worker from before eras may run the first task of a
    run started in era 1: it records `perf-fold-steps` (and, at a first `wait_for`,
    `first-wait-hears-arrivals`). sdk-core fails a replay that meets a patch marker no
    command asks for, so a newer worker, replaying, finds the marker and asks the patches
    as that worker did."""
    path = Path(__file__).parent / f"{stem}.json"
    assert FOLD_STEPS in _patches(path)
    replayer = Replayer(workflows=[JourneyWorkflow], data_converter=plain_data_converter)
    history = _as_started_in_era_1(path)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure


@workflow.defn(name=JOURNEY_WORKFLOW, sandboxed=False)
class _ChangedInterpreter:
    """Issues different commands than the recorded runs: must not replay."""

    @workflow.run
    async def run(self, _input: dict) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def test_a_changed_interpreter_is_caught_as_nondeterministic():
    replayer = Replayer(workflows=[_ChangedInterpreter], data_converter=plain_data_converter)
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(_history(history_path("abandoned_cart", "no_response")))


def test_histories_cover_the_optimization_patches_and_the_runs_before_them():
    """Only steps with `timing: best` or `split.optimize` ask for their patches: the
    win-back as shipped since, one customer with opens at 19:00 Paris time, one with
    none; every older history replays without them."""
    recorded = {path.stem: _patches(path) for path in HISTORIES}
    optimized = {"win_back__best_hour_came_back", "win_back__no_opens_no_order"}
    assert {stem for stem, found in recorded.items() if BEST_HOUR in found} == optimized
    assert {stem for stem, found in recorded.items() if OPTIMIZED_SPLIT in found} == optimized
    best = _path_of("win_back", "best_hour_came_back")
    timing = next(detail for _, action, detail in best if action == "timing")
    assert timing.startswith("best hour 19:00 Europe/Paris from 3 opens and clicks; send at ")
    assert [action for _, action, _ in best][-3:] == ["timing", "sent", "converted"]
    split = next(detail for _, action, detail in best if action == "split")
    assert "(Thompson sampling on order_placed: tag_offer_a 0/0, tag_offer_b 0/0)" in split
    none = _path_of("win_back", "no_opens_no_order")
    timing = next(detail for _, action, detail in none if action == "timing")
    assert timing.endswith("send now")
    assert [action for _, action, _ in none][-5:] == [
        "sent",
        "timeout",
        "webhook",
        "updated",
        "ended",
    ]
