"""Inputs and outputs of the journey workflow and its activities: plain data only.

The workflow imports this module through the sandbox's pass-through, so it holds
dataclasses and nothing that does I/O. One dataclass per activity input, so fields can
be added later with defaults without breaking running workflows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from journeyman.dsl.plan import Plan


@dataclass
class CustomerEvent:
    """A customer event as journeys see it (a Segment `track`, or a delivery event)."""

    message_id: str
    name: str
    properties: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None

    def as_names(self) -> dict[str, Any]:
        """The `event` / `trigger` value that expressions read."""
        return {
            "event": self.name,
            "name": self.name,
            "properties": self.properties,
            "timestamp": self.timestamp,
            "at": self.timestamp,
            "message_id": self.message_id,
        }


@dataclass
class PathEntry:
    """One thing that happened on a run, in order: the run's own timeline."""

    at: datetime
    step: str
    action: str  # entered|waited|event|timeout|sent|skipped|failed|held_out|deferred|...
    detail: str = ""
    channel: str | None = None
    template: str | None = None


@dataclass
class RunState:
    """Everything a run carries across continue-as-new."""

    trigger: CustomerEvent
    last_event: CustomerEvent
    current: str | None
    entered_at: datetime
    holdout: bool
    path: list[PathEntry] = field(default_factory=list)
    visits: dict[str, int] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    pending: list[CustomerEvent] = field(default_factory=list)
    path_dropped: int = 0
    # Path entries of the whole chain written to the step log: entry `n` (counting the
    # dropped ones) is recorded when `n < recorded`. Recording goes in path order.
    recorded: int = 0
    # Events the run received after its trigger, oldest first (the last HEARD_KEPT), for
    # `wait_for` with `since: entry`.
    heard: list[CustomerEvent] = field(default_factory=list)
    # The latest result of each send step, for `steps.<id>` in expressions (DSL v2).
    sends: dict[str, dict[str, Any]] = field(default_factory=dict)


# The interpreter's era the router starts runs in (`JourneyInput.era`, workflows/eras.py):
# era 1 takes every patch listed in workflows/patches.py up to `first-wait-hears-arrivals`
# unasked (no marker, no `TemporalChangeVersion` upsert). Era 0 is a run from before eras
# (its recorded input has no `era`), which asks each patch as the code before eras did.
CURRENT_ERA = 1


@dataclass
class JourneyInput:
    plan: Plan
    customer_id: str
    entry_key: str = ""
    state: RunState | None = None  # set when continuing as new
    # Continue as new once the history is this long (tests lower it to see it happen).
    history_limit: int = 4000
    # The event that entered the customer, given with the start (the router, since
    # 2026-12-07). None: it comes as the first `event` signal (signal-with-start, runs
    # from before), or the run continues as new (`state` holds it).
    trigger: CustomerEvent | None = None
    # The interpreter's era the run is on (workflows/eras.py): the router starts runs in
    # CURRENT_ERA, and continue-as-new keeps it. 0: a run from before
    # eras (its recorded input has no `era`), which asks each patch as before.
    era: int = 0


@dataclass
class JourneyResult:
    outcome: str  # converted | exited | ended | completed | ended_by_operator
    path: list[PathEntry]


@dataclass
class RunStatus:
    """What the `state` query answers: where the run is and how it got there."""

    journey_id: str
    version: str
    customer_id: str
    current_step: str | None
    waiting_for: str | None
    holdout: bool
    path: list[PathEntry]


@dataclass
class ExprContext:
    """The names an activity needs, besides the profile and history it loads itself."""

    event: CustomerEvent
    trigger: CustomerEvent
    journey: dict[str, Any]
    now: datetime
    # What each send step of the run did so far (DSL v2): `steps.<id>.channel|outcome|reason`.
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class EvaluateInput:
    customer_id: str
    trees: list[list[Any]]
    context: ExprContext


@dataclass
class EvaluateResult:
    values: list[Any]
    errors: list[str | None]


@dataclass
class LocalTimeInput:
    customer_id: str
    clock: str  # "HH:MM"
    now: datetime


