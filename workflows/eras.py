"""Which patches a run is on: every `workflow.patched()` of the interpreter, asked here.

A run is versioned first by its era, `JourneyInput.era`, which the router sets at the
start (`journeyman.contracts.CURRENT_ERA`) and continue-as-new carries: the input is the
first event of the history, so a replay reads the same era. A run of era 1 or later takes
every patch listed up to `first-wait-hears-arrivals` without asking it: it records no
marker and sdk-core no `TemporalChangeVersion` upsert (two history events fewer than a
run on `perf-fold-steps`). A patch added after era 1 is asked with `workflow.patched()`
on every era, and retired as patches are (docs/versioning.md).

A run of era 0 (its recorded input has no `era`: started before eras) asks the patches
exactly as the code before eras did, below, so every history recorded before replays
unchanged. So does a run of era 1 that a worker from before eras ran first (it read no
`era` and asked `perf-fold-steps`): replaying, it finds that marker and keeps the path it
was on. sdk-core fails a replay that meets a (not deprecated) patch marker no command
asks for (`patch_marker_handling`, workflow_machines.rs), so that marker must be asked.
Asked only while replaying, `workflow.patched()` records nothing: the SDK answers it from
the markers in the history (`_patches_notified`), and a new run of era 1 never asks it.

Within era 0: a run started since `perf-fold-steps` records that one marker at its very
start, and takes `perf-one-marker` without asking it (and so every patch that one stands
for); it asks `first-wait-hears-arrivals` where a first `wait_for` needs it.

A run started since `perf-one-marker` records that one marker at its very start and
takes every patch before it without asking: no marker for `lean-steps` or
`v2a-condition-errors` at the start, none for `send-pacing`, `v2b-since-entry`,
`opt-best-hour` or `opt-split` at their steps. A run without it (a replay of a history
recorded before it, or a run started before it and picked up by a new worker) asks each
patch exactly where and when the code before it did, so its commands are unchanged.

This is safe because the SDK memoizes the answer of `workflow.patched(ID)` for the
whole run (`_WorkflowInstanceImpl.workflow_patch`, `_patches_memoized`): asked first,
before any other command, the answer holds for every later step, in the first
execution and in any replay of it (a replay answers from the recorded marker).
"""

from __future__ import annotations

from temporalio import workflow

from workflows.patches import (
    BEST_HOUR,
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


class Era:
    """The patches of one run. Make it first thing in `run()`: it may record markers."""

    def __init__(self, era: int = 0) -> None:
        # Era 1: every patch up to `first-wait-hears-arrivals` taken unasked, but for a run
        # a worker from before eras started (its marker is in the history being replayed).
        self.unasked = era >= 1 and not (
            workflow.unsafe.is_replaying() and workflow.patched(FOLD_STEPS)
        )
        if self.unasked:
            self.folds = self.bundled = self.lean = self.v2a = True
            return
        # Asked once, before any command: a run takes one path from start to end. Runs
        # recorded before a patch replay without its marker and keep the old path.
        # A send writes the step log before it (patch `perf-fold-steps`); since, the one
        # marker of a new run, standing for `perf-one-marker` and all it stands for.
        self.folds = workflow.patched(FOLD_STEPS)
        self.bundled = self.folds or workflow.patched(ONE_MARKER)
        # The step log where the run stays, the run closed by the last record.
        self.lean = self.bundled or workflow.patched(LEAN_STEPS)
        # A condition that fails to evaluate is never taken as false.
        self.v2a = self.bundled or workflow.patched(CONDITION_ERRORS)

    # Patches asked only where a run reaches such a step (before `perf-one-marker`).

    def since_entry(self) -> bool:
        return self.bundled or workflow.patched(SINCE_ENTRY)

    def send_pacing(self) -> bool:
        return self.bundled or workflow.patched(SEND_PACING)

    def best_hour(self) -> bool:
        return self.bundled or workflow.patched(BEST_HOUR)

    def optimized_split(self) -> bool:
        return self.bundled or workflow.patched(OPTIMIZED_SPLIT)

    def first_wait_hears_arrivals(self) -> bool:
        """Taken unasked in era 1. Asked on era 0 by every run whose first step is a
        `wait_for` (`since: step`) with events in its inbox when it gets there: runs from
        before replay without the marker and keep draining those events before the step."""
        return self.unasked or workflow.patched(FIRST_WAIT_HEARS)

    def records_steps(self) -> bool:
        """Before `lean-steps` only (never reached in era 1, which is lean): whether the
        run writes the step log at all."""
        assert not self.unasked, "era 1 runs take lean-steps"
        return workflow.patched(RECORD_STEPS)
