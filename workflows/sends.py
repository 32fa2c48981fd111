"""Send steps: the `journey.send` activity with its deferrals, and `timing: best`.

A send deferred (quiet hours, a cap, a paused journey, its provider's pace) waits and
is tried again; a send held for its provider's pace (a `paced` deferral) waits until
its slot exactly, not the minute other deferrals wait at least (patch `send-pacing`).
The `wake` signal ends a deferred send's wait early (its journey was resumed).
"""

from __future__ import annotations

from datetime import datetime

from temporalio import workflow

from journeyman.contracts import RecordStepsInput, SendInput, SendOutcome
from journeyman.dsl.model import SendStep
from journeyman.names import BEST_SEND_TIME_ACTIVITY, SEND_ACTIVITY
from journeyman.optimization.optimize import DEFAULT_WITHIN, BestTime, BestTimeInput
from workflows.options import (
    ACTIVITY_TIMEOUT,
    MIN_DEFERRAL,
    MIN_PACED_DEFERRAL,
    RETRY,
    SEND_HEARTBEAT,
    SEND_TIMEOUT,
    cap_input,
    fmt,
    journey_cap_input,
)
from workflows.waits import Waits


class Sends(Waits):
    async def _send(self, step: SendStep) -> None:
        state = self._require_state()
        spec = step.send
        if state.holdout:
            self._log(
                step.id, "held_out", f"{spec.template} not sent: holdout", template=spec.template
            )
            state.sends[step.id] = {"channel": None, "outcome": "skipped", "reason": "holdout"}
            return
        if spec.timing == "best" and self._require_era().best_hour():
            await self._wait_best_hour(step)
        outcome, record = await self._deliver(step)
        state.sends[step.id] = {
            "channel": outcome.channel if outcome.status == "sent" else None,
            "outcome": outcome.status,
            "reason": outcome.reason,
        }
        # Its entry as the send wrote it to the step log (patch `perf-fold-steps`), else now.
        entry = outcome.entry(outcome.logged_at or workflow.now(), step.id, spec.template)
        self._log_sent(entry, record if outcome.logged_at is not None else None)

    async def _deliver(self, step: SendStep) -> tuple[SendOutcome, RecordStepsInput | None]:
        """The send activity, tried again after each deferral until it is not deferred;
        its outcome and the step log record it was given (patch `perf-fold-steps`)."""
        first_attempt = workflow.now()
        self._wake = False  # only a wake during this send ends its deferral early
        while True:
            send_input = self._send_input(step, first_attempt)
            outcome: SendOutcome = await workflow.execute_activity(
                SEND_ACTIVITY,
                send_input,
                result_type=SendOutcome,
                start_to_close_timeout=SEND_TIMEOUT,
                heartbeat_timeout=SEND_HEARTBEAT,
                retry_policy=RETRY,
                summary=f"send {step.send.template} via {', '.join(step.send.channels)}",
            )
            if outcome.status != "deferred" or outcome.until is None:
                return outcome, send_input.step_log
            self._log(step.id, "deferred", f"{outcome.reason}; until {outcome.until.isoformat()}")
            # Never spin: a deferral always waits a little, even if `until` has passed.
            floor = MIN_DEFERRAL
            if outcome.paced and self._require_era().send_pacing():
                floor = MIN_PACED_DEFERRAL
            until = max(outcome.until, workflow.now() + floor)
            await self._wait(until, None, f"deferred: {outcome.reason}", deferral=True)

    def _send_input(self, step: SendStep, first_attempt: datetime) -> SendInput:
        plan = self._require_plan()
        spec, settings = step.send, plan.journey.settings
        return SendInput(
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
            frequency_cap=cap_input(settings.frequency_cap),
            journey_cap=journey_cap_input(settings),
            priority=settings.priority,
            first_attempt_at=first_attempt,
            only_if=spec.only_if.text if spec.only_if else None,
            only_if_tree=spec.only_if.tree if spec.only_if else None,
            # The last step: the run finishes `completed` right after it.
            step_log=self._fold_record(plan.next[step.id] is None),
        )

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
            summary=f"best hour to send {step.send.template} within {fmt(within)}",
        )
        if best.at <= workflow.now():
            self._log(step.id, "timing", f"{best.reason}; send now")
            return
        self._log(step.id, "timing", f"{best.reason}; send at {best.at.isoformat()}")
        await self._wait(best.at, None, f"best hour {best.hour:02d}:00 ({best.source})")
