"""The baselines: the benchmark journeys written by hand as plain Temporal workflows.

What a careful Temporal engineer would write for the same steps with the same
activities (`JourneyActivities.send`, messages to the outbox) and the same activity
options as the interpreter: the trigger comes as the workflow's input (no signal; the
interpreter's too, since 2026-12-07), each step is one command, and nothing else is
recorded — no step log, no search attribute upserts, no `finish_run`. The differences
are what the interpreter section measures.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.journey import JourneyActivities
    from journeyman.contracts import CustomerEvent, ExprContext, SendInput, SendOutcome
    from workflows.options import RETRY, SEND_HEARTBEAT, SEND_TIMEOUT

OVERHEAD_WORKFLOW = "BenchHandWrittenJourney"
REPLY_EVENT = "bench_replied"
WAITING_WORKFLOW = "BenchHandWrittenWait"
SEND_WORKFLOW = "BenchHandWrittenSend"


@dataclass
class HandWrittenInput:
    journey_id: str
    version: str  # the registered journey version whose templates the sends render
    customer_id: str
    trigger: CustomerEvent
    wait: timedelta = timedelta(seconds=1)
    reply_timeout: timedelta = timedelta(seconds=1)


@workflow.defn(name=OVERHEAD_WORKFLOW)
class HandWrittenJourney:
    """send hello → wait 1s → wait for a reply (1s) → gold customers stop → send follow-up."""

    def __init__(self) -> None:
        self._replied = False

    @workflow.signal(name="event")
    def on_event(self, event: CustomerEvent) -> None:
        if event.name == REPLY_EVENT:
            self._replied = True

    @workflow.run
    async def run(self, inp: HandWrittenInput) -> str:
        await _send(inp, "hello", "bench_hello")
        await workflow.sleep(inp.wait)
        # No reply within the timeout: go on, as the journey's `wait_for` does.
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(lambda: self._replied, timeout=inp.reply_timeout)
        if inp.trigger.properties.get("tier") == "gold":
            return "completed"
        await _send(inp, "follow_up", "bench_follow_up")
        return "completed"


@workflow.defn(name=WAITING_WORKFLOW)
class HandWrittenWait:
    """Waits `inp.wait` (an hour, in the scale section), then sends one message."""

    @workflow.run
    async def run(self, inp: HandWrittenInput) -> str:
        await workflow.sleep(inp.wait)
        await _send(inp, "remind", "bench_hello")
        return "completed"


@workflow.defn(name=SEND_WORKFLOW)
class HandWrittenSend:
    """Sends one message at once: Temporal's share of the event-to-message latency."""

    @workflow.run
    async def run(self, inp: HandWrittenInput) -> str:
        await _send(inp, "welcome", "bench_hello")
        return "completed"


async def _send(inp: HandWrittenInput, step_id: str, template: str) -> SendOutcome:
    info = workflow.info()
    return await workflow.execute_activity_method(
        JourneyActivities.send,
        SendInput(
            idempotency_key=f"{info.workflow_id}/{info.first_execution_run_id}/{step_id}/1",
            workflow_id=info.workflow_id,
            journey_id=inp.journey_id,
            version=inp.version,
            step_id=step_id,
            customer_id=inp.customer_id,
            template=template,
            channels=["email"],
            topic=None,
            context=_context(inp),
            first_attempt_at=workflow.now(),
        ),
        start_to_close_timeout=SEND_TIMEOUT,
        heartbeat_timeout=SEND_HEARTBEAT,
        retry_policy=RETRY,
    )


def _context(inp: HandWrittenInput) -> ExprContext:
    journey: dict[str, Any] = {"id": inp.journey_id, "version": inp.version}
    return ExprContext(event=inp.trigger, trigger=inp.trigger, journey=journey, now=workflow.now())
