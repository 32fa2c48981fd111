"""The journey interpreter: one workflow run per customer entry into a journey.

Contract:
- Input is a compiled `Plan` (the journey version the customer entered) plus the
  customer id and entry key; the run never reads journey files, settings or the clock.
- The trigger comes in the start input (`JourneyInput.trigger`; runs started before
  2026-12-07 got it as the first `event` signal, with signal-with-start); later events
  arrive only through the `event` signal, from the router. Duplicate message ids
  (the trigger's too) are ignored.
- A `goal` event ends the run as converted and an `exit` event as exited, at any step,
  including while a wait, a wait_for or a deferred send is pending.
- Every side effect is an activity; conditions that read only `event`, `trigger`,
  `journey` and `now` are evaluated here, the rest by an activity.
- The `state` query answers the current step and the path so far; the current details
  name every step as the run reaches it, and the `JourneyStep` search attribute names
  the step where the run stays (patch `lean-steps`: a wait, a wait_for or a deferred
  send's wait, upserted only when it changes; the router sets at start the first step
  where the run will stay, when the plan alone tells it, else the first step; before
  the patch: every step).
- Operators steer a run with validated updates, each recorded in the path with who and
  why: `skip_wait` ends the current wait (wait, wait_for as a timeout, a deferred
  send's wait) as if its timer fired; `move_to` goes to a step once the current one is
  interrupted (a wait) or done (an activity); `end_run` finishes as `ended_by_operator`.
  The handlers only set state and wake the waiting coroutine; the step loop acts.
- The `wake` signal ends a deferred send's wait early (its journey was resumed), so
  the send is tried again now rather than at the end of its deferral.
- Long runs continue as new at a step boundary, carrying their state.
- A send held for its provider's pace (a `paced` deferral) waits until its slot exactly,
  not the minute other deferrals wait at least (patch `send-pacing`).
- The path goes to the step log (`journey.record_steps`, a local activity, for the
  entries not recorded yet) wherever the run stays, so the log is complete while it
  waits: before it blocks in a wait, a wait_for or a deferred send's wait, before it
  continues as new, and at the end (patch `lean-steps`; with `record-steps` alone:
  before each step and at the end). Rows are keyed by the first run id and the entry's
  place in the whole chain's path, so a retried or replayed record counts once. A
  failed record does not fail the run: its entries go with the next record. Since
  patch `perf-fold-steps` a send writes the entries before it and its own in the send
  activity, so a run that stays right after a send, or ends with one, needs no record
  there (the last step's send closes the run's row).
- The run's `journey_runs` row is closed with its outcome by the last record, in the
  same transaction, retried until it succeeds, idempotently (patch `lean-steps`; before
  it, by the `finish_run` activity after the last record).

- A condition that fails to evaluate (a branch case, a wait_for `when`, a goal or exit
  `when`, a `wait: {at}`) is never taken as false: the run goes to the step's
  `on_error`, or ends with outcome `error` (patch `v2a-condition-errors`; before it: the
  error was logged and the condition taken as not met). `wait: {at}` is evaluated by a
  local activity, then waits on a durable timer. Expressions see `steps.<send step id>`
  (channel, outcome, reason) once that send ran.

Changes to the commands this code issues go behind `workflow.patched()` (see
docs/versioning.md); the replay tests in tests/histories guard it.

The interpreter's parts, each a module of workflows/ (bottom up, see
workflows/interpreter.py): eras.py (which patches a run is on: every
`workflow.patched()`), base.py (the run's state and path), steplog.py (the step log
and `JourneyStep` by era), conditions.py, waits.py, sends.py, steps.py, interpreter.py
(the step loop, what the handlers do) and this module (the workflow: its name,
signals, updates and query, each handed to the run's `Interpreter`). A run the router
starts is of era 1 (`JourneyInput.era`): it takes every patch up to
`first-wait-hears-arrivals` unasked and records no patch marker; a run from before eras
asks each patch as the code before did (workflows/eras.py, docs/versioning.md).
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # The interpreter's modules hold no state of their own and are passed through the
    # sandbox: a sandbox that runs this module again for a run (the SDK's default
    # runner: the replayer, tests) executes only this module, not all of them. The
    # product's worker passes this module through too (journeyman.wiring
    # WORKFLOW_MODULES): it holds no state either, so a new run executes none of it.
    # The modules of the types a run decodes are named here as well, for the
    # sandboxes that import this module (journeyman.platform.codec builds the type
    # adapters against the process's module table in every case).
    import journeyman.optimization.optimize  # noqa: F401  (BestTime, SplitCounts)
    from journeyman.contracts import (
        CustomerEvent,
        JourneyInput,
        JourneyResult,
        OperatorRequest,
        RunStatus,
    )
    from journeyman.names import (
        END_RUN_UPDATE,
        EVENT_SIGNAL,
        JOURNEY_WORKFLOW,
        MOVE_TO_UPDATE,
        SKIP_WAIT_UPDATE,
        STATE_QUERY,
        WAKE_SIGNAL,
    )
    from workflows.interpreter import Interpreter
    from workflows.options import RETRY as RETRY  # imported from here by tests/
    from workflows.options import SEND_HEARTBEAT as SEND_HEARTBEAT
    from workflows.options import SEND_TIMEOUT as SEND_TIMEOUT


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    def __init__(self) -> None:
        self._interpreter = Interpreter()

    # -- handlers ---------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: CustomerEvent) -> None:
        self._interpreter.on_event(event)

    @workflow.query(name=STATE_QUERY)
    def state(self) -> RunStatus:
        return self._interpreter.status()

    @workflow.signal(name=WAKE_SIGNAL)
    def on_wake(self) -> None:
        self._interpreter.wake()

    # -- operator controls ------------------------------------------------------------

    @workflow.update(name=SKIP_WAIT_UPDATE)
    def skip_wait(self, request: OperatorRequest) -> str:
        return self._interpreter.skip_wait(request)

    @skip_wait.validator
    def _validate_skip_wait(self, request: OperatorRequest) -> None:
        self._interpreter.validate_skip_wait(request)

    @workflow.update(name=MOVE_TO_UPDATE)
    def move_to(self, request: OperatorRequest) -> str:
        return self._interpreter.move_to(request)

    @move_to.validator
    def _validate_move_to(self, request: OperatorRequest) -> None:
        self._interpreter.validate_move_to(request)

    @workflow.update(name=END_RUN_UPDATE)
    def end_run(self, request: OperatorRequest) -> str:
        return self._interpreter.end_run(request)

    @end_run.validator
    def _validate_end_run(self, request: OperatorRequest) -> None:
        self._interpreter.validate_operator(request)

    # -- the run ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        return await self._interpreter.run(inp)
