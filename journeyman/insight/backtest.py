"""`journeyman backtest`: last week's customers through a journey version, before it ships.

The recorded track events of a period (the `events` table) are replayed through one
journey version on Temporal's time-skipping test server, in the sandbox `journeyman
simulate` uses too (journeyman/insight/sandbox.py): the real worker and router, every
channel into the outbox of a throwaway SQLite database, webhooks answered by a mock.
Nothing is sent.

Who is replayed: each customer with the journey's entry event in the period (the first
`limit_customers` of them by their first such event), with their profile as it is now
(copied from `customers`), their track events of the period, and 90 days of earlier
events as history for `last()` and `count()`. Events the journey reacts to (entry,
goal, exits, `wait_for`) are routed; the others are only stored. A delivery event
(`email_opened` ...) is routed only when it was about a message of this journey's step
that the version being tested also has: the customer is assumed to react to that step's
message as they did to the one they got.

All customers share one server, one worker and one virtual clock, so their runs overlap
as they did in reality. The clock: the test server's starts at real now, and virtual
time only moves forward, so the period is played shifted forward by a whole number of
days (the fewest that put its start at or after the server's now). Whole days keep each
event's time of day, which is what quiet hours and `wait: {until: ...}` read on the
customer's clock; offsets between events stay exact. (A shift across a daylight-saving
change moves local times by the hour of the change, as it would have for the period.)

After the last event of the period, runs are left to finish within the bounds, as in a
simulation. Frequency caps only count this journey's messages: other journeys' sends
are not replayed.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.testing import WorkflowEnvironment

from journeyman.contracts import CustomerEvent, PathEntry
from journeyman.dsl.compiler import Compiled, compile_file
from journeyman.dsl.durations import parse_duration
from journeyman.dsl.model import SendStep
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Router
from journeyman.insight import sandbox
from journeyman.insight.sandbox import MAX_REAL, advance_to
from journeyman.insight.timeline import format_span
from journeyman.messaging import catalogs as catalog_items
from journeyman.names import DELIVERY_EVENTS
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

# Earlier events copied as history, for `last()` and `count()` in conditions.
HISTORY = timedelta(days=90)
# Runs still going this long after the end of the period are cut.
AFTER_PERIOD = timedelta(days=60)
DAY = timedelta(days=1)
# Customers read per query (bounded `IN` lists).
CHUNK = 500
# Why a send waited (`deferrals`): the step log's "deferred" entries start with one.
Deferral = Literal["quiet hours", "frequency cap"]
QUIET_HOURS: Deferral = "quiet hours"
FREQUENCY_CAP: Deferral = "frequency cap"


class BacktestError(Exception):
    """Bad input to a backtest (period, journey); the message says what."""


@dataclass(frozen=True)
class Recorded:
    """One recorded track event, as read from the events table."""

    message_id: str
    customer_id: str
    name: str
    properties: dict[str, Any]
    timestamp: datetime
    route: bool  # the journey reacts to it; otherwise only stored as history


@dataclass
class BacktestReport:
    journey_id: str
    journey_name: str
    version: str
    since: datetime
    until: datetime
    considered: int = 0  # customers with the entry event in the period
    entered: int = 0  # customers with at least one run
    runs: int = 0
    not_entered: dict[str, int] = field(default_factory=dict)  # reason -> customers
    events: int = 0  # events of the period replayed (stored and, if heard, routed)
    messages: dict[str, dict[str, int]] = field(default_factory=dict)  # channel -> template
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> sends
    failed: dict[str, int] = field(default_factory=dict)  # reason -> sends and webhooks
    deferrals: dict[Deferral, int] = field(
        default_factory=lambda: {QUIET_HOURS: 0, FREQUENCY_CAP: 0}
    )
    held_out: int = 0  # sends and webhooks not made for holdout runs
    outcomes: dict[str, int] = field(default_factory=dict)  # converted|exited|ended|...|cut
    note: str | None = None
    virtual: timedelta = timedelta(0)  # from the period start to the last run's end
    real_seconds: float = 0.0

    @property
    def message_count(self) -> int:
        return sum(n for templates in self.messages.values() for n in templates.values())

    @property
    def conversions(self) -> int:
        return self.outcomes.get("converted", 0)

    @property
    def exits(self) -> int:
        return self.outcomes.get("exited", 0)

    def as_json(self) -> dict[str, Any]:
        return {
            "journey_id": self.journey_id,
            "journey_name": self.journey_name,
            "version": self.version,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "customers": {
                "considered": self.considered,
                "entered": self.entered,
                "entered_rate": _rate(self.entered, self.considered),
                "not_entered": self.not_entered,
            },
            "runs": self.runs,
            "events": self.events,
            "messages": {
                "total": self.message_count,
                "per_run": _rate(self.message_count, self.runs),
                "by_channel": {
                    channel: {"total": sum(templates.values()), "templates": templates}
                    for channel, templates in self.messages.items()
                },
            },
            "skipped": self.skipped,
            "failed": self.failed,
            "deferrals": self.deferrals,
            "held_out": self.held_out,
            "outcomes": self.outcomes,
            "conversions": self.conversions,
            "conversion_rate": _rate(self.conversions, self.runs),
            "exits": self.exits,
            "exit_rate": _rate(self.exits, self.runs),
            "virtual_seconds": round(self.virtual.total_seconds()),
            "real_seconds": round(self.real_seconds, 2),
            "note": self.note,
        }

    def lines(self) -> list[str]:
        """The report as a marketer reads it."""
        title = f"backtest {self.journey_id} ({self.journey_name}) version {self.version}"
        period = f"{self.since:%Y-%m-%d %H:%M} to {self.until:%Y-%m-%d %H:%M} UTC"
        lines = [title, f"period {period}: {self.events:,} events replayed", ""]
        rows = [
            ["customers considered", f"{self.considered:,}", "had the entry event"],
            ["entered", f"{self.entered:,}", _pct(self.entered, self.considered)],
            ["not entered", f"{self.considered - self.entered:,}", ""],
        ]
        rows += [[f"  {reason}", f"{n:,}", ""] for reason, n in self.not_entered.items()]
        rows.append(["runs", f"{self.runs:,}", ""])
        for outcome, n in self.outcomes.items():
            rows.append([f"  {outcome}", f"{n:,}", _pct(n, self.runs) + " of runs"])
        lines += _rows(rows)
        lines += ["", f"messages: {self.message_count:,} ({_per(self.message_count, self.runs)})"]
        width = max((len(channel) for channel in self.messages), default=0)
        message_rows = [
            [f"  {channel:<{width}}  {template}", f"{n:,}"]
            for channel, templates in self.messages.items()
            for template, n in templates.items()
        ]
        lines += _rows(message_rows) if message_rows else ["  none"]
        deferred = ", ".join(f"{kind} {n:,}" for kind, n in self.deferrals.items())
        lines += ["", f"deferred: {deferred}"]
        for title, counts in (("skipped", self.skipped), ("failed", self.failed)):
            if counts:
                lines += ["", f"{title}, by reason"]
                lines += _rows([[f"  {reason}", f"{n:,}"] for reason, n in counts.items()])
        if self.held_out:
            lines += ["", f"held out (holdout, nothing sent): {self.held_out:,}"]
        lines += [
            "",
            f"conversions: {self.conversions:,} of {self.runs:,} runs "
            f"({_pct(self.conversions, self.runs)}); exits: {self.exits:,} "
            f"({_pct(self.exits, self.runs)})",
            f"took {self.real_seconds:.1f} s real for {format_span(self.virtual)} of virtual time"
            + (f" ({self.note})" if self.note else ""),
        ]
        return lines


def parse_moment(text: str, now: datetime) -> datetime:
    """A moment given as a duration before `now` (`7d`) or as an ISO date or time (UTC
    unless it says otherwise)."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BacktestError(
            f"{text!r} is neither a duration before now (7d, 12h) nor a date (2026-03-01)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def backtest(
    journey: Path,
    *,
    settings: Settings,
    source: Database,
    since: datetime,
    until: datetime,
    templates_dir: Path | None = None,
    env: WorkflowEnvironment | None = None,
    limit_customers: int | None = None,
    after_period: timedelta = AFTER_PERIOD,
    max_real: timedelta = MAX_REAL,
    catalogs: dict[str, list[catalog_items.Item]] | None = None,
) -> BacktestReport:
    """Replay the events of `source` between `since` and `until` through the journey
    in `journey` (a file) and report what it would have done.

    `catalog()` reads `catalogs` (`--catalog NAME=FILE`) and, for the others, the
    source's catalogs as they are now.
    Compiling raises `JourneyError`; a bad period raises `BacktestError`. Without `env`
    a test server is started for the backtest and stopped afterwards.
    """
    started = time.perf_counter()
    if until <= since:
        raise BacktestError(f"the period ends ({until.isoformat()}) before it starts")
    compiled = compile_file(journey, templates_dir or settings.templates_dir)
    plan = compiled.plan
    if plan.journey.entry.segment is not None:
        raise BacktestError(
            f"{plan.journey.id} is entered by a segment, not an event: backtest replays "
            f"entry events; `journeyman broadcast {plan.journey.id} --dry-run` says who "
            "the segment would enter now"
        )
    report = BacktestReport(plan.journey.id, plan.journey.name, plan.version, since, until)
    customers, history, events = await asyncio.to_thread(
        _read_source, source, plan, since, until, limit_customers
    )
    report.considered = len(customers)
    report.events = len(events)
    if not customers:
        report.real_seconds = time.perf_counter() - started
        return report
    async with sandbox.throwaway(env, "backtest") as (server, db):
        await asyncio.to_thread(_catalogs, source, db, catalogs or {})
        replay = _Replay(customers, history, events, started + max_real.total_seconds())
        await _replay(server, db, compiled, settings, replay, report, after_period)
    report.real_seconds = time.perf_counter() - started
    return report


