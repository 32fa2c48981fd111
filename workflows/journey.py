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
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.patches import (
    BEST_HOUR,
    CONDITION_ERRORS,
    LEAN_STEPS,
    OPTIMIZED_SPLIT,
    RECORD_STEPS,
    SEND_PACING,
    SINCE_ENTRY,
)

with workflow.unsafe.imports_passed_through():
    from journeyman.contracts import (
        CustomerEvent,
        EvaluateInput,
        EvaluateResult,
        ExprContext,
        FinishRunInput,
        JourneyInput,
        JourneyResult,
        LocalTimeInput,
        OperatorRequest,
        PathEntry,
        RecordStepsInput,
        RunState,
        RunStatus,
        SendInput,
        SendOutcome,
        StepOutcome,
        UpdateProfileInput,
        WebhookInput,
    )
    from journeyman.dsl.chance import in_holdout, split_choice
    from journeyman.dsl.durations import format_duration
    from journeyman.dsl.evaluate import ExpressionError, evaluate_condition, to_datetime
    from journeyman.dsl.model import (
        BranchStep,
        EndStep,
        EventRule,
        Expr,
        SendStep,
        SplitStep,
        UpdateProfileStep,
        WaitAt,
        WaitFor,
        WaitForStep,
        WaitStep,
        WaitUntil,
        WebhookStep,
    )
    from journeyman.dsl.plan import Plan
    from journeyman.names import (
        BEST_SEND_TIME_ACTIVITY,
        CALL_WEBHOOK_ACTIVITY,
        END_RUN_UPDATE,
        EVALUATE_ACTIVITY,
        EVENT_SIGNAL,
        FINISH_RUN_ACTIVITY,
        JOURNEY_STEP,
        JOURNEY_WORKFLOW,
        MOVE_TO_UPDATE,
        NEXT_LOCAL_TIME_ACTIVITY,
        RECORD_STEPS_ACTIVITY,
        SEND_ACTIVITY,
        SKIP_WAIT_UPDATE,
        SPLIT_COUNTS_ACTIVITY,
        STATE_QUERY,
        UPDATE_PROFILE_ACTIVITY,
        WAKE_SIGNAL,
    )
    from journeyman.optimization.optimize import (
        DEFAULT_WITHIN,
        BestTime,
        BestTimeInput,
        SplitCounts,
        SplitCountsInput,
        thompson_choice,
    )

MIN_DEFERRAL = timedelta(minutes=1)
# A send held for its provider's pace waits for its slot to the moment (a minute would
# ruin a pace of 10 a second); this floor only keeps a past slot from spinning.
MIN_PACED_DEFERRAL = timedelta(milliseconds=10)
PATH_KEPT = 200  # path entries carried across continue-as-new
SEEN_KEPT = 500  # message ids remembered for de-duplication
HEARD_KEPT = 100  # events received since entry kept for `wait_for` with `since: entry`

ACTIVITY_TIMEOUT = timedelta(seconds=30)
SEND_TIMEOUT = timedelta(minutes=2)
# A send heartbeats around its provider call (providers time out after 10 s): when the
# worker dies mid-send, the retry starts after this, not after SEND_TIMEOUT.
SEND_HEARTBEAT = timedelta(seconds=20)
LOCAL_TIMEOUT = timedelta(seconds=10)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    # Giving up would lose a message; the ledger keeps retries harmless. Permanent
    # failures are non-retryable ApplicationErrors and stop at once.
    maximum_attempts=0,
)
# The step log serves statistics: a record that cannot be written in a few tries waits
# for the next step rather than hold up the run. The attempts bound it besides the
# deadline: the SDK retries a local activity failing fast past its schedule_to_close.
RECORD_DEADLINE = timedelta(minutes=1)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
# A webhook is the journey author's outside system: retry a while, then record and go on.
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
)


class _Finished(Exception):
    """Raised inside the step loop when a goal or exit event ends the run."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class _Moved(Exception):
    """Raised inside the step loop when an operator moved the run to another step."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id


