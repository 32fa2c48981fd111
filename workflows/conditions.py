"""Conditions: evaluated in the workflow when they read only `event`, `trigger`,
`journey`, `now` and `steps`, else by one local activity for all of a step's (its
result is recorded, so a replay is exact).

A condition that fails to evaluate (a branch case, a wait_for `when`, a goal or exit
`when`, a `wait: {at}`) is never taken as false: the run goes to the step's `on_error`,
or ends with outcome `error` (patch `v2a-condition-errors`; before it: the error was
logged and the condition taken as not met).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from temporalio import workflow

from journeyman.contracts import CustomerEvent, EvaluateInput, EvaluateResult, ExprContext
from journeyman.dsl.evaluate import ExpressionError, evaluate_condition, to_datetime
from journeyman.dsl.model import EventRule, Expr, WaitFor, WaitForStep
from journeyman.names import EVALUATE_ACTIVITY
from workflows.options import LOCAL_TIMEOUT, RETRY, Finished, Moved
from workflows.steplog import StepLog


class Conditions(StepLog):
    async def _matches(self, rule: EventRule | WaitFor, event: CustomerEvent) -> bool:
        names = [rule.event] if isinstance(rule.event, str) else rule.event
        if event.name not in names:
            return False
        if rule.when is None:
            return True
        values, errors = await self._evaluate([rule.when], self._context(event))
        if errors[0]:
            self._condition_error(self._require_state().current or "", rule.when, errors[0])
            return False
        return bool(values[0])

    def _condition_error(self, step_id: str, condition: Expr, error: str) -> None:
        """Log a condition that failed to evaluate; since `v2a-condition-errors`, leave
        the step for its `on_error` (or end the run) instead of taking it as false."""
        self._log(step_id, "error", f"{condition.text}: {error}")
        if self._require_era().v2a:
            self._condition_failed(step_id)

    def _condition_failed(self, step_id: str) -> NoReturn:
        """A condition of this step failed (patch `v2a-condition-errors`): never taken as
        false. Go to the step's `on_error`, or end the run with outcome `error`."""
        plan = self._require_plan()
        step = plan.journey.steps[plan.step_index(step_id)] if step_id else None
        target = step.on_error if step is not None else None
        if target is None and isinstance(step, WaitForStep):
            target = step.wait_for.on_error
        if target is None:
            raise Finished("error")
        self._log(step_id, "on_error", f"-> {target}")
        raise Moved(target)

    async def _first_true(self, conditions: list[Expr | None], step_id: str) -> int | None:
        present = [c for c in conditions if c is not None]
        values, errors = await self._evaluate(present, self._context())
        results = iter(zip(values, errors, strict=True))
        for index, condition in enumerate(conditions):
            if condition is None:
                return index
            value, error = next(results)
            if error:
                self._condition_error(step_id, condition, error)
            elif value:
                return index
        return None

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
        numeric_text = self._require_era().v2a  # numbers sent as text compare as numbers
        values: list[Any] = []
        errors: list[str | None] = []
        for expr in exprs:
            try:
                values.append(evaluate_condition(expr.tree, names, numeric_text=numeric_text))
                errors.append(None)
            except ExpressionError as exc:
                values.append(None)
                errors.append(str(exc))
        return values, errors