def _catalogs(source: Database, db: Database, given: dict[str, list[catalog_items.Item]]) -> None:
    with source.session() as reading, db.session() as writing:
        catalog_items.copy_catalogs(reading, writing, set(given))
        catalog_items.load(writing, given)


def _read_source(
    source: Database, plan: Plan, since: datetime, until: datetime, limit: int | None
) -> tuple[list[Customer], list[Recorded], list[Recorded]]:
    """The customers to replay (with their profiles), their earlier history, and the
    period's track events in time order."""
    routed = _routed(plan)
    with source.session() as session:
        ids = _customer_ids(session, plan, since, until, limit)
        customers: list[Customer] = []
        history: list[Recorded] = []
        events: list[Recorded] = []
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            found = {
                c.id: c for c in session.scalars(select(Customer).where(Customer.id.in_(chunk)))
            }
            customers += [found.get(i) or Customer(id=i, traits={}, push_tokens=[]) for i in chunk]
            for recorded in _recorded(session, chunk, since, until, routed):
                (events if recorded.timestamp >= since else history).append(recorded)
        session.expunge_all()
    events.sort(key=lambda e: e.timestamp)
    return customers, history, events


def _routed(plan: Plan) -> Callable[[Event], bool]:
    """Whether the journey hears a recorded event (entry, goal, exits, `wait_for`); a
    delivery event only when it was about a send step this version also has."""
    entry_event = plan.journey.entry.event
    heard = {entry_event, *plan.listens}
    sends = {s.id for s in plan.journey.steps if isinstance(s, SendStep)}

    def routed(row: Event) -> bool:
        if row.name not in heard:
            return False
        if row.name not in DELIVERY_EVENTS or row.name == entry_event:
            return True
        props = row.properties or {}
        return props.get("journey_id") == plan.journey.id and props.get("step_id") in sends

    return routed


