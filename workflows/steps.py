"""One step of a journey: `_run_step` matches its kind and returns the next step's id.

Every side effect is an activity; conditions that read only `event`, `trigger`,
`journey` and `now` are evaluated in the workflow, the rest by an activity. Expressions
see `steps.<send step id>` (channel, outcome, reason) once that send ran.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from journeyman.contracts import LocalTimeInput, StepOutcome, UpdateProfileInput, WebhookInput
from journeyman.dsl.chance import split_choice
from journeyman.dsl.model import (
    BranchStep,
    Case,
    EndStep,
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
from journeyman.names import (
    CALL_WEBHOOK_ACTIVITY,
    NEXT_LOCAL_TIME_ACTIVITY,
    SPLIT_COUNTS_ACTIVITY,
    UPDATE_PROFILE_ACTIVITY,
)
from journeyman.optimization.optimize import SplitCounts, SplitCountsInput, thompson_choice
from workflows.options import (
    ACTIVITY_TIMEOUT,
    LOCAL_TIMEOUT,
    RETRY,
    WEBHOOK_RETRY,
    ago,
    cause,
    fmt,
)
from workflows.sends import Sends


class Steps(Sends):
    async def _run_step(self, step_id: str) -> str | None:
        """Run one step; return the id of the next step, or None to finish."""
        plan = self._require_plan()
        step = plan.journey.steps[plan.step_index(step_id)]
        following = plan.next[step_id]
        match step:
            case WaitStep(wait=WaitUntil(until=clock)):
                await self._wait_until_clock(step_id, clock)
            case WaitStep(wait=WaitAt(at=expr)):
                await self._wait_at(step_id, expr)
            case WaitStep(wait=timedelta() as duration):
                await self._wait(workflow.now() + duration, None, f"wait {fmt(duration)}")
                self._log(step_id, "waited", fmt(duration))
            case WaitForStep(wait_for=spec):
                return await self._wait_for(step_id, spec, following)
            case SendStep():
                await self._send(step)
            case BranchStep(branch=cases):
                return await self._branch(step_id, cases, following)
            case SplitStep(optimize=optimize) if (
                optimize is not None and self._require_era().optimized_split()
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
            case WebhookStep(webhook=hook):
                await self._webhook(step_id, hook)
            case EndStep():
                self._log(step_id, "ended", "end of journey")
                return None
            case _:
                raise ApplicationError(f"unknown step kind at {step_id}", non_retryable=True)
        return following

    async def _wait_until_clock(self, step_id: str, clock: str) -> None:
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

    async def _wait_at(self, step_id: str, expr: Expr) -> None:
        wake = await self._instant(step_id, expr)
        if wake > workflow.now():
            await self._wait(wake, None, f"wait until {wake.isoformat()}")
            self._log(step_id, "waited", f"until {wake.isoformat()}")
        else:
            self._log(step_id, "waited", f"no wait: {wake.isoformat()} has passed")

    async def _wait_for(self, step_id: str, spec: WaitFor, following: str | None) -> str | None:
        names = " | ".join(spec.events)
        if spec.since == "entry" and self._require_era().since_entry():
            earlier = await self._heard_match(spec)
            if earlier is not None:
                self._require_state().last_event = earlier
                sent_at = earlier.timestamp or workflow.now()
                detail = f"got {earlier.name} received {ago(workflow.now() - sent_at)} ago"
                self._log(step_id, "event", f"{detail} (since entry)")
                return spec.step_for(earlier.name) or following
        deadline = workflow.now() + spec.timeout
        self._waiting_for = names
        got = await self._wait(deadline, spec, f"wait_for {names} ≤ {fmt(spec.timeout)}")
        self._waiting_for = None
        if got is not None:
            self._log(step_id, "event", f"got {got.name}")
            return spec.step_for(got.name) or following
        self._log(step_id, "timeout", f"no {names} within {fmt(spec.timeout)}")
        return spec.on_timeout or following

    async def _branch(self, step_id: str, cases: list[Case], following: str | None) -> str | None:
        chosen = await self._first_true([c.when for c in cases], step_id)
        if chosen is None:
            self._log(step_id, "branched", "no case matched: next step")
            return following
        case = cases[chosen]
        label = f"when {case.when.text}" if case.when else "default"
        self._log(step_id, "branched", f"{label} -> {case.goto}")
        return case.goto

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
            self._log(step_id, "error", f"update_profile: {cause(exc)}")
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
            self._log(step_id, "failed", f"webhook: {cause(exc)}")