@workflow.defn(name=JOURNEY_WORKFLOW)
class JourneyWorkflow:
    def __init__(self) -> None:
        self._inbox: list[CustomerEvent] = []
        self._seen: set[str] = set()
        self._seen_order: list[str] = []
        self._state: RunState | None = None
        self._plan: Plan | None = None
        self._customer_id = ""
        self._entry_key = ""
        self._waiting_for: str | None = None
        self._matched: CustomerEvent | None = None
        # Operator controls, set by the update handlers and acted on by the step loop.
        self._waiting = False
        self._skip = False
        self._move_to: str | None = None
        self._end = False
        self._wake = False
        self._lean = False  # patch LEAN_STEPS, asked once at the start of the run
        self._v2a = False  # patch CONDITION_ERRORS, asked once at the start of the run

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

    def _operator_pending(self) -> bool:
        return self._skip or self._end or self._move_to is not None

    # -- the run ----------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: JourneyInput) -> JourneyResult:
        plan = self._plan = inp.plan
        self._customer_id = inp.customer_id
        self._entry_key = inp.entry_key
        # Asked once, before any command: a run takes one path from start to end. Runs
        # recorded before the patch replay without its marker and keep the old one.
        self._lean = workflow.patched(LEAN_STEPS)
        self._v2a = workflow.patched(CONDITION_ERRORS)
        if inp.state is None:
            if not self._inbox:
                await workflow.wait_condition(lambda: bool(self._inbox))
            trigger = self._inbox.pop(0)
            state = self._state = RunState(
                trigger=trigger,
                last_event=trigger,
                current=plan.journey.steps[0].id,
                entered_at=workflow.now(),
                holdout=in_holdout(plan, inp.customer_id),
            )
            detail = f"entered on {trigger.name}" + (" (holdout)" if state.holdout else "")
            self._log("entry", "entered", detail)
        else:
            state = self._state = inp.state
            for message_id in state.seen:
                self._remember(message_id)
            self._inbox = [*state.pending, *self._inbox]

        outcome = "completed"
        try:
            while state.current is not None:
                if not self._lean:
                    await self._record_steps()
                # A pending operator control is acted on first: it is not carried over.
                if not self._operator_pending() and self._should_continue_as_new(inp.history_limit):
                    if self._lean:
                        # The log is written where the run stays: the new run must not
                        # start with entries it lacks (it keeps only PATH_KEPT of them).
                        await self._record_steps()
                    if not self._operator_pending():  # none came during the record
                        self._continue_as_new(inp)
                try:
                    await self._check_interrupts()
                    step_id = state.current
                    state.visits[step_id] = state.visits.get(step_id, 0) + 1
                    self._show_step(step_id)
                    state.current = await self._run_step(step_id)
                except _Moved as moved:
                    self._waiting_for = None
                    state.current = moved.step_id
            outcome = "ended" if state.path and state.path[-1].action == "ended" else "completed"
        except _Finished as finished:
            outcome = finished.outcome
        state.current = None
        self._waiting_for = None
        if self._lean:
            # One local activity: the last entries, and the run's row closed.
            await self._record_steps(outcome=outcome)
        else:
            await self._record_steps()
            await workflow.execute_activity(
                FINISH_RUN_ACTIVITY,
                FinishRunInput(
                    workflow_id=workflow.info().workflow_id,
                    run_id=workflow.info().first_execution_run_id,
                    outcome=outcome,
                    ended_at=workflow.now(),
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
                summary=f"record run {outcome}",
            )
        return JourneyResult(outcome=outcome, path=list(state.path))

    async def _run_step(self, step_id: str) -> str | None:
        """Run one step; return the id of the next step, or None to finish."""
        plan = self._require_plan()
        step = plan.journey.steps[plan.step_index(step_id)]
        following = plan.next[step_id]
        match step:
            case WaitStep(wait=WaitUntil(until=clock)):
                wake = await workflow.execute_local_activity(
                    NEXT_LOCAL_TIME_ACTIVITY,
                    LocalTimeInput(self._customer_id, clock, workflow.now()),
                    result_type=datetime,
                    start_to_close_timeout=LOCAL_TIMEOUT,
                    retry_policy=RETRY,
                    summary=f"next {clock} in the customer's time zone",
                )
                await self._wait(wake, None, f"wait until {clock}")
                self._log(step_id, "waited", f"until {clock} local time")
                return following
            case WaitStep(wait=WaitAt(at=expr)):
                wake = await self._instant(step_id, expr)
                if wake > workflow.now():
                    await self._wait(wake, None, f"wait until {wake.isoformat()}")
                    self._log(step_id, "waited", f"until {wake.isoformat()}")
                else:
                    self._log(step_id, "waited", f"no wait: {wake.isoformat()} has passed")
                return following
            case WaitStep(wait=timedelta() as duration):
                await self._wait(workflow.now() + duration, None, f"wait {_fmt(duration)}")
                self._log(step_id, "waited", _fmt(duration))
                return following
            case WaitForStep(wait_for=spec):
                names = " | ".join(spec.events)
                if spec.since == "entry" and workflow.patched(SINCE_ENTRY):
                    earlier = await self._heard_match(spec)
                    if earlier is not None:
                        self._require_state().last_event = earlier
                        sent_at = earlier.timestamp or workflow.now()
                        ago = _ago(workflow.now() - sent_at)
                        self._log(
                            step_id, "event", f"got {earlier.name} received {ago} ago (since entry)"
                        )
                        return spec.step_for(earlier.name) or following
                deadline = workflow.now() + spec.timeout
                self._waiting_for = names
                got = await self._wait(deadline, spec, f"wait_for {names} ≤ {_fmt(spec.timeout)}")
                self._waiting_for = None
                if got is not None:
                    self._log(step_id, "event", f"got {got.name}")
                    return spec.step_for(got.name) or following
                self._log(step_id, "timeout", f"no {names} within {_fmt(spec.timeout)}")
                return spec.on_timeout or following
            case SendStep():
                await self._send(step)
                return following
            case BranchStep(branch=cases):
                chosen = await self._first_true([c.when for c in cases], step_id)
                if chosen is None:
                    self._log(step_id, "branched", "no case matched: next step")
                    return following
                case = cases[chosen]
                label = f"when {case.when.text}" if case.when else "default"
                self._log(step_id, "branched", f"{label} -> {case.goto}")
                return case.goto
            case SplitStep(optimize=optimize) if optimize is not None and workflow.patched(
                OPTIMIZED_SPLIT
            ):
                return await self._optimized_split(step)
            case SplitStep(split=cases):
                chosen_index = split_choice(
                    plan.journey.id, self._customer_id, step_id, [c.weight for c in cases]
                )
                self._log(step_id, "split", f"-> {cases[chosen_index].goto}")
                return cases[chosen_index].goto
            case UpdateProfileStep(update_profile=update):
                await self._update_profile(step_id, update)
                return following
            case WebhookStep(webhook=hook):
                await self._webhook(step_id, hook)
                return following
            case EndStep():
                self._log(step_id, "ended", "end of journey")
                return None
        raise ApplicationError(f"unknown step kind at {step_id}", non_retryable=True)

    async def _instant(self, step_id: str, expr: Expr) -> datetime:
        """The instant `wait: {at: ...}` names, evaluated by an activity (it may read the
        profile and history); one that fails goes to `on_error` or ends the run."""
        result = await workflow.execute_local_activity(
            EVALUATE_ACTIVITY,
            EvaluateInput(self._customer_id, [expr.tree], self._context()),
            result_type=EvaluateResult,
            start_to_close_timeout=LOCAL_TIMEOUT,
            retry_policy=RETRY,
            summary=f"evaluate {expr.text}"[:200],
        )
        error = result.errors[0]
        if error is None:
            try:
                return to_datetime(result.values[0])
            except ExpressionError as exc:
                error = str(exc)
        self._log(step_id, "error", f"{expr.text}: {error}")
        self._condition_failed(step_id)

    # -- waiting, with goal and exit watched throughout -------------------------------

    async def _wait(
        self,
        until: datetime,
        rule: EventRule | WaitFor | None,
        summary: str,
        *,
        deferral: bool = False,
    ) -> CustomerEvent | None:
        """Sleep until `until`, or until an event matches `rule`; goal/exit interrupt, and
        so do the operator's controls. A `deferral` (a send's) also ends on `wake`."""

        def woken() -> bool:
            return bool(self._inbox) or self._operator_pending() or (deferral and self._wake)

        self._waiting = True
        try:
            while True:
                await self._check_interrupts(rule_for_wait=rule)
                if self._matched is not None:
                    matched, self._matched = self._matched, None
                    return matched
                if self._skip or (deferral and self._wake):
                    return None
                if self._lean:
                    await self._stay()
                remaining = until - workflow.now()
                if remaining <= timedelta(0):
                    return None
                try:
                    await workflow.wait_condition(woken, timeout=remaining, timeout_summary=summary)
                except TimeoutError:
                    return None
        finally:
            self._waiting = False
            self._skip = False
            if deferral:
                self._wake = False

    async def _check_interrupts(self, rule_for_wait: EventRule | WaitFor | None = None) -> None:
        """The operator's end or move first; then the inbox in order: a goal or exit ends
        the run, a match ends a wait."""
        plan = self._require_plan()
        state = self._require_state()
        if self._end:
            raise _Finished("ended_by_operator")
        if self._move_to is not None:
            step_id, self._move_to = self._move_to, None
            raise _Moved(step_id)
        while self._inbox:
            event = self._inbox.pop(0)
            state.heard.append(event)
            del state.heard[:-HEARD_KEPT]
            if plan.journey.goal and await self._matches(plan.journey.goal, event):
                state.last_event = event
                self._log(state.current or "", "converted", f"goal {event.name}")
                raise _Finished("converted")
            for rule in plan.journey.exit:
                if await self._matches(rule, event):
                    state.last_event = event
                    self._log(state.current or "", "exited", f"exit on {event.name}")
                    raise _Finished("exited")
            if rule_for_wait is not None and await self._matches(rule_for_wait, event):
                state.last_event = event
                self._matched = event
                return

    async def _heard_match(self, spec: WaitFor) -> CustomerEvent | None:
        """The latest event received since entry that `spec` waits for, if any."""
        for event in reversed(self._require_state().heard):
            if await self._matches(spec, event):
                return event
        return None

    async def _matches(self, rule: EventRule | WaitFor, event: CustomerEvent) -> bool:
        names = [rule.event] if isinstance(rule.event, str) else rule.event
        if event.name not in names:
            return False
        if rule.when is None:
            return True
        context = self._context(event)
        values, errors = await self._evaluate([rule.when], context)
        if errors[0]:
            step_id = self._require_state().current or ""
            self._log(step_id, "error", f"{rule.when.text}: {errors[0]}")
            if self._v2a:
                self._condition_failed(step_id)
            return False
        return bool(values[0])

    def _condition_failed(self, step_id: str) -> NoReturn:
        """A condition of this step failed (patch `v2a-condition-errors`): never taken as
        false. Go to the step's `on_error`, or end the run with outcome `error`."""
        plan = self._require_plan()
        step = plan.journey.steps[plan.step_index(step_id)] if step_id else None
        target = step.on_error if step is not None else None
        if target is None and isinstance(step, WaitForStep):
            target = step.wait_for.on_error
        if target is None:
            raise _Finished("error")
        self._log(step_id, "on_error", f"-> {target}")
        raise _Moved(target)

    # -- conditions -------------------------------------------------------------------

    async def _first_true(self, conditions: list[Expr | None], step_id: str) -> int | None:
        present = [c for c in conditions if c is not None]
        values, errors = await self._evaluate(present, self._context())
        results = iter(zip(values, errors, strict=True))
        for index, condition in enumerate(conditions):
            if condition is None:
                return index
            value, error = next(results)
            if error:
                self._log(step_id, "error", f"{condition.text}: {error}")
                if self._v2a:
                    self._condition_failed(step_id)
            elif value:
                return index
        return None

    async def _evaluate(
        self, exprs: list[Expr], context: ExprContext
    ) -> tuple[list[Any], list[str | None]]:
        """Evaluate here when no expression reads the profile or history, else in one
        local activity for all of them (the result is recorded, so replay is exact)."""
        if not exprs:
            return [], []
        if any(e.needs_activity for e in exprs):
            result = await workflow.execute_local_activity(
                EVALUATE_ACTIVITY,
                EvaluateInput(self._customer_id, [e.tree for e in exprs], context),
                result_type=EvaluateResult,
                start_to_close_timeout=LOCAL_TIMEOUT,
                retry_policy=RETRY,
                summary="evaluate " + "; ".join(e.text for e in exprs)[:200],
            )
            return result.values, result.errors
        names = {
            "event": context.event.as_names(),
            "trigger": context.trigger.as_names(),
            "journey": context.journey,
            "now": context.now,
            "steps": context.steps,
        }
        values: list[Any] = []
        errors: list[str | None] = []
        for expr in exprs:
            try:
                values.append(evaluate_condition(expr.tree, names, numeric_text=self._v2a))
                errors.append(None)
            except ExpressionError as exc:
                values.append(None)
                errors.append(str(exc))
        return values, errors

    # -- side effects -----------------------------------------------------------------

    async def _send(self, step: SendStep) -> None:
        plan = self._require_plan()
        state = self._require_state()
        spec = step.send
        if state.holdout:
            self._log(
                step.id, "held_out", f"{spec.template} not sent: holdout", template=spec.template
            )
            state.sends[step.id] = {"channel": None, "outcome": "skipped", "reason": "holdout"}
            return
        if spec.timing == "best" and workflow.patched(BEST_HOUR):
            await self._wait_best_hour(step)
        settings = plan.journey.settings
        first_attempt = workflow.now()
        self._wake = False  # only a wake during this send ends its deferral early
        while True:
            outcome: SendOutcome = await workflow.execute_activity(
                SEND_ACTIVITY,
                SendInput(
                    idempotency_key=self._step_key(step.id),
                    workflow_id=workflow.info().workflow_id,
                    journey_id=plan.journey.id,
                    version=plan.version,
                    step_id=step.id,
                    customer_id=self._customer_id,
                    template=spec.template,
                    channels=list(spec.channels),
                    topic=plan.journey.topic,
                    context=self._context(),
                    quiet_hours=settings.quiet_hours,
                    frequency_cap=_cap_input(settings.frequency_cap),
                    journey_cap=_journey_cap_input(settings),
                    priority=settings.priority,
                    first_attempt_at=first_attempt,
                    only_if=spec.only_if.text if spec.only_if else None,
                    only_if_tree=spec.only_if.tree if spec.only_if else None,
                ),
                result_type=SendOutcome,
                start_to_close_timeout=SEND_TIMEOUT,
                heartbeat_timeout=SEND_HEARTBEAT,
                retry_policy=RETRY,
                summary=f"send {spec.template} via {', '.join(spec.channels)}",
            )
            if outcome.status != "deferred" or outcome.until is None:
                break
            self._log(step.id, "deferred", f"{outcome.reason}; until {outcome.until.isoformat()}")
            # Never spin: a deferral always waits a little, even if `until` has passed.
            floor = MIN_DEFERRAL
            if outcome.paced and workflow.patched(SEND_PACING):
                floor = MIN_PACED_DEFERRAL
            until = max(outcome.until, workflow.now() + floor)
            await self._wait(until, None, f"deferred: {outcome.reason}", deferral=True)
        state.sends[step.id] = {
            "channel": outcome.channel if outcome.status == "sent" else None,
            "outcome": outcome.status,
            "reason": outcome.reason,
        }
        if outcome.status == "sent":
            self._log(
                step.id,
                "sent",
                f"{spec.template} on {outcome.channel}",
                outcome.channel,
                spec.template,
            )
        else:
            self._log(step.id, outcome.status, outcome.reason or "", outcome.channel, spec.template)

    async def _wait_best_hour(self, step: SendStep) -> None:
        """`timing: best`: wait until the customer's best hour within the step's window
        (an activity reads their opens and clicks and answers when, and why). The send
        that follows still keeps quiet hours and caps."""
        plan = self._require_plan()
        within = step.send.within or DEFAULT_WITHIN
        best = await workflow.execute_activity(
            BEST_SEND_TIME_ACTIVITY,
            BestTimeInput(
                customer_id=self._customer_id,
                journey_id=plan.journey.id,
                now=workflow.now(),
                within_seconds=within.total_seconds(),
            ),
            result_type=BestTime,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
            summary=f"best hour to send {step.send.template} within {_fmt(within)}",
        )
        if best.at <= workflow.now():
            self._log(step.id, "timing", f"{best.reason}; send now")
            return
        self._log(step.id, "timing", f"{best.reason}; send at {best.at.isoformat()}")
        await self._wait(best.at, None, f"best hour {best.hour:02d}:00 ({best.source})")

    async def _optimized_split(self, step: SplitStep) -> str:
        """`split.optimize`: an activity reads each case's takers and conversions; the
        case is drawn by Thompson sampling with the run's deterministic randomness, so
        a replay takes the same case."""
        plan = self._require_plan()
        optimize = step.optimize
        assert optimize is not None
        counts = await workflow.execute_activity(
            SPLIT_COUNTS_ACTIVITY,
            SplitCountsInput(
                journey_id=plan.journey.id,
                step_id=step.id,
                gotos=[c.goto for c in step.split],
                weights=[c.weight for c in step.split],
                event=optimize.event,
                within_seconds=optimize.within.total_seconds(),
                now=workflow.now(),
            ),
            result_type=SplitCounts,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY,
            summary=f"count {optimize.event} after each case of {step.id}",
        )
        index, _draws = thompson_choice(counts.cases, workflow.random())
        seen = ", ".join(
            f"{c.goto} {c.conversions}/{c.takers}" + (" stopped" if c.stopped else "")
            for c in counts.cases
        )
        goto = step.split[index].goto
        self._log(step.id, "split", f"-> {goto} (Thompson sampling on {optimize.event}: {seen})")
        return goto

    async def _update_profile(self, step_id: str, update: Any) -> None:
        """Write traits; a value that cannot be computed is recorded and the run goes on.

        Only permanent failures (an expression error) reach here: transient ones are
        retried by the activity's retry policy without limit.
        """
        try:
            await workflow.execute_activity(
                UPDATE_PROFILE_ACTIVITY,
                UpdateProfileInput(
                    customer_id=self._customer_id,
                    values={k: v.tree for k, v in update.set.items()},
                    context=self._context(),
                    idempotency_key=self._step_key(step_id),
                ),
                result_type=StepOutcome,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY,
                summary=f"update profile: {', '.join(update.set)}",
            )
        except ActivityError as exc:
            self._log(step_id, "error", f"update_profile: {_cause(exc)}")
            return
        self._log(step_id, "updated", ", ".join(update.set))

    async def _webhook(self, step_id: str, hook: Any) -> None:
        state = self._require_state()
        if state.holdout:
            self._log(step_id, "held_out", "webhook not called: holdout")
            return
        try:
            result = await workflow.execute_activity(
                CALL_WEBHOOK_ACTIVITY,
                WebhookInput(
                    idempotency_key=self._step_key(step_id),
                    customer_id=self._customer_id,
                    url=hook.url.tree,
                    method=hook.method,
                    headers={k: v.tree for k, v in hook.headers.items()},
                    body=hook.body.tree if hook.body is not None else None,
                    context=self._context(),
                ),
                result_type=StepOutcome,
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=WEBHOOK_RETRY,
                summary=f"webhook {hook.method} {hook.url.raw}"[:200],
            )
            self._log(step_id, "webhook", result.detail)
        except ActivityError as exc:
            self._log(step_id, "failed", f"webhook: {_cause(exc)}")

    # -- bookkeeping ------------------------------------------------------------------

    def _context(self, event: CustomerEvent | None = None) -> ExprContext:
        plan, state = self._require_plan(), self._require_state()
        return ExprContext(
            event=event or state.last_event,
            trigger=state.trigger,
            journey={
                "id": plan.journey.id,
                "name": plan.journey.name,
                "version": plan.version,
                "entered_at": state.entered_at,
            },
            now=workflow.now(),
            steps={k: dict(v) for k, v in state.sends.items()},
        )

    def _step_key(self, step_id: str) -> str:
        """Unique per run chain, step and visit: the same across activity retries and
        worker restarts, different when a loop comes back to the step."""
        state = self._require_state()
        info = workflow.info()
        visit = state.visits.get(step_id, 1)
        return f"{info.workflow_id}/{info.first_execution_run_id}/{step_id}/{visit}"

    def _log(
        self,
        step: str,
        action: str,
        detail: str,
        channel: str | None = None,
        template: str | None = None,
    ) -> None:
        state = self._require_state()
        state.path.append(PathEntry(workflow.now(), step, action, detail, channel, template))

    async def _record_steps(self, outcome: str | None = None) -> None:
        """Write the path entries not in the step log yet, all in one local activity.

        With an `outcome` (the run's end, patch `lean-steps`) the same record closes the
        run's `journey_runs` row; it is retried until it succeeds, since the outcome must
        not be lost. Other records give up after a few tries and leave their entries to
        the next one. An entry's seq is its place in the whole chain's path, dropped
        entries counted (they were recorded before being dropped, unless recording
        failed for longer than `PATH_KEPT` entries: then those are lost to the log, and
        only to it).
        """
        if not self._lean and not workflow.patched(RECORD_STEPS):
            return
        plan, state = self._require_plan(), self._require_state()
        first_seq = max(state.recorded, state.path_dropped)
        entries = state.path[first_seq - state.path_dropped :]
        if not entries and outcome is None:
            return
        closing = outcome is not None
        info = workflow.info()
        span = f"{first_seq}-{first_seq + len(entries) - 1}" if entries else "none"
        summary = f"record path entries {span}"
        try:
            await workflow.execute_local_activity(
                RECORD_STEPS_ACTIVITY,
                RecordStepsInput(
                    run_id=info.first_execution_run_id,
                    journey_id=plan.journey.id,
                    version=plan.version,
                    customer_id=self._customer_id,
                    first_seq=first_seq,
                    entries=entries,
                    workflow_id=info.workflow_id,
                    outcome=outcome,
                    ended_at=workflow.now() if closing else None,
                    entry_key=self._entry_key,
                ),
                result_type=int,
                start_to_close_timeout=LOCAL_TIMEOUT,
                schedule_to_close_timeout=None if closing else RECORD_DEADLINE,
                retry_policy=RETRY if closing else RECORD_RETRY,
                summary=f"record run {outcome}, path entries {span}" if closing else summary,
            )
        except (ActivityError, ApplicationError, TemporalTimeoutError) as exc:
            # A local activity's failure arrives as the activity's own error (or its
            # timeout), not wrapped in an ActivityError. Retried without limit, the
            # closing record fails only on an error that no retry can mend.
            if closing:
                workflow.logger.error("step log: run %s not recorded: %s", outcome, exc)
            else:
                workflow.logger.warning(
                    "step log: entries %s not recorded, tried again with the next record: %s",
                    span,
                    exc,
                )
            return
        state.recorded = first_seq + len(entries)

    def _show_step(self, step_id: str) -> None:
        """Name the step in the current details; before `lean-steps`, in `JourneyStep`
        too (since, `_stay` does that where the run stays)."""
        plan = self._require_plan()
        if not self._lean:
            workflow.upsert_search_attributes([JOURNEY_STEP.value_set(step_id)])
        step = plan.journey.steps[plan.step_index(step_id)]
        label = f" ({step.name})" if step.name else ""
        workflow.set_current_details(
            f"**{plan.journey.name}** v{plan.version} · customer `{self._customer_id}`\n\n"
            f"Step `{step_id}`{label}"
        )

    async def _stay(self) -> None:
        """Before the run blocks in a wait (patch `lean-steps`): show its step in
        `JourneyStep` unless it shows it already (the router set the first step at
        start; continue-as-new keeps the value), and write the path to the step log, so
        that both are right for as long as it stays."""
        step_id = self._require_state().current
        shown = workflow.info().typed_search_attributes.get(JOURNEY_STEP)
        if step_id is not None and step_id != shown:
            workflow.upsert_search_attributes([JOURNEY_STEP.value_set(step_id)])
        await self._record_steps()

    def _remember(self, message_id: str) -> None:
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > SEEN_KEPT:
            self._seen.discard(self._seen_order.pop(0))

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

    def _require_plan(self) -> Plan:
        assert self._plan is not None
        return self._plan

    def _require_state(self) -> RunState:
        assert self._state is not None
        return self._state


def _cause(exc: ActivityError) -> str:
    return exc.cause.message if isinstance(exc.cause, ApplicationError) else str(exc.cause)


def _ago(delta: timedelta) -> str:
    """How long ago an event came: to the second below an hour, to the minute above (an
    event's timestamp is its sender's clock, a little off the workflow's)."""
    seconds = max(0, round(delta.total_seconds()))
    if seconds >= 3600:
        seconds = round(seconds / 60) * 60
    return format_duration(timedelta(seconds=seconds)) if seconds else "0s"


def _fmt(delta: timedelta) -> str:
    return format_duration(delta)


def _journey_cap_input(settings: Any) -> dict[str, Any] | None:
    """`settings.journey_cap` for the send activity (an input, not a command: no patch)."""
    cap = getattr(settings, "journey_cap", None)
    return None if cap is None else dict(cap.model_dump(mode="json"))


def _cap_input(cap: Any) -> dict[str, Any] | str | None:
    """The journey's cap for the send activity: `{"count", "per"}`, "none" or None."""
    if cap is None or isinstance(cap, str):
        return cap
    return dict(cap.model_dump(mode="json"))
