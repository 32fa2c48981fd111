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

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import case, distinct, func, or_, select
from sqlalchemy.orm import Session

from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.dsl.durations import parse_percent
from journeyman.insight import stats_queries as q
from journeyman.insight.lift import holdout_lift
from journeyman.insight.stats_report import (
    NO_CHANNEL,
    NO_MESSAGE,
    ChannelMessages,
    Conversions,
    JourneyStats,
    Stats,
    UnknownJourney,
    _ordered,
)
from journeyman.names import JOURNEY_ID, JOURNEY_STEP, JOURNEY_VERSION, JOURNEY_WORKFLOW
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.optimization.splits import split_reports
from journeyman.platform.temporal import visibility_literal
from journeyman.storage.models import (
    Delivery,
    EntryError,
    EntryOff,
    JourneyRun,
    JourneyVersion,
)

if TYPE_CHECKING:
    from temporalio.client import Client

# How many running workflows `running_steps` reads from visibility at most.
VISIBILITY_LIMIT = 10_000


# -- the report ---------------------------------------------------------------------------


def journey_stats(
    session: Session,
    journey_id: str,
    *,
    version: str | None = None,
    now_at_step: Mapping[str, int] | None = None,
    global_holdout: GlobalHoldout | None = None,
) -> JourneyStats:
    """The journey's analytics; `now_at_step` (from `running_steps`) goes to `overall`;
    `global_holdout` (the installation's) leaves its members out of optimized splits'
    cases, as the split's own counts do.

    Raises UnknownJourney when neither a registered version nor a run is recorded.
    """
    registered = session.execute(
        select(JourneyVersion.version, JourneyVersion.plan)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.created_at)
    )
    plans = {v: plan for v, plan in registered}
    runs = q.run_rows(session, journey_id, version)
    known = set(plans) if version is None else set(plans) & {version}
    if not known and not runs:
        what = f"journey {journey_id!r}" + (f" version {version!r}" if version else "")
        raise UnknownJourney(f"no {what} is recorded")
    recorded = _Recorded.read(session, journey_id, version, plans, runs)
    versions = recorded.versions
    latest = versions[-1] if versions else None
    return JourneyStats(
        journey_id=journey_id,
        name=(plans.get(latest) or {}).get("journey", {}).get("name") if latest else None,
        holdout=recorded.holdout.get(latest, 0.0) if latest else 0.0,
        overall=recorded.stats(version, now_at_step),
        versions=[recorded.stats(v, None) for v in versions],
        recent_entry_errors=q.entry_error_samples(session, journey_id, version),
        splits=split_reports(session, journey_id, plans[latest], holdout=global_holdout)
        if latest in plans
        else [],
    )


