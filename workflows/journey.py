"""The journey interpreter: one workflow run per customer entry into a journey.

Contract:
- Input is a compiled `Plan` (the journey version the customer entered) plus the
  customer id and entry key; the run never reads journey files, settings or the clock.
- Events arrive only through the `event` signal: the trigger comes with
  signal-with-start, later events from the router. Duplicate message ids are ignored.
- A `goal` event ends the run as converted and an `exit` event as exited, at any step,
  including while a wait, a wait_for or a deferred send is pending.
- Every side effect is an activity; conditions that read only `event`, `trigger`,
  `journey` and `now` are evaluated here, the rest by an activity.
- The `state` query answers the current step and the path so far; the current details
  name every step as the run reaches it, and the `JourneyStep` search attribute names
  the step where the run stays (patch `lean-steps`: a wait, a wait_for or a deferred
  send's wait, upserted only when it changes; the router sets the first step at start;
  before the patch: every step).
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
  failed record does not fail the run: its entries go with the next record.
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

The interpreter's parts, each a module of workflows/ (bottom up, see workflows/base.py):
eras.py (which patches a run is on: every `workflow.patched()`), base.py (the run's
state and path), steplog.py (the step log and `JourneyStep` by era), conditions.py,
waits.py, sends.py, steps.py, and this module (the workflow: its signals, updates,
query and the step loop). Since patch `perf-one-marker` a new run records one marker
at its start for every patch before it.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    # The layers of the interpreter (workflows/base.py) are pure, so they are passed
    # through the sandbox: a new run executes only this module again, not all of them.
    # The modules of the types a run decodes are named here too: pydantic resolves a
    # dataclass's annotations in the sandbox's module table (journeyman.codec).
    import journeyman.optimize  # noqa: F401  (BestTime, SplitCounts)
    from journeyman.dsl.chance import in_holdout
    from journeyman.names import (
        END_RUN_UPDATE,
        EVENT_SIGNAL,
        JOURNEY_WORKFLOW,
        MOVE_TO_UPDATE,
        SKIP_WAIT_UPDATE,
        STATE_QUERY,
        WAKE_SIGNAL,
    )
    from journeyman.types import (
        CustomerEvent,
        JourneyInput,
        JourneyResult,
        OperatorRequest,
        RunState,
        RunStatus,
    )
    from workflows.eras import Era
    from workflows.options import PATH_KEPT, Finished, Moved
    from workflows.options import RETRY as RETRY  # imported from here by bench/, tests/
    from workflows.options import SEND_HEARTBEAT as SEND_HEARTBEAT
    from workflows.options import SEND_TIMEOUT as SEND_TIMEOUT
    from workflows.steps import Steps


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow(Steps):
    # -- handlers ---------------------------------------------------------------------

    @workflow.signal(name=EVENT_SIGNAL)
    def on_event(self, event: CustomerEvent) -> None:
        if event.message_id in self._seen:
            return
        self._remember(event.message_id)
        self._inbox.append(event)

    @workflow.query(name=STATE_QUERY)
    def state(self) -> RunStatus:
        plan, state = self._plan, self._state
        return RunStatus(
            journey_id=plan.journey.id if plan else "",
            version=plan.version if plan else "",
            customer_id=self._customer_id,
            current_step=state.current if state else None,
            waiting_for=self._waiting_for,
            holdout=state.holdout if state else False,
            path=list(state.path) if state else [],
        )

    @workflow.signal(name=WAKE_SIGNAL)
    def on_wake(self) -> None:
        self._wake = True

    # -- operator controls ------------------------------------------------------------

    @workflow.update(name=SKIP_WAIT_UPDATE)
    def skip_wait(self, request: OperatorRequest) -> str:
        self._skip = True
        return self._log_operator(f"skip_wait by {request.who}: {request.why}")

    @skip_wait.validator
    def _validate_skip_wait(self, request: OperatorRequest) -> None:
        state = self._validate_operator(request)
        if not self._waiting:
            raise ValueError(f"nothing to skip: the run is not waiting (at step {state.current})")

    @workflow.update(name=MOVE_TO_UPDATE)
    def move_to(self, request: OperatorRequest) -> str:
        self._move_to = request.to
        return self._log_operator(f"move_to {request.to} by {request.who}: {request.why}")

    @move_to.validator
    def _validate_move_to(self, request: OperatorRequest) -> None:
        self._validate_operator(request)
        plan = self._require_plan()
        valid = [step.id for step in plan.journey.steps]
        if not request.to:
            raise ValueError("to is required: the step to move to (" + ", ".join(valid) + ")")
        if request.to not in valid:
            raise ValueError(
                f"no step {request.to!r} in journey {plan.journey.id} version {plan.version}; "
                "valid steps: " + ", ".join(valid)
            )

    @workflow.update(name=END_RUN_UPDATE)
    def end_run(self, request: OperatorRequest) -> str:
        self._end = True
        return self._log_operator(f"end_run by {request.who}: {request.why}")

    @end_run.validator
    def _validate_end_run(self, request: OperatorRequest) -> None:
        self._validate_operator(request)

    def _validate_operator(self, request: OperatorRequest) -> RunState:
        if not request.who or not request.who.strip():
            raise ValueError("who is required: the name of the operator")
        if not request.why or not request.why.strip():
            raise ValueError("why is required: the reason for the action")
        state = self._state
        if state is None:
            raise ValueError("the run has not started yet")
        if state.current is None:
            raise ValueError("the run is finished")
        if self._end:
            raise ValueError("the run is ending: end_run was already asked")
        return state

    def _log_operator(self, detail: str) -> str:
        self._log(self._require_state().current or "", "operator", detail)
        return detail

    # -- the run ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        self._plan = inp.plan
        self._customer_id = inp.customer_id
        self._entry_key = inp.entry_key
        # Before any command: the patches this run is on (workflows/eras.py).
        self._era = Era()
        self._open_book()
        state = await self._enter(inp)
        try:
            await self._steps(inp)
            outcome = "ended" if state.path and state.path[-1].action == "ended" else "completed"
        except Finished as finished:
            outcome = finished.outcome
        state.current = None
        self._waiting_for = None
        await self._book.finish(outcome)
        return JourneyResult(outcome=outcome, path=list(state.path))

    async def _enter(self, inp: JourneyInput) -> RunState:
        """The run's state: new from the trigger, or carried across continue-as-new."""
        if inp.state is not None:
            state = self._state = inp.state
            for message_id in state.seen:
                self._remember(message_id)
            self._inbox = [*state.pending, *self._inbox]
            return state
        if not self._inbox:
            await workflow.wait_condition(lambda: bool(self._inbox))
        trigger = self._inbox.pop(0)
        plan = self._require_plan()
        state = self._state = RunState(
            trigger=trigger,
            last_event=trigger,
            current=plan.journey.steps[0].id,
            entered_at=workflow.now(),
            holdout=in_holdout(plan, inp.customer_id),
        )
        detail = f"entered on {trigger.name}" + (" (holdout)" if state.holdout else "")
        self._log("entry", "entered", detail)
        return state

    async def _steps(self, inp: JourneyInput) -> None:
        """Step after step until the journey ends; Finished when a goal, an exit, an
        operator or a failed condition ends it."""
        state = self._require_state()
        while state.current is not None:
            await self._book.before_step()
            # A pending operator control is acted on first: it is not carried over.
            if not self._operator_pending() and self._should_continue_as_new(inp.history_limit):
                await self._book.before_continue_as_new()
                if not self._operator_pending():  # none came during the record
                    self._continue_as_new(inp)
            try:
                await self._check_interrupts()
                step_id = state.current
                state.visits[step_id] = state.visits.get(step_id, 0) + 1
                self._show_step(step_id)
                state.current = await self._run_step(step_id)
            except Moved as moved:
                self._waiting_for = None
                state.current = moved.step_id

    def _should_continue_as_new(self, history_limit: int) -> bool:
        """Well before Temporal's 50k-event limit; the server may also suggest it."""
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested() or info.get_current_history_length() > history_limit
        )

    def _continue_as_new(self, inp: JourneyInput) -> None:
        state = self._require_state()
        dropped = max(0, len(state.path) - PATH_KEPT)
        state.path = state.path[dropped:]
        state.path_dropped += dropped
        state.seen = list(self._seen_order)
        state.pending = list(self._inbox)
        workflow.continue_as_new(
            JourneyInput(
                plan=inp.plan,
                customer_id=inp.customer_id,
                entry_key=inp.entry_key,
                state=state,
                history_limit=inp.history_limit,
            )
        )
