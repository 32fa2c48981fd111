"""Starting a customer's journey run, the trigger in its input.

A run is started with its trigger in `JourneyInput.trigger` (no signal-with-start: the
signal was one more history event and one more handler per run). Only one run goes
under a workflow id at a time (`id_conflict_policy=FAIL`): when one is going already,
it hears the event as the `event` signal, as it did when the router started runs with
signal-with-start and `USE_EXISTING`; when that run ends between the failed start and
the signal, the start is made again.

The run is started in the interpreter's current era (`JourneyInput.era`, `JourneyEra`):
it takes every patch up to `first-wait-hears-arrivals` unasked, so it records no marker.

The run is started showing in `JourneyStep` the first step where it will stay (the
interpreter upserts `JourneyStep` only where a run stays, and not when it shows that
step already): with a journey that opens with sends before its first wait, one history
event fewer per run, and the same value `journeyman runs` would have read a moment later.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from journeyman.contracts import CURRENT_ERA, CustomerEvent, JourneyInput
from journeyman.dsl.model import (
    SendStep,
    UpdateProfileStep,
    WaitForStep,
    WaitStep,
    WaitUntil,
    WebhookStep,
)
from journeyman.dsl.plan import Plan
from journeyman.events.claims import TRIGGER_MEMO
from journeyman.names import (
    CUSTOMER_ID,
    EVENT_SIGNAL,
    JOURNEY_ERA,
    JOURNEY_ID,
    JOURNEY_STEP,
    JOURNEY_VERSION,
    JOURNEY_WORKFLOW,
)

# Starts tried when each finds a run that then ends before it hears the event: every
# round needs a run to end within moments, so more than a few means something else.
STARTS = 5


async def start_run(
    client: Client,
    task_queue: str,
    plan: Plan,
    customer_id: str,
    key: str,
    event: CustomerEvent,
    wf_id: str,
) -> WorkflowHandle[Any, Any]:
    """Start the run with `event` as its trigger, or signal it to the run going under
    `wf_id`; the handle of the run that got it."""
    for attempt in range(1, STARTS + 1):
        try:
            return await client.start_workflow(
                JOURNEY_WORKFLOW,
                journey_input(plan, customer_id, key, event),
                id=wf_id,
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                memo={TRIGGER_MEMO: event.message_id},
                search_attributes=start_search_attributes(plan, customer_id),
                static_summary=f"{plan.journey.name} · {customer_id}"
                + (f" · {key}" if key else ""),
                static_details=(
                    f"Entered on `{event.name}` ({event.message_id}), version {plan.version}"
                ),
            )
        except WorkflowAlreadyStartedError as exc:
            handle: WorkflowHandle[Any, Any] = client.get_workflow_handle(wf_id, run_id=exc.run_id)
            try:
                await handle.signal(EVENT_SIGNAL, event)
            except RPCError as signal_error:
                if signal_error.status != RPCStatusCode.NOT_FOUND or attempt == STARTS:
                    raise
                continue  # it ended in between: start again
            return handle
    raise AssertionError("unreachable")  # the last attempt returns or raises


def journey_input(plan: Plan, customer_id: str, key: str, event: CustomerEvent) -> JourneyInput:
    """The input of a new run: its trigger given with the start, in the current era (no
    patch marker at its start, workflows/eras.py)."""
    return JourneyInput(
        plan=plan, customer_id=customer_id, entry_key=key, trigger=event, era=CURRENT_ERA
    )


def start_search_attributes(plan: Plan, customer_id: str) -> TypedSearchAttributes:
    """What a new run of `plan` is found by in visibility, the step where it will first
    stay shown (`first_stay`), and its era (`JourneyEra`: `journeyman runs
    --without-patch` counts the patches the era takes unasked). Set with the start, they
    cost no history event."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(JOURNEY_ID, plan.journey.id),
            SearchAttributePair(JOURNEY_VERSION, plan.version),
            SearchAttributePair(CUSTOMER_ID, customer_id),
            SearchAttributePair(JOURNEY_STEP, first_stay(plan)),
            SearchAttributePair(JOURNEY_ERA, CURRENT_ERA),
        ]
    )


def first_stay(plan: Plan) -> str:
    """The step where a new run of `plan` will first stay, when the plan alone says so:
    past the sends (not `timing: best`), profile updates and webhooks it opens with, which
    always go on to their next step, the first `wait` for a duration or until a time of
    day, or `wait_for`. Otherwise (a branch, a split, a `wait: {at}` that may have passed,
    a best-hour send, the end) the first step, as before.

    Where a run stays it upserts `JourneyStep` only if that is not its value already
    (workflows/steplog.py, `Lean.stay`), so a run shown here from its start records no
    upsert there. A run that stays sooner (a send deferred by quiet hours, a cap, a
    paused journey or its provider's pace) shows that step when it stays there, as it
    does at every later stay; a goal or an exit ends it before it gets here."""
    steps = plan.journey.steps
    step_id: str | None = steps[0].id
    passed: set[str] = set()
    while step_id is not None and step_id not in passed:
        passed.add(step_id)
        step = steps[plan.step_index(step_id)]
        match step:
            case WaitStep(wait=WaitUntil()) | WaitForStep():
                return step_id
            case WaitStep(wait=timedelta()):
                return step_id
            case SendStep() if step.send.timing != "best":
                step_id = plan.next[step_id]
            case UpdateProfileStep() | WebhookStep():
                step_id = plan.next[step_id]
            case _:
                break
    return steps[0].id