@dataclass
class _Recorded:
    """What `journey_stats` reads, each row with its version first: `stats` adds up the
    rows of the versions it reports."""

    plans: dict[str, Any]
    versions: list[str]  # registered, oldest first, then any other version with runs
    holdout: dict[str, float]
    runs: list[tuple[str, bool, str, str | None, int]]
    attributed: list[tuple[str, bool, int]]
    deliveries: list[Any]
    reasons: list[tuple[str, str | None, str | None, int]]
    touches: list[tuple[str, str | None, str | None]]
    reached: list[tuple[str, str, int]]
    held_out: list[tuple[str, str, int]]
    failed: list[tuple[str, str, int]]
    entry_errors: dict[str, int]
    journey_off: dict[str, int]

    @classmethod
    def read(
        cls,
        session: Session,
        journey_id: str,
        version: str | None,
        plans: dict[str, Any],
        runs: list[tuple[str, bool, str, str | None, int]],
    ) -> _Recorded:
        sends = _send_steps(plans)
        versions = [v for v in plans if version in (None, v)]
        versions += sorted({r[0] for r in runs} - set(versions))
        held_out = q.held_out_rows(session, journey_id, version)
        return cls(
            plans=plans,
            versions=versions,
            holdout={v: _holdout_share(plans.get(v)) for v in versions},
            runs=runs,
            attributed=q.attributed_rows(session, journey_id, version),
            deliveries=q.delivery_rows(session, journey_id, version),
            reasons=q.reason_rows(session, journey_id, version),
            touches=q.last_touches(session, journey_id, version),
            reached=q.reached_rows(session, journey_id, version),
            held_out=[h for h in held_out if h[:2] in sends],
            failed=q.held_out_rows(session, journey_id, version, action="error"),
            entry_errors=q.counts_by_version(session, EntryError, journey_id, version),
            journey_off=q.counts_by_version(session, EntryOff, journey_id, version),
        )

    def stats(self, only: str | None, counts: Mapping[str, int] | None) -> Stats:
        """One version's (`only`), or all versions' together."""
        shown = [only] if only is not None else self.versions
        steps = _step_ids(self.plans, self.versions)
        stats = _stats(
            only,
            [r for r in self.runs if r[0] in shown],
            [d for d in self.deliveries if d[0] in shown],
            [r for r in self.reasons if r[0] in shown],
            [t for t in self.touches if t[0] in shown],
            has_holdout=any(self.holdout[v] > 0 for v in shown),
            now_at_step=_with_steps(steps, counts) if counts is not None else None,
            attributed=[a for a in self.attributed if a[0] in shown],
        )
        _add_steps(
            stats,
            _step_ids(self.plans, shown),
            [r for r in self.reached if r[0] in shown],
            [h for h in self.held_out if h[0] in shown],
        )
        failed = Counter[str]()
        for v, step, n in self.failed:
            if v in shown:
                failed[step] += n
        stats.errors_by_step = _ordered(failed)
        stats.entry_errors = sum(n for v, n in self.entry_errors.items() if v in shown)
        stats.journey_off = sum(n for v, n in self.journey_off.items() if v in shown)
        return stats


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
    channels = _channels(deliveries, reasons)
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


def _channels(
    deliveries: list[tuple[Any, ...]], reasons: list[tuple[str, str | None, str | None, int]]
) -> dict[str, ChannelMessages]:
    """Deliveries by channel, with the kinds of their skips."""
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
    return channels


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


# -- skip reasons -------------------------------------------------------------------------


# The kinds of one channel's skip, by the words its reason starts with.
_KINDS = (
    "not reachable",
    "address suppressed",
    "quiet hours",
    "frequency cap",
    "journey cap",
    "global holdout",
)


def reason_kind(reason: str | None) -> str:
    """A skip reason without its particulars, so that like skips group together:
    "email: not reachable (no email address); sms: not reachable (no phone number)"
    -> "not reachable". A skip with several kinds lists them, joined by " + ".

    Read back from the words because they are all there is: `deliveries.reason` is the
    text the send step recorded (each channel's reason, "; "-joined), and the rows already
    recorded hold nothing else. This is the one place that parses it.
    """
    if not reason:
        return "no reason given"
    # Whole-send skips; an only_if skip without its values, each a kind of its own else.
    for whole in ("frequency cap", "journey cap", "only_if false", "only_if error"):
        if reason.startswith(whole):
            return whole
    kinds: list[str] = []
    for part in reason.split("; "):
        channel, sep, rest = part.strip().partition(": ")
        text = rest if sep and channel in CHANNEL_FILES else part.strip()
        kind = next((k for k in _KINDS if text.startswith(k)), "other")
        if text.startswith("unsubscribed from ") or text in ("unknown customer", "no channel"):
            kind = text  # the topic or channel unsubscribed from says what to look at
        if kind not in kinds:
            kinds.append(kind)
    return " + ".join(sorted(kinds))


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
        select(func.count(), func.count(case((q.converted_runs(), 1)))).where(*runs)
    ).one()
    engaged = or_(Delivery.opened_at.is_not(None), Delivery.clicked_at.is_not(None))
    messaged, engaged_runs = session.execute(
        select(
            func.count(distinct(JourneyRun.run_id)),
            func.count(distinct(case((engaged, JourneyRun.run_id)))),
        )
        .join(Delivery, q.sent_during_run())
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
