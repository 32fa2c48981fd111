"""The step log and `JourneyStep`: where a run writes its path, and where it shows its
step, in each era of the interpreter. Each era is one class; a run picks one at start.

- `Lean` (patch `lean-steps`, and every run since `perf-one-marker`): `JourneyStep` is
  upserted and the path written (`journey.record_steps`, a local activity, for the
  entries not recorded yet) only where the run stays: before it blocks in a wait, a
  wait_for or a deferred send's wait, and before it continues as new. The last record
  closes the run's `journey_runs` row with its outcome, in the same transaction. Since
  `perf-fold-steps` a send that is not deferred writes the entries before it and its
  own (`_fold_record`, `_log_sent`), closing the row when it is the last step, so the
  record where the run stays next, or at its end, has nothing left to write.
- `EveryStep` (before `lean-steps`): `JourneyStep` upserted at every step; the path
  written before each step and at the end if the run took `record-steps` (asked at its
  first record), nothing written before that patch; the row closed by
  `journey.finish_run` after the last record.

Rows are keyed by the first run id and the entry's place in the whole chain's path, so
a retried or replayed record counts once. A failed record does not fail the run: its
entries go with the next record.
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from journeyman.contracts import FinishRunInput, PathEntry, RecordStepsInput
from journeyman.names import FINISH_RUN_ACTIVITY, JOURNEY_STEP, RECORD_STEPS_ACTIVITY
from workflows.base import RunBase
from workflows.options import (
    ACTIVITY_TIMEOUT,
    LOCAL_TIMEOUT,
    RECORD_DEADLINE,
    RECORD_RETRY,
    RETRY,
)


class Lean:
    """Show the step and write the path only where the run stays; close with the last
    record."""

    def __init__(self, run: StepLog) -> None:
        self.run = run

    async def before_step(self) -> None:
        return None

    def show(self, step_id: str) -> None:
        return None  # `stay` does, where the run stays

    async def stay(self) -> None:
        """Show the step in `JourneyStep` unless it shows it already (the router sets at
        start the step where the run will first stay, `journeyman.events.starting.
        first_stay`; continue-as-new keeps the value), and write the path."""
        step_id = self.run._require_state().current
        shown = workflow.info().typed_search_attributes.get(JOURNEY_STEP)
        if step_id is not None and step_id != shown:
            workflow.upsert_search_attributes([JOURNEY_STEP.value_set(step_id)])
        await self.run._write_path()

    async def before_continue_as_new(self) -> None:
        # The new run must not start with entries the log lacks (it keeps PATH_KEPT).
        await self.run._write_path()

    async def finish(self, outcome: str) -> None:
        if self.run._closed_as == outcome and not self.run._unrecorded():
            return  # closed by the last step's send, which wrote every entry
        await self.run._write_path(outcome)  # the last entries, and the run's row closed


class EveryStep:
    """Before `lean-steps`: show every step; write the path before each step (patch
    `record-steps`); close the run with `journey.finish_run`."""

    def __init__(self, run: StepLog) -> None:
        self.run = run

    async def before_step(self) -> None:
        if self.run._require_era().records_steps():
            await self.run._write_path()

    def show(self, step_id: str) -> None:
        workflow.upsert_search_attributes([JOURNEY_STEP.value_set(step_id)])

    async def stay(self) -> None:
        return None

    async def before_continue_as_new(self) -> None:
        return None  # written before the step that led here

    async def finish(self, outcome: str) -> None:
        await self.before_step()
        info = workflow.info()
        await workflow.execute_activity(
            FINISH_RUN_ACTIVITY,
            FinishRunInput(
                workflow_id=info.workflow_id,
                run_id=info.first_execution_run_id,
                outcome=outcome,
                ended_at=workflow.now(),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
            summary=f"record run {outcome}",
        )


class StepLog(RunBase):
    _book: Lean | EveryStep  # the run's era, set by `_open_book` at its start

    def _open_book(self) -> None:
        self._book = Lean(self) if self._require_era().lean else EveryStep(self)

    def _show_step(self, step_id: str) -> None:
        """Name the step in the current details (and, by era, in `JourneyStep`)."""
        plan = self._require_plan()
        self._book.show(step_id)
        step = plan.journey.steps[plan.step_index(step_id)]
        label = f" ({step.name})" if step.name else ""
        workflow.set_current_details(
            f"**{plan.journey.name}** v{plan.version} · customer `{self._customer_id}`\n\n"
            f"Step `{step_id}`{label}"
        )

    async def _write_path(self, outcome: str | None = None) -> None:
        """Write the path entries not in the step log yet, all in one local activity.

        With an `outcome` (the run's end) the same record closes the run's
        `journey_runs` row; it is retried until it succeeds, since the outcome must not
        be lost. Other records give up after a few tries and leave their entries to the
        next one. An entry's seq is its place in the whole chain's path, dropped entries
        counted (they were recorded before being dropped, unless recording failed for
        longer than `PATH_KEPT` entries: then those are lost to the log, and only to it).
        """
        state = self._require_state()
        if outcome is None and not self._unrecorded():
            return
        record = self._record_input(outcome, workflow.now() if outcome is not None else None)
        first_seq, entries = record.first_seq, record.entries
        span = f"{first_seq}-{first_seq + len(entries) - 1}" if entries else "none"
        try:
            await self._record(record, span)
        except (ActivityError, ApplicationError, TemporalTimeoutError) as exc:
            # A local activity's failure arrives as the activity's own error (or its
            # timeout), not wrapped in an ActivityError. Retried without limit, the
            # closing record fails only on an error that no retry can mend.
            if outcome is not None:
                workflow.logger.error("step log: run %s not recorded: %s", outcome, exc)
            else:
                workflow.logger.warning(
                    "step log: entries %s not recorded, tried again with the next record: %s",
                    span,
                    exc,
                )
            return
        state.recorded = first_seq + len(entries)

    def _unrecorded(self) -> list[PathEntry]:
        state = self._require_state()
        return state.path[max(state.recorded, state.path_dropped) - state.path_dropped :]

    def _record_input(self, outcome: str | None, ended_at: datetime | None) -> RecordStepsInput:
        """A record of the path entries not in the step log yet (an entry's seq is its
        place in the whole chain's path, dropped entries counted)."""
        state, plan, info = self._require_state(), self._require_plan(), workflow.info()
        return RecordStepsInput(
            run_id=info.first_execution_run_id,
            journey_id=plan.journey.id,
            version=plan.version,
            customer_id=self._customer_id,
            first_seq=max(state.recorded, state.path_dropped),
            entries=self._unrecorded(),
            workflow_id=info.workflow_id,
            outcome=outcome,
            ended_at=ended_at,
            entry_key=self._entry_key,
        )

    def _fold_record(self, last: bool) -> RecordStepsInput | None:
        """Patch `perf-fold-steps`: what a send writes to the step log with its own entry
        (in the send activity, not a local activity after it); closing the run as
        `completed` when the send is its `last` step, at the time of that entry."""
        if not self._require_era().folds:
            return None
        return self._record_input("completed" if last else None, None)

    def _log_sent(self, entry: PathEntry, written: RecordStepsInput | None) -> None:
        """A send's entry in the path; with `written`, the record the send wrote with it:
        the entry goes at the place the send gave it (after the entries it wrote, before
        any an operator added meanwhile), and those are recorded."""
        state = self._require_state()
        if written is None:
            state.path.append(entry)
            return
        seq = written.first_seq + len(written.entries)
        state.path.insert(seq - state.path_dropped, entry)
        state.recorded = max(state.recorded, seq + 1)
        self._closed_as = written.outcome

    async def _record(self, record: RecordStepsInput, span: str) -> None:
        closing = record.outcome is not None
        await workflow.execute_local_activity(
            RECORD_STEPS_ACTIVITY,
            record,
            result_type=int,
            start_to_close_timeout=LOCAL_TIMEOUT,
            schedule_to_close_timeout=None if closing else RECORD_DEADLINE,
            retry_policy=RETRY if closing else RECORD_RETRY,
            summary=(
                f"record run {record.outcome}, path entries {span}"
                if closing
                else f"record path entries {span}"
            ),
        )
