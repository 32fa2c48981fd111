"""Segment journeys on Temporal Schedules, kept in step with the journey files.

Each journey with `entry: {segment, every}` or `entry: {segment, once_at}` has one
Temporal Schedule, `audience/<journey>` (journeyman/names.py), visible and pausable in
the Temporal UI. Each action starts an `Audience` run (workflows/audience.py) with the
journey's compiled plan, which enters the matching customers.

- `every: 1d` is an interval schedule (counted from the Unix epoch, so `1d` runs at
  00:00 UTC); a cron line runs in the service time zone (JOURNEYMAN_TIMEZONE).
- `once_at` is a schedule with a single action at that moment: a broadcast. Once it has
  gone out, it is not re-armed by a sync unless `once_at` itself changes.
- A tick still running when the next is due makes the next one skip; a tick missed while
  Temporal was down runs late within `CATCHUP` and is dropped after that (a broadcast
  can then be sent with `journeyman broadcast JOURNEY --now`).

`sync` creates, updates and removes this task queue's schedules to match the journeys in
force; the worker calls it at start and `journeyman deploy` on demand. Each schedule
carries a fingerprint of what it was made from (version, timing, time zone) in its
action's memo, so an unchanged journey is left as it is, and an update keeps what
operators set in the UI (a pause and its note).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from journeyman.contracts import AudienceInput, AudienceTickResult
from journeyman.dsl.plan import Plan
from journeyman.dsl.schedule import SHORTCUTS, describe_every, parse_every
from journeyman.names import (
    AUDIENCE_WORKFLOW,
    DEFAULT_TASK_QUEUE,
    JOURNEY_ID,
    JOURNEY_VERSION,
    schedule_id,
    schedule_journey,
)

log = logging.getLogger(__name__)

CATCHUP = timedelta(hours=1)
FINGERPRINT = "journeyman"
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)  # journey ids
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what an operator should know

    def lines(self) -> list[str]:
        out = [f"schedule created: {j}" for j in self.created]
        out += [f"schedule updated: {j}" for j in self.updated]
        out += [f"schedule removed: {j}" for j in self.removed]
        out += [f"schedule unchanged: {j}" for j in self.unchanged]
        return out + [f"note: {n}" for n in self.notes]


def is_audience(plan: Plan) -> bool:
    return plan.journey.entry.segment is not None


def fingerprint(plan: Plan, timezone: str) -> str:
    entry = plan.journey.entry
    timing = entry.once_at.isoformat() if entry.once_at is not None else f"every {entry.every}"
    return f"{plan.version}|{timing}|{timezone}"


def temporal_cron(line: str) -> str:
    """A validated cron line as Temporal reads it: shortcuts spelled out, month and day
    names as numbers, 7 (Sunday) as 0."""
    line = SHORTCUTS.get(line, line)
    fields = line.split(" ")
    for index, names in ((3, _MONTHS), (4, _DAYS)):
        offset = 1 if names is _MONTHS else 0
        for number, name in enumerate(names):
            fields[index] = fields[index].replace(name, str(number + offset))
    fields[4] = ",".join("0" if part == "7" else part for part in fields[4].split(","))
    return " ".join(fields)


def spec_for(plan: Plan, timezone: str) -> ScheduleSpec:
    entry = plan.journey.entry
    if entry.once_at is not None:
        at = entry.once_at.astimezone(UTC)
        return ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=[ScheduleRange(at.second)],
                    minute=[ScheduleRange(at.minute)],
                    hour=[ScheduleRange(at.hour)],
                    day_of_month=[ScheduleRange(at.day)],
                    month=[ScheduleRange(at.month)],
                    year=[ScheduleRange(at.year)],
                )
            ],
            time_zone_name="UTC",
        )
    every = parse_every(entry.every)
    if every.interval is not None:
        return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every.interval)])
    assert every.cron is not None
    return ScheduleSpec(cron_expressions=[temporal_cron(every.cron)], time_zone_name=timezone)


def schedule_for(plan: Plan, task_queue: str, timezone: str) -> Schedule:
    """The schedule a segment journey should have (its state: active, and for a
    broadcast a single action)."""
    journey = plan.journey
    entry = journey.entry
    kind = "broadcast" if entry.once_at is not None else "schedule"
    segment = entry.segment.text if entry.segment is not None else ""
    when = (
        f"once at {entry.once_at.isoformat()}"
        if entry.once_at is not None
        else describe_every(str(entry.every), timezone)
    )
    action = ScheduleActionStartWorkflow(
        AUDIENCE_WORKFLOW,
        AudienceInput(plan=plan, kind=kind),
        id=schedule_id(journey.id, task_queue),
        task_queue=task_queue,
        typed_search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(JOURNEY_ID, journey.id),
                SearchAttributePair(JOURNEY_VERSION, plan.version),
            ]
        ),
        memo={FINGERPRINT: fingerprint(plan, timezone)},
        static_summary=f"{journey.name} · segment check {when}",
        static_details=f"Enters the customers for whom `{segment}` holds; "
        f"journey version {plan.version}",
    )
    state = (
        ScheduleState(limited_actions=True, remaining_actions=1)
        if kind == "broadcast"
        else ScheduleState()
    )
    return Schedule(
        action=action,
        spec=spec_for(plan, timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP),
        state=state,
    )


async def _fingerprint_of(client: Client, description: ScheduleDescription) -> str | None:
    action = description.schedule.action
    memo = getattr(action, "memo", None)
    if not isinstance(action, ScheduleActionStartWorkflow) or not memo or FINGERPRINT not in memo:
        return None
    value = memo[FINGERPRINT]
    if isinstance(value, str):
        return value
    decoded = await client.data_converter.decode([value])
    return str(decoded[0])


async def sync(
    client: Client,
    plans: list[Plan],
    *,
    task_queue: str = DEFAULT_TASK_QUEUE,
    timezone: str = "UTC",
    now: datetime | None = None,
) -> SyncReport:
    """Make this task queue's schedules match the segment journeys among `plans`."""
    report = SyncReport()
    now = now or datetime.now(UTC)
    wanted = {plan.journey.id: plan for plan in plans if is_audience(plan)}
    for _, plan in sorted(wanted.items()):
        await _sync_one(client, plan, task_queue, timezone, now, report)
    async for listed in await client.list_schedules():
        journey_id = schedule_journey(listed.id, task_queue)
        if journey_id is None or journey_id in wanted:
            continue
        try:
            await client.get_schedule_handle(listed.id).delete()
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        report.removed.append(journey_id)
    return report