def _customer_ids(
    session: Session, plan: Plan, since: datetime, until: datetime, limit: int | None
) -> list[str]:
    """Customers with the entry event in the period, by their first such event."""
    firsts = session.execute(
        select(Event.customer_id, Event.timestamp)
        .where(
            Event.type == "track",
            Event.name == plan.journey.entry.event,
            Event.timestamp >= since,
            Event.timestamp < until,
        )
        .order_by(Event.timestamp, Event.id)
    ).all()
    ids = list(dict.fromkeys(customer_id for customer_id, _ in firsts))
    return ids[:limit] if limit is not None else ids


def _recorded(
    session: Session,
    customers: list[str],
    since: datetime,
    until: datetime,
    routed: Callable[[Event], bool],
) -> Iterator[Recorded]:
    """The customers' track events from `HISTORY` before the period to its end."""
    rows = session.scalars(
        select(Event)
        .where(
            Event.type == "track",
            Event.customer_id.in_(customers),
            Event.timestamp >= since - HISTORY,
            Event.timestamp < until,
        )
        .order_by(Event.timestamp, Event.id)
    )
    for row in rows:
        yield Recorded(
            message_id=row.message_id,
            customer_id=row.customer_id,
            name=row.name or "",
            properties=dict(row.properties or {}),
            timestamp=row.timestamp,
            route=routed(row),
        )


def day_shift(since: datetime, now: datetime) -> timedelta:
    """The fewest whole days that move `since` to `now` or later (never backwards)."""
    return DAY * max(0, math.ceil((now - since) / DAY))


@dataclass(frozen=True)
class _Replay:
    """What a backtest plays, as read from the source, and the real moment
    (`perf_counter`) after which runs still going are cut."""

    customers: Sequence[Customer]
    history: Sequence[Recorded]
    events: Sequence[Recorded]
    deadline: float


