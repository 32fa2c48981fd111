"""A segment check: one workflow run per tick of a journey's Temporal Schedule.

Contract:
- Input is the compiled `Plan` the schedule carries (the journey version in force when
  the worker or `journeyman deploy` last synced the schedule) and the kind of check.
- The tick's time, `now` in the segment, is the time the schedule meant it to run
  (`TemporalScheduledStartTime`), else the run's start: a tick that starts late still
  evaluates the segment as of its due time, and a retried tick evaluates it the same.
- The tick id is the workflow id (`audience/win_back-2026-11-30T09:00:00Z` for a
  scheduled run): it keys the tick's progress and the message ids of its entries, so
  that running the same tick again enters nobody twice.
- The whole tick is one heartbeating activity that pages through the profiles and
  resumes from its last page when retried (activities/audience.py).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from journeyman.contracts import AudienceInput, AudienceTickInput, AudienceTickResult
    from journeyman.names import AUDIENCE_ENTER_ACTIVITY, AUDIENCE_WORKFLOW, SCHEDULED_START_TIME

# A tick over a million profiles takes a while; the heartbeat catches a lost worker.
TICK_TIMEOUT = timedelta(hours=12)
TICK_HEARTBEAT = timedelta(minutes=2)
RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
)


@workflow.defn(name=AUDIENCE_WORKFLOW)
class AudienceWorkflow:
    @workflow.run
    async def run(self, inp: AudienceInput) -> AudienceTickResult:
        info = workflow.info()
        plan = inp.plan
        at = info.typed_search_attributes.get(SCHEDULED_START_TIME) or workflow.now()
        segment = plan.journey.entry.segment
        workflow.set_current_details(
            f"**{plan.journey.name}** v{plan.version} · {inp.kind} at {at.isoformat()}\n\n"
            f"Segment: `{segment.text if segment else ''}`"
        )
        return await workflow.execute_activity(
            AUDIENCE_ENTER_ACTIVITY,
            AudienceTickInput(plan=plan, tick_id=info.workflow_id, at=at, kind=inp.kind),
            result_type=AudienceTickResult,
            start_to_close_timeout=TICK_TIMEOUT,
            heartbeat_timeout=TICK_HEARTBEAT,
            retry_policy=RETRY,
            summary=f"enter the customers of segment {plan.journey.id}",
        )
