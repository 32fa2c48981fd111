"""Journey analytics, read from the database: entries, outcomes, messages, conversions, lift.

Contract:
- `journey_stats` reads `journey_runs`, `deliveries`, `journey_versions` and `step_log`
  only and never writes. It reports all versions together and each version on its own.
- The step log (written by the workflow wherever the run waits and when it ends, once
  per path entry) gives the runs that reached each step and the sends held back from
  runs held out. A step counts as reached once it has acted and the log has it: a run
  waiting at a wait step is in `now_at_step`, and in `reached` from when the wait ends
  (or a goal or exit interrupts it) and the run next waits or ends.
- Where running runs are now is not in the database (the workflow shows its step in the
  `JourneyStep` search attribute, not in `journey_runs.current_step`): the caller passes
  `{step_id: runs}` from Temporal's visibility (`running_steps`), or None when Temporal
  cannot be asked, which the report shows as unavailable.
- Conversion rates count entries of the treatment group (runs not held out): a run held
  out is sent nothing and only serves as the control for the holdout lift.
- A run converts when its goal event ends it, or (`goal.within`, the attribution
  window) when the goal event comes within the window after entry once the run had
  ended (`journey_runs.attributed_at`, set by the router); `conversions.after_end`
  counts the latter.
- A conversion is attributed to the last message sent to its run before it converted
  (same workflow id, sent between the run's start and end); none: "no message".
- `funnel` and `messages_by_step`, for the journey page, read the same tables and never
  write either.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import and_, case, distinct, func, or_, select
from sqlalchemy.orm import Session

from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.dsl.durations import parse_percent
from journeyman.names import JOURNEY_ID, JOURNEY_STEP, JOURNEY_VERSION, JOURNEY_WORKFLOW
from journeyman.optimization.splits import SplitReport, split_reports
from journeyman.platform.temporal import visibility_literal
from journeyman.storage.models import (
    Delivery,
    EntryError,
    EntryOff,
    JourneyRun,
    JourneyVersion,
    StepLog,
)

if TYPE_CHECKING:
    from temporalio.client import Client

# Below this many entrants in either group the lift is not estimated.
MIN_GROUP = 30
Z_95 = 1.959963984540054  # the 97.5th percentile of the standard normal
NO_MESSAGE = "no message"
NO_CHANNEL = "(no channel)"
# How many running workflows `running_steps` reads from visibility at most.
VISIBILITY_LIMIT = 10_000

_CHANNEL_PREFIX = re.compile(rf"^(?:{'|'.join(CHANNEL_FILES)}): ")


# Entry errors shown with the stats, newest first.
ENTRY_ERROR_SAMPLES = 5


class Interval(BaseModel):
    low: float
    high: float


class Lift(BaseModel):
    """Treatment against control (the holdout). Rates and differences are fractions."""

    treatment_entered: int
    treatment_converted: int
    control_entered: int
    control_converted: int
    treatment_rate: float | None
    control_rate: float | None
    difference: float | None = Field(description="treatment rate - control rate")
    interval: Interval | None = Field(description="95% CI of the difference (Newcombe)")
    relative: float | None = Field(description="difference / control rate")
    enough_data: bool
    verdict: str


class ChannelMessages(BaseModel):
    """Deliveries of one channel by outcome; provider reports count once each."""

    channel: str
    messages: int = 0
    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    failed: int = Field(0, description="bounced, dropped, undelivered, or failed to send")
    complained: int = 0
    unknown: int = Field(0, description="the provider call's outcome is not known")
    skipped: int = 0
    pending: int = Field(0, description="decided, not final yet (deferred or in flight)")
    skipped_reasons: dict[str, int] = Field(default_factory=dict)

    def add(self, other: ChannelMessages) -> None:
        for name in (
            "messages",
            "sent",
            "delivered",
            "opened",
            "clicked",
            "failed",
            "complained",
            "unknown",
            "skipped",
            "pending",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_reasons = _ordered(
            Counter(self.skipped_reasons) + Counter(other.skipped_reasons)
        )


class Conversions(BaseModel):
    converted: int = Field(
        description="treatment runs converted: by their goal, or within goal.within after "
        "they ended"
    )
    after_end: int = Field(
        0, description="of them, converted within goal.within after the run had ended"
    )
    entered: int = Field(description="treatment runs")
    rate: float | None
    by_channel: dict[str, int] = Field(description="by the channel of the last message")
    by_step: dict[str, int] = Field(description="by the step of the last message")


class Stats(BaseModel):
    version: str | None = Field(description="None: all versions together")
    entered: int
    treatment: int
    control: int = Field(description="entrants held out (sent nothing)")
    running: int
    finished: dict[str, int] = Field(description="finished runs by outcome")
    now_at_step: dict[str, int] | None = Field(
        description="running runs by current step, from Temporal; None: unavailable"
    )
    messages: list[ChannelMessages]
    total: ChannelMessages
    conversions: Conversions
    lift: Lift | None = Field(description="None: the journey has no holdout")
    reached: dict[str, int] = Field(
        default_factory=dict,
        description="runs (held out ones too) that reached each step, from the step log: "
        "every step of the journey in order, then any other step recorded",
    )
    held_out_messages: int = Field(
        0, description="sends not made because their run is held out, from the step log"
    )
    held_out_by_step: dict[str, int] = Field(
        default_factory=dict, description="held_out_messages by send step"
    )
    errors_by_step: dict[str, int] = Field(
        default_factory=dict,
        description="expressions that failed to evaluate in runs (a branch case, a "
        "wait_for or goal/exit condition, a value), by step, from the step log",
    )
    entry_errors: int = Field(
        0,
        description="events not entered because the entry condition or key failed to "
        "evaluate (a property missing, a value of the wrong kind)",
    )
    journey_off: int = Field(
        0,
        description="entries passed by while the journey was switched off (enabled: false, "
        "or its file deleted): events on which the customer would have entered",
    )


class EntryErrorSample(BaseModel):
    at: datetime
    version: str
    customer_id: str
    message_id: str
    error: str


class JourneyStats(BaseModel):
    journey_id: str
    name: str | None
    holdout: float = Field(description="the control group's share in the latest version")
    overall: Stats = Field(description="all versions, or the version asked for")
    versions: list[Stats] = Field(description="each version on its own")
    recent_entry_errors: list[EntryErrorSample] = Field(
        default_factory=list,
        description=f"the latest {ENTRY_ERROR_SAMPLES} entry errors, newest first",
    )
    splits: list[SplitReport] = Field(
        default_factory=list,
        description="each optimized split of the latest version (optimization/splits.py)",
    )


class UnknownJourney(LookupError):
    """Nothing recorded for this journey (or this version of it)."""


# -- the report ---------------------------------------------------------------------------


def journey_stats(
    session: Session,
    journey_id: str,
    *,
    version: str | None = None,
    now_at_step: Mapping[str, int] | None = None,
) -> JourneyStats:
    """The journey's analytics; `now_at_step` (from `running_steps`) goes to `overall`.

    Raises UnknownJourney when neither a registered version nor a run is recorded.
    """
    registered = list(
        session.execute(
            select(JourneyVersion.version, JourneyVersion.plan)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.created_at)
        )
    )
    plans = {v: plan for v, plan in registered}
    runs = _run_rows(session, journey_id, version)
    attributed = _attributed_rows(session, journey_id, version)
    known = set(plans) if version is None else set(plans) & {version}
    if not known and not runs:
        what = f"journey {journey_id!r}" + (f" version {version!r}" if version else "")
        raise UnknownJourney(f"no {what} is recorded")
    deliveries = _delivery_rows(session, journey_id, version)
    reasons = _reason_rows(session, journey_id, version)
    touches = _last_touches(session, journey_id, version)
    reached = _reached_rows(session, journey_id, version)
    sends = _send_steps(plans)
    held_out = [h for h in _held_out_rows(session, journey_id, version) if h[:2] in sends]
    failed = _held_out_rows(session, journey_id, version, action="error")
    entry_errors = _entry_error_counts(session, journey_id, version)
    journey_off = _journey_off_counts(session, journey_id, version)
    versions = [v for v in plans if version in (None, v)]
    versions += sorted({r[0] for r in runs} - set(versions))
    holdout = {v: _holdout_share(plans.get(v)) for v in versions}
    steps = _step_ids(plans, versions)

    def build(only: str | None, counts: Mapping[str, int] | None) -> Stats:
        shown = [only] if only is not None else versions
        stats = _stats(
            only,
            [r for r in runs if r[0] in shown],
            [d for d in deliveries if d[0] in shown],
            [r for r in reasons if r[0] in shown],
            [t for t in touches if t[0] in shown],
            has_holdout=any(holdout[v] > 0 for v in shown),
            now_at_step=_with_steps(steps, counts) if counts is not None else None,
            attributed=[a for a in attributed if a[0] in shown],
        )
        _add_steps(
            stats,
            _step_ids(plans, shown),
            [r for r in reached if r[0] in shown],
            [h for h in held_out if h[0] in shown],
        )
        stats.errors_by_step = _ordered(
            sum((Counter({step: n}) for v, step, n in failed if v in shown), Counter[str]())
        )
        stats.entry_errors = sum(n for v, n in entry_errors.items() if v in shown)
        stats.journey_off = sum(n for v, n in journey_off.items() if v in shown)
        return stats

    latest = versions[-1] if versions else None
    return JourneyStats(
        journey_id=journey_id,
        name=(plans.get(latest) or {}).get("journey", {}).get("name") if latest else None,
        holdout=holdout.get(latest, 0.0) if latest else 0.0,
        overall=build(version, now_at_step),
        versions=[build(v, None) for v in versions],
        recent_entry_errors=_entry_error_samples(session, journey_id, version),
        splits=split_reports(session, journey_id, plans[latest]) if latest in plans else [],
    )


def _stats(
    version: str | None,
    runs: list[tuple[str, bool, str, str | None, int]],
    deliveries: list[tuple[Any, ...]],
    reasons: list[tuple[str, str | None, str | None, int]],
    touches: list[tuple[str, str | None, str | None]],
    *,
    has_holdout: bool,
    now_at_step: dict[str, int] | None,
    attributed: list[tuple[str, bool, int]] | None = None,
) -> Stats:
    entered = Counter[bool]()
    converted = Counter[bool]()
    after_end = Counter[bool]()
    for _, held_out, n in attributed or []:
        converted[held_out] += n
        after_end[held_out] += n
    finished = Counter[str]()
    running = 0
    for _, held_out, status, outcome, n in runs:
        entered[held_out] += n
        if status == "running":
            running += n
        else:
            finished[outcome or "unknown"] += n
        if outcome == "converted":
            converted[held_out] += n
    channels: dict[str, ChannelMessages] = {}
    for row in deliveries:
        channel = row[1] or NO_CHANNEL
        channels.setdefault(channel, ChannelMessages(channel=channel)).add(_channel_row(row))
    for _, channel_name, reason, n in reasons:
        channel = channel_name or NO_CHANNEL
        found = channels.setdefault(channel, ChannelMessages(channel=channel))
        grouped = Counter(found.skipped_reasons)
        grouped[reason_kind(reason)] += n
        found.skipped_reasons = _ordered(grouped)
    total = ChannelMessages(channel="all")
    for messages in channels.values():
        total.add(messages)
    treatment, control = entered[False], entered[True]
    lift = None
    if has_holdout or control:
        lift = holdout_lift(treatment, converted[False], control, converted[True])
    return Stats(
        version=version,
        entered=treatment + control,
        treatment=treatment,
        control=control,
        running=running,
        finished=_ordered(finished),
        now_at_step=now_at_step,
        messages=sorted(channels.values(), key=lambda m: (m.channel == NO_CHANNEL, m.channel)),
        total=total,
        conversions=Conversions(
            converted=converted[False],
            after_end=after_end[False],
            entered=treatment,
            rate=converted[False] / treatment if treatment else None,
            by_channel=_ordered(Counter(channel or NO_MESSAGE for _, channel, _ in touches)),
            by_step=_ordered(Counter(step or NO_MESSAGE for _, _, step in touches)),
        ),
        lift=lift,
    )


def _entry_error_counts(session: Session, journey_id: str, version: str | None) -> dict[str, int]:
    query = (
        select(EntryError.version, func.count())
        .where(EntryError.journey_id == journey_id)
        .group_by(EntryError.version)
    )
    if version is not None:
        query = query.where(EntryError.version == version)
    return {v: n for v, n in session.execute(query)}


def _journey_off_counts(session: Session, journey_id: str, version: str | None) -> dict[str, int]:
    query = (
        select(EntryOff.version, func.count())
        .where(EntryOff.journey_id == journey_id)
        .group_by(EntryOff.version)
    )
    if version is not None:
        query = query.where(EntryOff.version == version)
    return {v: n for v, n in session.execute(query)}


def _entry_error_samples(
    session: Session, journey_id: str, version: str | None
) -> list[EntryErrorSample]:
    query = select(EntryError).where(EntryError.journey_id == journey_id)
    if version is not None:
        query = query.where(EntryError.version == version)
    rows = session.scalars(query.order_by(EntryError.id.desc()).limit(ENTRY_ERROR_SAMPLES))
    return [
        EntryErrorSample(
            at=row.at,
            version=row.version,
            customer_id=row.customer_id,
            message_id=row.message_id,
            error=row.error,
        )
        for row in rows
    ]


def _add_steps(
    stats: Stats,
    steps: list[str],
    reached: list[tuple[str, str, int]],
    held_out: list[tuple[str, str, int]],
) -> None:
    """The step log's counts. A run has one version, so its runs per step add up across
    versions without counting a run twice."""
    runs = Counter[str]()
    for _, step, n in reached:
        runs[step] += n
    stats.reached = _with_steps(steps, runs)
    held = Counter[str]()
    for _, step, n in held_out:
        held[step] += n
    stats.held_out_messages = held.total()
    stats.held_out_by_step = _ordered(held)


def _channel_row(row: tuple[Any, ...]) -> ChannelMessages:
    _, channel, status, n, delivered, opened, clicked, complained, failed_at = row
    return ChannelMessages(
        channel=channel or NO_CHANNEL,
        messages=n,
        sent=n if status == "sent" else 0,
        delivered=delivered,
        opened=opened,
        clicked=clicked,
        complained=complained,
        failed=n if status == "failed" else failed_at,
        unknown=n if status == "unknown" else 0,
        skipped=n if status == "skipped" else 0,
        pending=n if status in ("pending", "sending") else 0,
    )


# -- queries ------------------------------------------------------------------------------


def _run_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, bool, str, str | None, int]]:
    """(version, held out, status, outcome, runs)."""
    query = (
        select(
            JourneyRun.version,
            JourneyRun.holdout,
            JourneyRun.status,
            JourneyRun.outcome,
            func.count(),
        )
        .where(JourneyRun.journey_id == journey_id)
        .group_by(JourneyRun.version, JourneyRun.holdout, JourneyRun.status, JourneyRun.outcome)
    )
    if version is not None:
        query = query.where(JourneyRun.version == version)
    return [(v, bool(h), s, o, n) for v, h, s, o, n in session.execute(query)]


def _attributed_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, bool, int]]:
    """(version, held out, runs) of runs converted after they ended (`goal.within`)."""
    query = (
        select(JourneyRun.version, JourneyRun.holdout, func.count())
        .where(
            JourneyRun.journey_id == journey_id,
            JourneyRun.attributed_at.is_not(None),
            or_(JourneyRun.outcome.is_(None), JourneyRun.outcome != "converted"),
        )
        .group_by(JourneyRun.version, JourneyRun.holdout)
    )
    if version is not None:
        query = query.where(JourneyRun.version == version)
    return [(v, bool(h), n) for v, h, n in session.execute(query)]


def _converted() -> Any:
    """Runs that converted: by their goal, or within `goal.within` after they ended."""
    return or_(JourneyRun.outcome == "converted", JourneyRun.attributed_at.is_not(None))


def _delivery_rows(session: Session, journey_id: str, version: str | None) -> list[Any]:
    """(version, channel, status, rows, delivered, opened, clicked, complained, failed)."""
    query = (
        select(
            Delivery.version,
            Delivery.channel,
            Delivery.status,
            func.count(),
            func.count(Delivery.delivered_at),
            func.count(Delivery.opened_at),
            func.count(Delivery.clicked_at),
            func.count(Delivery.complained_at),
            func.count(Delivery.failed_at),
        )
        .where(Delivery.journey_id == journey_id)
        .group_by(Delivery.version, Delivery.channel, Delivery.status)
    )
    if version is not None:
        query = query.where(Delivery.version == version)
    return [tuple(row) for row in session.execute(query)]


def _reason_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str | None, str | None, int]]:
    """(version, channel, reason, skipped deliveries)."""
    query = (
        select(Delivery.version, Delivery.channel, Delivery.reason, func.count())
        .where(Delivery.journey_id == journey_id, Delivery.status == "skipped")
        .group_by(Delivery.version, Delivery.channel, Delivery.reason)
    )
    if version is not None:
        query = query.where(Delivery.version == version)
    return [(v, c, r, n) for v, c, r, n in session.execute(query)]


def _reached_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str, int]]:
    """(version, step, runs with a transition recorded at the step); a run that came
    back to a step, or whose record was retried, counts once."""
    query = (
        select(StepLog.version, StepLog.step_id, func.count(distinct(StepLog.run_id)))
        .where(StepLog.journey_id == journey_id, StepLog.action != "entered")
        .group_by(StepLog.version, StepLog.step_id)
    )
    if version is not None:
        query = query.where(StepLog.version == version)
    return [(v, s, n) for v, s, n in session.execute(query)]


def _held_out_rows(
    session: Session, journey_id: str, version: str | None, action: str = "held_out"
) -> list[tuple[str, str, int]]:
    """(version, step, held_out entries): sends, and webhooks, not made for runs held out;
    with another `action` (`error`), the entries of that action."""
    query = (
        select(StepLog.version, StepLog.step_id, func.count())
        .where(StepLog.journey_id == journey_id, StepLog.action == action)
        .group_by(StepLog.version, StepLog.step_id)
    )
    if version is not None:
        query = query.where(StepLog.version == version)
    return [(v, s, n) for v, s, n in session.execute(query)]


def _last_touches(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str | None, str | None]]:
    """(version, channel, step) of the last message before each treatment conversion;
    channel and step are None for a conversion with no message before it."""
    converted = [
        JourneyRun.journey_id == journey_id,
        _converted(),
        JourneyRun.holdout.is_(False),
    ]
    if version is not None:
        converted.append(JourneyRun.version == version)
    # The workflow's clock (decided_at), like the run's start and end: the worker's wall
    # clock (sent_at) differs from it in time-skipped simulations.
    at = func.coalesce(Delivery.decided_at, Delivery.sent_at)
    query = (
        select(
            JourneyRun.run_id,
            JourneyRun.version,
            Delivery.id,
            Delivery.channel,
            Delivery.step_id,
            at,
        )
        .outerjoin(
            Delivery,
            and_(
                Delivery.workflow_id == JourneyRun.workflow_id,
                Delivery.journey_id == JourneyRun.journey_id,
                Delivery.status == "sent",
                at >= JourneyRun.started_at,
                or_(JourneyRun.ended_at.is_(None), at <= JourneyRun.ended_at),
            ),
        )
        .where(*converted)
    )
    last: dict[str, tuple[str, tuple[datetime, int] | None, str | None, str | None]] = {}
    for run_id, run_version, delivery_id, channel, step, sent_at in session.execute(query):
        key = (sent_at, delivery_id) if sent_at is not None else None
        seen = last.get(run_id)
        if seen is None or (key is not None and (seen[1] is None or key > seen[1])):
            last[run_id] = (run_version, key, channel, step)
    return [(v, c if key else None, s if key else None) for v, key, c, s in last.values()]


# -- holdout lift -------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z_95) -> Interval:
    """Wilson's score interval for a proportion p = successes / n:

    (p + z²/2n ± z·√(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    """
    if n <= 0:
        raise ValueError("no trials")
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return Interval(low=(centre - spread) / scale, high=(centre + spread) / scale)


def newcombe_interval(k1: int, n1: int, k2: int, n2: int, z: float = Z_95) -> Interval:
    """Newcombe's hybrid score interval (his method 10, 1998) for p1 - p2.

    With (l1, u1) and (l2, u2) the Wilson intervals of p1 = k1/n1 and p2 = k2/n2 and
    d = p1 - p2:

        low  = d - √((p1 - l1)² + (u2 - p2)²)
        high = d + √((u1 - p1)² + (p2 - l2)²)

    Unlike the Wald interval d ± z·√(p1(1-p1)/n1 + p2(1-p2)/n2), it keeps its coverage
    for rates near 0 (conversion rates often are) and never leaves [-1, 1].
    """
    p1, p2 = k1 / n1, k2 / n2
    w1, w2 = wilson_interval(k1, n1, z), wilson_interval(k2, n2, z)
    d = p1 - p2
    return Interval(
        low=d - math.sqrt((p1 - w1.low) ** 2 + (w2.high - p2) ** 2),
        high=d + math.sqrt((w1.high - p1) ** 2 + (p2 - w2.low) ** 2),
    )


def holdout_lift(
    treatment: int, treatment_converted: int, control: int, control_converted: int
) -> Lift:
    """The treatment's conversion rate against the control's, with its 95% interval;
    estimated only with at least MIN_GROUP entrants in each group."""
    treatment_rate = treatment_converted / treatment if treatment else None
    control_rate = control_converted / control if control else None
    enough = treatment >= MIN_GROUP and control >= MIN_GROUP
    difference = interval = relative = None
    if enough and treatment_rate is not None and control_rate is not None:
        difference = treatment_rate - control_rate
        interval = newcombe_interval(treatment_converted, treatment, control_converted, control)
        relative = difference / control_rate if control_rate else None
    lift = Lift(
        treatment_entered=treatment,
        treatment_converted=treatment_converted,
        control_entered=control,
        control_converted=control_converted,
        treatment_rate=treatment_rate,
        control_rate=control_rate,
        difference=difference,
        interval=interval,
        relative=relative,
        enough_data=enough,
        verdict="",
    )
    lift.verdict = verdict(lift)
    return lift


def verdict(lift: Lift) -> str:
    """The lift in a sentence a marketer can act on."""
    if lift.difference is None or lift.interval is None:
        return (
            f"not enough data yet: at least {MIN_GROUP} customers are needed in each group "
            f"(treatment {lift.treatment_entered}, control {lift.control_entered})"
        )
    points = lift.difference * 100
    ci = f"95% CI {lift.interval.low * 100:.1f} to {lift.interval.high * 100:.1f}"
    if lift.interval.low > 0:
        return f"the journey lifts conversion by {points:.1f} points ({ci})"
    if lift.interval.high < 0:
        return f"the journey lowers conversion by {-points:.1f} points ({ci})"
    return f"no significant difference yet ({points:+.1f} points, {ci})"


# -- skip reasons -------------------------------------------------------------------------


def reason_kind(reason: str | None) -> str:
    """A skip reason without its particulars, so that like skips group together:
    "email: not reachable (no email address); sms: not reachable (no phone number)"
    -> "not reachable". A skip with several kinds lists them, joined by " + "."""
    if not reason:
        return "no reason given"
    if reason.startswith("frequency cap"):
        return "frequency cap"
    if reason.startswith("journey cap"):
        return "journey cap"
    if reason.startswith(("only_if false", "only_if error")):
        # Without its values, which would make each skip a kind of its own.
        return "only_if false" if reason.startswith("only_if false") else "only_if error"
    kinds: list[str] = []
    for part in reason.split("; "):
        kind = _part_kind(_CHANNEL_PREFIX.sub("", part.strip()))
        if kind not in kinds:
            kinds.append(kind)
    return " + ".join(sorted(kinds))


def _part_kind(text: str) -> str:
    for prefix in (
        "not reachable",
        "address suppressed",
        "quiet hours",
        "frequency cap",
        "journey cap",
        "global holdout",
    ):
        if text.startswith(prefix):
            return prefix
    if text.startswith("unsubscribed from ") or text in ("unknown customer", "no channel"):
        return text  # the topic or channel unsubscribed from says what to look at
    return "other"


# -- the journey page ---------------------------------------------------------------------


class Funnel(BaseModel):
    """Treatment runs (a run held out is sent nothing) by how far they got. A run counts
    at a stage when it reached it, whatever the stages before say: a customer may
    convert without any message."""

    entered: int
    messaged: int = Field(description="got at least one message")
    engaged: int = Field(description="opened or clicked a message")
    converted: int


def funnel(session: Session, journey_id: str, version: str | None = None) -> Funnel:
    """Entered, got a message, opened or clicked, converted; reads, never writes.

    A message belongs to a run as for attribution: same workflow id, sent between the
    run's start and end.
    """
    runs = [JourneyRun.journey_id == journey_id, JourneyRun.holdout.is_(False)]
    if version is not None:
        runs.append(JourneyRun.version == version)
    entered, converted = session.execute(
        select(func.count(), func.count(case((_converted(), 1)))).where(*runs)
    ).one()
    at = func.coalesce(Delivery.decided_at, Delivery.sent_at)
    engaged = or_(Delivery.opened_at.is_not(None), Delivery.clicked_at.is_not(None))
    messaged, engaged_runs = session.execute(
        select(
            func.count(distinct(JourneyRun.run_id)),
            func.count(distinct(case((engaged, JourneyRun.run_id)))),
        )
        .join(
            Delivery,
            and_(
                Delivery.workflow_id == JourneyRun.workflow_id,
                Delivery.journey_id == JourneyRun.journey_id,
                Delivery.status == "sent",
                at >= JourneyRun.started_at,
                or_(JourneyRun.ended_at.is_(None), at <= JourneyRun.ended_at),
            ),
        )
        .where(*runs)
    ).one()
    return Funnel(entered=entered, messaged=messaged, engaged=engaged_runs, converted=converted)


def messages_by_step(
    session: Session, journey_id: str, version: str | None = None
) -> dict[str, int]:
    """Messages sent by each send step, all channels together; reads, never writes."""
    query = (
        select(Delivery.step_id, func.count())
        .where(Delivery.journey_id == journey_id, Delivery.status == "sent")
        .group_by(Delivery.step_id)
    )
    if version is not None:
        query = query.where(Delivery.version == version)
    return {step: n for step, n in session.execute(query)}


# -- where running runs are ---------------------------------------------------------------


def running_query(journey_id: str, version: str | None = None) -> str:
    """The visibility query for a journey's running runs."""
    clauses = [
        f"WorkflowType = {visibility_literal(JOURNEY_WORKFLOW)}",
        f"{JOURNEY_ID.name} = {visibility_literal(journey_id)}",
        "ExecutionStatus = 'Running'",
    ]
    if version is not None:
        clauses.append(f"{JOURNEY_VERSION.name} = {visibility_literal(version)}")
    return " AND ".join(clauses)


async def running_steps(
    client: Client,
    journey_id: str,
    version: str | None = None,
    limit: int = VISIBILITY_LIMIT,
) -> dict[str, int]:
    """Running runs by their `JourneyStep` search attribute (at most `limit` runs read)."""
    counts: Counter[str] = Counter()
    async for execution in client.list_workflows(running_query(journey_id, version), limit=limit):
        counts[execution.typed_search_attributes.get(JOURNEY_STEP) or "(starting)"] += 1
    return dict(counts)


# -- helpers ------------------------------------------------------------------------------


def _holdout_share(plan: Mapping[str, Any] | None) -> float:
    if not plan:
        return 0.0
    share = plan.get("journey", {}).get("entry", {}).get("holdout")
    return parse_percent(share) if share else 0.0  # stored as written: "10%"


def _step_ids(plans: Mapping[str, Mapping[str, Any]], versions: Iterable[str]) -> list[str]:
    """Step ids in journey order, the newest version's first."""
    ids: list[str] = []
    for v in reversed(list(versions)):
        for step in (plans.get(v) or {}).get("journey", {}).get("steps", []):
            if step.get("id") and step["id"] not in ids:
                ids.append(step["id"])
    return ids


def _send_steps(plans: Mapping[str, Mapping[str, Any]]) -> set[tuple[str, str]]:
    """(version, step id) of every send step: a held-out webhook is not a message."""
    return {
        (v, step["id"])
        for v, plan in plans.items()
        for step in (plan or {}).get("journey", {}).get("steps", [])
        if step.get("send") is not None
    }


def _with_steps(steps: list[str], counts: Mapping[str, int]) -> dict[str, int]:
    """Every step of the journey, with zero where no run is; then any other step seen."""
    shown = {step: counts.get(step, 0) for step in steps}
    for step, n in sorted(counts.items()):
        shown.setdefault(step, n)
    return shown


def _ordered(counts: Mapping[str, int]) -> dict[str, int]:
    """Largest first, then by name: the order a report reads best in."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