async def _replay(
    env: WorkflowEnvironment,
    db: Database,
    compiled: Compiled,
    settings: Settings,
    replay: _Replay,
    report: BacktestReport,
    after_period: timedelta,
) -> None:
    plan = compiled.plan
    shift = day_shift(report.since, await env.get_current_time())
    origin = report.since + shift
    world = sandbox.Sandbox(env, db, compiled, settings, "backtest")
    with db.session() as session:
        for customer in replay.customers:
            session.add(_copy(customer))
        for event in replay.history:
            session.add(_stored(event, event.timestamp + shift))
    reasons: dict[str, str] = {}  # customer -> why their first trigger did not enter them
    async with world.running() as router:
        await advance_to(env, origin)
        # Events of the same second are routed together, each customer's in order.
        for _, batch in itertools.groupby(
            replay.events, key=lambda e: e.timestamp.replace(microsecond=0)
        ):
            played = list(batch)
            await advance_to(env, played[0].timestamp + shift)
            now = await env.get_current_time()
            by_customer: dict[str, list[Recorded]] = defaultdict(list)
            for event in played:
                by_customer[event.customer_id].append(event)
            await asyncio.gather(
                *(
                    _play(router, db, plan, customer_events, now, reasons)
                    for customer_events in by_customer.values()
                )
            )
        await advance_to(env, report.until + shift)
        runs = sandbox.entered_runs(db)
        max_virtual = (report.until - report.since) + after_period
        results, cut = await sandbox.finish(
            env, [(wf, run) for wf, run, _ in runs], origin, max_virtual, replay.deadline
        )
        end = await env.get_current_time()
    entered = {customer for _, _, customer in runs}
    report.entered = len(entered)
    report.runs = len(runs)
    report.not_entered = _tally(
        reason for customer, reason in reasons.items() if customer not in entered
    )
    _count_paths(report, results)
    report.note = cut
    last = max((entry.at for _, path in results for entry in path), default=origin)
    virtual = (max(last, end) if cut else last) - origin
    report.virtual = timedelta(seconds=max(0, round(virtual.total_seconds())))


async def _play(
    router: Router,
    db: Database,
    plan: Plan,
    events: list[Recorded],
    now: datetime,
    reasons: dict[str, str],
) -> None:
    """Store one customer's events of this moment and route those the journey hears."""
    for event in events:
        await asyncio.to_thread(_store, db, event, now)
        if not event.route:
            continue
        routed = await router.route(
            event.customer_id,
            CustomerEvent(
                message_id=event.message_id,
                name=event.name,
                properties=event.properties,
                timestamp=now,
            ),
        )
        if event.name == plan.journey.entry.event and not routed.entered:
            reason = routed.reason(plan.journey.id) or "not entered"
            reasons.setdefault(event.customer_id, reason)


def _copy(customer: Customer) -> Customer:
    return Customer(
        id=customer.id,
        email=customer.email,
        phone=customer.phone,
        timezone=customer.timezone,
        locale=customer.locale,
        push_tokens=list(customer.push_tokens or []),
        traits=dict(customer.traits or {}),
    )


def _stored(event: Recorded, at: datetime) -> Event:
    return Event(
        message_id=event.message_id,
        type="track",
        customer_id=event.customer_id,
        name=event.name,
        properties=event.properties,
        timestamp=at,
        dispatched_at=at,
    )


def _store(db: Database, event: Recorded, now: datetime) -> None:
    with db.session() as session:
        session.add(_stored(event, now))


def _count_paths(report: BacktestReport, results: list[tuple[str | None, list[PathEntry]]]) -> None:
    messages: dict[str, Counter[str]] = defaultdict(Counter)
    skipped: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for outcome, path in results:
        outcomes[outcome or "cut"] += 1
        for entry in path:
            match entry.action:
                case "sent":
                    messages[entry.channel or "?"][entry.template or "?"] += 1
                case "skipped":
                    skipped[entry.detail or "no reason given"] += 1
                case "failed":
                    failed[entry.detail or "no reason given"] += 1
                case "held_out":
                    report.held_out += 1
                case "deferred":
                    kind = QUIET_HOURS if entry.detail.startswith(QUIET_HOURS) else FREQUENCY_CAP
                    report.deferrals[kind] += 1
    report.messages = {
        channel: dict(messages[channel].most_common())
        for channel in sorted(messages, key=lambda c: -sum(messages[c].values()))
    }
    report.skipped = dict(skipped.most_common())
    report.failed = dict(failed.most_common())
    report.outcomes = dict(outcomes.most_common())


def _tally(values: Any) -> dict[str, int]:
    return dict(Counter(values).most_common())


def _rate(n: int, of: int) -> float | None:
    return round(n / of, 4) if of else None


def _pct(n: int, of: int) -> str:
    return f"{n / of:.1%}" if of else "-"


def _per(n: int, of: int) -> str:
    return f"{n / of:.2f} per run" if of else "no runs"


def _rows(rows: list[list[str]]) -> list[str]:
    """Aligned columns: a label, a count (right-aligned), then a note."""
    if not rows:
        return []
    label = max(len(r[0]) for r in rows)
    count = max(len(r[1]) for r in rows)
    return ["  ".join([r[0].ljust(label), r[1].rjust(count), *r[2:]]).rstrip() for r in rows]
