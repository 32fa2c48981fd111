"""Every `workflow.patched()` id of the interpreter, what it changed, since when, and how
to find the runs that still need the code from before it.

A run of era 1 (`JourneyInput.era`: the router starts every run in
`journeyman.contracts.CURRENT_ERA`) takes every patch listed here up to
`first-wait-hears-arrivals` without asking it: no marker, no `TemporalChangeVersion`
upsert (workflows/eras.py). A patch added later is asked on every era.

A patch lives in three stages (docs/versioning.md, *Retiring a patch*): `patched(ID)` while
runs from before it may still be open; `deprecate_patch(ID)` once none is (the old branch
goes, the marker stays for the runs that recorded it); then nothing, once no open run has
the marker either. `journeyman runs --without-patch ID` lists the open runs a retirement
would break, with `without_query`.

Pure data: the workflow sandbox imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from journeyman.names import JOURNEY_ERA

# The search attribute Temporal's SDKs upsert with the ids of the patches a run took.
CHANGE_VERSION = "TemporalChangeVersion"
# The search attribute the router sets at a run's start with its era; runs from before
# eras have none.
ERA_ATTRIBUTE = JOURNEY_ERA.name

RECORD_STEPS = "record-steps"
SEND_PACING = "send-pacing"
LEAN_STEPS = "lean-steps"
SINCE_ENTRY = "v2b-since-entry"
CONDITION_ERRORS = "v2a-condition-errors"
BEST_HOUR = "opt-best-hour"
OPTIMIZED_SPLIT = "opt-split"
ONE_MARKER = "perf-one-marker"
FOLD_STEPS = "perf-fold-steps"
FIRST_WAIT_HEARS = "first-wait-hears-arrivals"


@dataclass(frozen=True)
class Patch:
    id: str
    # What runs through the patch do that runs from before it do not.
    changed: str
    # The commit and date it came with.
    since: str
    # `start`: asked once at the start of every run of era 0, so one without the marker is on the
    # old path to its end. `step`: asked only when a run reaches such a step, so a run
    # without the marker may simply not have reached one (the query over-counts: safe).
    asked: Literal["start", "step"]
    # The state of its life: `patched` (both branches kept) or `deprecated`.
    stage: Literal["patched", "deprecated"] = "patched"
    # A later patch whose runs never ask this one (they need neither branch, or take
    # the new one unasked): a run with its marker does not lack this one.
    superseded_by: str | None = None
    # The first era whose runs take it unasked (no marker): a run started in that era or
    # a later one (`JourneyEra` >= it) does not lack it. None: asked on every era.
    era: int | None = None


PATCHES: tuple[Patch, ...] = (
    Patch(
        RECORD_STEPS,
        "the run writes its path to the step log with a `journey.record_steps` local "
        "activity before each step and before it finishes",
        "4f52287, 2026-11-22",
        "step",
        superseded_by=LEAN_STEPS,
        era=1,
    ),
    Patch(
        SEND_PACING,
        "a send held for its provider's pace waits until its slot (10 ms floor) instead of "
        "at least a minute",
        "912ca27, 2026-11-30",
        "step",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        LEAN_STEPS,
        "JourneyStep upserted and the step log written only where the run stays; the last "
        "record closes the run instead of `journey.finish_run`",
        "c183442, 2026-11-30",
        "start",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        SINCE_ENTRY,
        "a `wait_for` with `since: entry` first looks among the events the run already received",
        "4adcb8e, 2026-12-07",
        "step",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        CONDITION_ERRORS,
        "a condition that fails to evaluate goes to `on_error` or ends the run with outcome "
        "`error` instead of counting as false; numbers sent as text compare as numbers",
        "5a04f62, 2026-12-07",
        "start",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        BEST_HOUR,
        "a send with `timing: best` first waits for the customer's best hour "
        "(`optimize.best_send_time`)",
        "3efcf92, 2026-12-07",
        "step",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        OPTIMIZED_SPLIT,
        "a split with `optimize` draws its case by Thompson sampling on counts an activity "
        "reads (`optimize.split_counts`)",
        "3efcf92, 2026-12-07",
        "step",
        superseded_by=ONE_MARKER,
        era=1,
    ),
    Patch(
        ONE_MARKER,
        "one marker at the very start of a run stands for every patch above: the run takes "
        "lean-steps, v2a-condition-errors, send-pacing, v2b-since-entry, opt-best-hour and "
        "opt-split without asking them (no marker each); runs without it ask each as before",
        "interp branch, 2026-12-07",
        "start",
        superseded_by=FOLD_STEPS,
        era=1,
    ),
    Patch(
        FOLD_STEPS,
        "a send writes the path entries not logged yet and its own to the step log, closing "
        "the run when it is the last step, instead of a `journey.record_steps` local "
        "activity after it; stands for perf-one-marker and every patch it stands for",
        "interp branch, 2026-12-07",
        "start",
        era=1,
    ),
    Patch(
        FIRST_WAIT_HEARS,
        "a `wait_for` (`since: step`) that is the run's first step hears the events that "
        "reached the run with its trigger, before the worker ran the run's first task; "
        "before, they were heard before the step started and never matched it",
        "since branch, 2026-12-07",
        "step",
        era=1,
    ),
)

BY_ID = {patch.id: patch for patch in PATCHES}


def without_query(patch_id: str) -> str:
    """The visibility query for the open runs that have not taken patch `patch_id`: those
    still on the code from before it. KeyError for an id that is not a patch.

    A run lacks it when it has no marker for it nor for a patch that supersedes it, and
    it was not started in an era that takes it unasked (`JourneyEra`, set at the start:
    none on runs from before eras)."""
    ids = [patch_id]
    while (later := BY_ID[ids[-1]].superseded_by) is not None:
        ids.append(later)  # record-steps -> lean-steps -> perf-one-marker -> perf-fold-steps
    lacking = " AND ".join(f'{CHANGE_VERSION} != "{i}"' for i in ids)
    query = f'ExecutionStatus = "Running" AND ({CHANGE_VERSION} IS NULL OR ({lacking}))'
    era = BY_ID[patch_id].era
    if era is not None:
        query += f" AND ({ERA_ATTRIBUTE} IS NULL OR {ERA_ATTRIBUTE} < {era})"
    return query