@dataclass
class SendInput:
    idempotency_key: str
    workflow_id: str
    journey_id: str
    version: str
    step_id: str
    customer_id: str
    template: str
    channels: list[str]
    topic: str | None
    context: ExprContext
    quiet_hours: str | None = None
    # {"count": 3, "per": "1d"}; "none": exempt from every cap; None: the default.
    frequency_cap: dict[str, Any] | str | None = None
    # settings.journey_cap as {"count", "per"}: messages from this journey per customer
    journey_cap: dict[str, Any] | None = None
    priority: int = 0
    # When the first attempt of this send was made: caps wait at most a day from it.
    first_attempt_at: datetime | None = None
    # `send.only_if` (text and compiled tree), checked just before the provider call.
    only_if: str | None = None
    only_if_tree: list[Any] | None = None
    # Patch `perf-fold-steps`: the run's path entries not in the step log yet, which the
    # send writes with its own entry once it is not deferred (with `outcome`: it is the
    # run's last step, and the same transaction closes the run's row).
    step_log: RecordStepsInput | None = None


@dataclass
class SendOutcome:
    status: str  # sent | skipped | failed | deferred
    channel: str | None = None
    reason: str | None = None
    until: datetime | None = None  # with deferred: try again then
    delivery_id: int | None = None
    # With deferred: held for the provider's pace, so `until` is the send's own slot, to
    # be kept to the moment (other deferrals wait at least a minute).
    paced: bool = False
    # Patch `perf-fold-steps`: the time of the send's own path entry, written to the step
    # log with `SendInput.step_log`'s entries; None when the send wrote nothing.
    logged_at: datetime | None = None

    def entry(self, at: datetime, step_id: str, template: str) -> PathEntry:
        """The path entry of this outcome of send step `step_id`."""
        detail = f"{template} on {self.channel}" if self.status == "sent" else self.reason or ""
        return PathEntry(at, step_id, self.status, detail, self.channel, template)


@dataclass
class UpdateProfileInput:
    customer_id: str
    values: dict[str, list[Any]]  # trait -> compiled value tree
    context: ExprContext
    idempotency_key: str = ""


@dataclass
class WebhookInput:
    idempotency_key: str
    customer_id: str
    url: list[Any]
    method: str
    headers: dict[str, list[Any]]
    body: list[Any] | None
    context: ExprContext


@dataclass
class StepOutcome:
    ok: bool
    detail: str = ""


@dataclass
class FinishRunInput:
    workflow_id: str
    run_id: str
    outcome: str
    ended_at: datetime


@dataclass
class RecordStepsInput:
    """Path entries for the step log: `entries[i]` is entry `first_seq + i` of the run
    chain `run_id` (the first run id: the same across continue-as-new). With `outcome`,
    the run's last record: it closes the run's `journey_runs` row too, as ended at
    `ended_at` (patch `lean-steps`; `FinishRunInput` before it)."""

    run_id: str
    journey_id: str
    version: str
    customer_id: str
    first_seq: int
    entries: list[PathEntry]
    workflow_id: str = ""
    outcome: str | None = None
    ended_at: datetime | None = None
    # The run's entry key: with `outcome`, for the row the close makes when the router
    # has not recorded the run yet (a run that ended within moments of its start).
    entry_key: str = ""


@dataclass
class OperatorRequest:
    """An operator's control on one run (`skip_wait`, `move_to`, `end_run` updates): who
    asks and why, both required; `to` is the step id of `move_to`."""

    who: str
    why: str
    to: str | None = None


@dataclass
class AudienceInput:
    """A segment check: the journey version in force when the schedule was last synced
    (the schedule's action carries it), and what kind of check this is."""

    plan: Plan
    kind: str = "schedule"  # schedule | broadcast


@dataclass
class AudienceTickInput:
    """One tick's work: enter every customer the segment matches at `at`. `tick_id`
    keys the tick's progress and its entries, so a retry enters nobody twice."""

    plan: Plan
    tick_id: str
    at: datetime
    kind: str = "schedule"


@dataclass
class AudienceTickResult:
    tick_id: str
    status: str  # done | paused
    evaluated: int = 0
    matched: int = 0
    entered: int = 0
    errors: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> customers