async def _sync_one(
    client: Client,
    plan: Plan,
    task_queue: str,
    timezone: str,
    now: datetime,
    report: SyncReport,
) -> None:
    journey_id = plan.journey.id
    once_at = plan.journey.entry.once_at
    handle = client.get_schedule_handle(schedule_id(journey_id, task_queue))
    wanted = schedule_for(plan, task_queue, timezone)
    try:
        description = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        description = None
    if description is None:
        try:
            await client.create_schedule(handle.id, wanted)
        except ScheduleAlreadyRunningError:
            description = await handle.describe()  # another worker made it meanwhile
        else:
            report.created.append(journey_id)
            if once_at is not None and once_at <= now:
                report.notes.append(_passed(journey_id, once_at))
            return
    if await _fingerprint_of(client, description) == fingerprint(plan, timezone):
        report.unchanged.append(journey_id)
        return

    def merge(previous: ScheduleUpdateInput) -> ScheduleUpdate:
        # Keep what operators set: a pause and its note.
        state = wanted.state
        old = previous.description.schedule.state
        state.paused, state.note = old.paused, old.note
        return ScheduleUpdate(schedule=wanted)

    await handle.update(merge)
    report.updated.append(journey_id)
    if once_at is not None and once_at <= now:
        report.notes.append(_passed(journey_id, once_at))


def _passed(journey_id: str, once_at: datetime) -> str:
    return (
        f"broadcast {journey_id}: once_at {once_at.isoformat()} has passed, so it will not "
        f"go out by itself; `journeyman broadcast {journey_id} --now` sends it now"
    )


# -- operator controls -----------------------------------------------------------------


async def set_paused(
    client: Client, journey_id: str, paused: bool, note: str, task_queue: str = DEFAULT_TASK_QUEUE
) -> bool:
    """Pause or unpause the journey's schedule; False when it has none."""
    handle = client.get_schedule_handle(schedule_id(journey_id, task_queue))
    try:
        if paused:
            await handle.pause(note=note)
        else:
            await handle.unpause(note=note)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def describe(
    client: Client, journey_id: str, task_queue: str = DEFAULT_TASK_QUEUE
) -> ScheduleDescription | None:
    try:
        return await client.get_schedule_handle(schedule_id(journey_id, task_queue)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise


async def start_tick(
    client: Client,
    plan: Plan,
    *,
    tick_id: str,
    task_queue: str = DEFAULT_TASK_QUEUE,
    kind: str = "broadcast",
) -> WorkflowHandle[Any, AudienceTickResult]:
    """Run a segment check now as its own `Audience` run, `tick_id` its workflow id: an
    id already running is joined rather than started twice, and an id that ran before
    goes on from where its tick stopped (a tick cut short by a pause) or reports it."""
    return await client.start_workflow(
        AUDIENCE_WORKFLOW,
        AudienceInput(plan=plan, kind=kind),
        id=tick_id,
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(JOURNEY_ID, plan.journey.id),
                SearchAttributePair(JOURNEY_VERSION, plan.version),
            ]
        ),
        static_summary=f"{plan.journey.name} · segment check now",
        result_type=AudienceTickResult,
    )


def manual_tick_id(journey_id: str, task_queue: str, at: datetime) -> str:
    """The workflow id of a check run by hand: `audience/win_back-now-2026-...`."""
    stamp = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{schedule_id(journey_id, task_queue)}-now-{stamp}"
