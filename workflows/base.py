"""The state of one journey run and the bookkeeping every part of the interpreter uses.

`Interpreter` (workflows/interpreter.py) is built in layers, each a class of its own
module that may call the ones below it: `RunBase` (this state, the path, expression
contexts, idempotency keys) < `StepLog` (the step log and `JourneyStep`, by era) <
`Conditions` < `Waits` < `Sends` < `Steps` < `Interpreter` (the step loop, handlers).
The layers hold no state of their own; every run's state is on its instance.
"""

from __future__ import annotations

from temporalio import workflow

from journeyman.contracts import CustomerEvent, ExprContext, PathEntry, RunState
from journeyman.dsl.plan import Plan
from workflows.eras import Era
from workflows.options import SEEN_KEPT


class RunBase:
    def __init__(self) -> None:
        self._inbox: list[CustomerEvent] = []
        self._seen: set[str] = set()
        self._seen_order: list[str] = []
        self._state: RunState | None = None
        self._plan: Plan | None = None
        self._era: Era | None = None
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
        # The outcome the last step's send closed the run's row with (`perf-fold-steps`).
        self._closed_as: str | None = None

    def _require_plan(self) -> Plan:
        assert self._plan is not None
        return self._plan

    def _require_state(self) -> RunState:
        assert self._state is not None
        return self._state

    def _require_era(self) -> Era:
        assert self._era is not None
        return self._era

    def _operator_pending(self) -> bool:
        return self._skip or self._end or self._move_to is not None

    def _remember(self, message_id: str) -> None:
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > SEEN_KEPT:
            self._seen.discard(self._seen_order.pop(0))

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
