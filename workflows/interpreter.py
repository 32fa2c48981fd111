"""The interpreter of one journey run: the step loop and what the workflow's handlers do.

`JourneyWorkflow` (workflows/journey.py) keeps only the Temporal surface (its name,
signals, updates, query and run) and hands each call to its `Interpreter`. The
interpreter is built in layers, each a class of its own module that may call the ones
below it: `RunBase` (state, path, contexts, keys) < `StepLog` < `Conditions` < `Waits`
< `Sends` < `Steps` < `Interpreter`. They live outside the workflow class so that the
sandbox, which executes the workflow's module and applies `@workflow.defn` anew for
every run, inspects one small class, not the seven of this hierarchy.
"""

from __future__ import annotations

from temporalio import workflow

from journeyman.contracts import (
    CustomerEvent,
    JourneyInput,
    JourneyResult,
    OperatorRequest,
    RunState,
    RunStatus,
)
from journeyman.dsl.chance import in_holdout
from journeyman.dsl.model import WaitForStep
from workflows.eras import Era
from workflows.options import PATH_KEPT, Finished, Moved
from workflows.steps import Steps


class Interpreter(Steps):
    # -- what the handlers do ---------------------------------------------------------

    def on_event(self, event: CustomerEvent) -> None:
        if event.message_id in self._seen:
            return
        self._remember(event.message_id)
        self._inbox.append(event)

    def status(self) -> RunStatus:
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

    def wake(self) -> None:
        self._wake = True

    def skip_wait(self, request: OperatorRequest) -> str:
        self._skip = True
        return self._log_operator(f"skip_wait by {request.who}: {request.why}")

    def validate_skip_wait(self, request: OperatorRequest) -> None:
        state = self.validate_operator(request)
        if not self._waiting:
            raise ValueError(f"nothing to skip: the run is not waiting (at step {state.current})")

    def move_to(self, request: OperatorRequest) -> str:
        self._move_to = request.to
        return self._log_operator(f"move_to {request.to} by {request.who}: {request.why}")

    def validate_move_to(self, request: OperatorRequest) -> None:
        self.validate_operator(request)
        plan = self._require_plan()
        valid = [step.id for step in plan.journey.steps]
        if not request.to:
            raise ValueError("to is required: the step to move to (" + ", ".join(valid) + ")")
        if request.to not in valid:
            raise ValueError(
                f"no step {request.to!r} in journey {plan.journey.id} version {plan.version}; "
                "valid steps: " + ", ".join(valid)
            )

    def end_run(self, request: OperatorRequest) -> str:
        self._end = True
        return self._log_operator(f"end_run by {request.who}: {request.why}")

    def validate_operator(self, request: OperatorRequest) -> RunState:
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

    async def run(self, inp: JourneyInput) -> JourneyResult:
        self._plan = inp.plan
        self._customer_id = inp.customer_id
        self._entry_key = inp.entry_key
        # Before any command: the patches this run is on, by its era (workflows/eras.py).
        self._era = Era(inp.era)
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
        if inp.trigger is not None:
            # Given with the start: no signal. Its message id counts as heard, so the
            # same event signalled later (routed again) is ignored as before.
            trigger = inp.trigger
            if trigger.message_id not in self._seen:
                self._remember(trigger.message_id)
            self._inbox = [e for e in self._inbox if e.message_id != trigger.message_id]
        else:
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
                if not self._first_wait_hears_arrivals(inp):
                    await self._check_interrupts()
                step_id = state.current
                state.visits[step_id] = state.visits.get(step_id, 0) + 1
                self._show_step(step_id)
                state.current = await self._run_step(step_id)
            except Moved as moved:
                self._waiting_for = None
                state.current = moved.step_id

    def _first_wait_hears_arrivals(self, inp: JourneyInput) -> bool:
        """Whether the run's first step, a `wait_for` (`since: step`), takes the events
        that reached the run with its trigger (patch `first-wait-hears-arrivals`).

        Events routed right after the trigger (one batch from an SDK, one pass of the
        dispatcher) are signalled before the worker runs the run's first task. Drained
        before the step as every step's are, they came "before the step started" and a
        `since: step` wait never heard them: a checkout and its payment in one batch
        nudged a customer who had paid. Left in the inbox, the wait's own first look
        takes them in order, goal and exit first, as it takes those that come while it
        waits. Only there: an event that comes while a later step runs (a send) is
        still heard before the next step, as the DSL says."""
        state = self._require_state()
        if inp.state is not None or state.visits or not self._inbox:
            return False
        if self._operator_pending() or state.current is None:
            return False
        plan = self._require_plan()
        step = plan.journey.steps[plan.step_index(state.current)]
        if not isinstance(step, WaitForStep) or step.wait_for.since != "step":
            return False
        return self._require_era().first_wait_hears_arrivals()

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
                era=inp.era,
            )
        )
