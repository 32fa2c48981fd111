"""Segments: which customers a journey's `entry.segment` matches, and who of them enters.

A segment is checked over every profile, in pages of `PAGE_SIZE` customers in id order
(anonymous profiles merged into a known customer are not customers of their own). For
each page:

0. what SQL can answer of the segment (a trait compared with a value, `last()` and
   `count()` over the events index: journeyman/audiences/pushdown.py) narrows the
   customers read to those who may match or fail; the others, counted as evaluated,
   are not matches, exactly as Python would have found;
1. the segment is evaluated for each customer with `profile`, `now` (the tick's time),
   `today`, and history functions that query once for the whole page (`PageHistory`):
   `last('order_placed')` for 500 customers is one query, not 500;
2. the matching customers go through the entry rules, also one query per page: not
   opted out of the journey's topic (they would be sent nothing), not in the journey
   already, `reentry` holds. A customer whose run this very tick started (found by its
   trigger's message id, `segment_message_id`) counts as entered, so a page evaluated
   again after a crash enters nobody twice and counts them once.

Expression errors (a trait some profiles lack) count against the customer only: they
are counted, the first few kept as samples, and the customer is not entered.

`AudienceTick` rows keep each tick's progress (`cursor`: the last customer id done) and
counts; a retried tick resumes after its cursor. Nothing here talks to Temporal: the
tick activity (activities/audience.py) enters customers with the router, and
`dry_run` reports what a tick would do without entering anyone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from journeyman.audiences.pushdown import prefilter
from journeyman.contracts import CustomerEvent
from journeyman.customers.clock import zone
from journeyman.customers.identity import owners
from journeyman.customers.profiles import clock_names, history_functions
from journeyman.dsl.chance import in_holdout
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.model import SendStep
from journeyman.dsl.plan import Plan
from journeyman.events.routing import reentry_refusal
from journeyman.messaging.catalogs import lookup_functions
from journeyman.names import SEGMENT_ENTRY_EVENT
from journeyman.storage.db import Database
from journeyman.storage.models import (
    CUSTOMER_PROFILE_COLUMNS,
    AudienceTick,
    Consent,
    Customer,
    Event,
    JourneyControl,
    JourneyRun,
    profile_of,
    utcnow,
)

PAGE_SIZE = 500
# Pages of customers a page stands for when SQL narrows the segment: their ids are
# counted (an index scan), and only the customers the prefilter keeps are read.
WINDOW = 100
MAX_ERROR_SAMPLES = 10
ENTERED_BY_THIS_TICK = "entered by this tick"
# The entry's own message id must fit `journey_runs.trigger_message_id`.
MAX_MESSAGE_ID = 200


def segment_message_id(tick_id: str, customer_id: str) -> str:
    """The message id of the trigger a tick gives a customer: the same every time the
    tick runs, so that the run it started is recognized."""
    tick = hashlib.sha256(tick_id.encode()).hexdigest()[:16]
    message_id = f"segment:{tick}:{customer_id}"
    if len(message_id) <= MAX_MESSAGE_ID:
        return message_id
    return f"segment:{tick}:" + hashlib.sha256(customer_id.encode()).hexdigest()


def segment_trigger(tick_id: str, kind: str, customer_id: str, at: datetime) -> CustomerEvent:
    """The trigger of a run entered by a segment: `trigger.name` is `segment_entry`,
    `trigger.at` the tick's time, `trigger.properties.tick` the tick."""
    return CustomerEvent(
        message_id=segment_message_id(tick_id, customer_id),
        name=SEGMENT_ENTRY_EVENT,
        properties={"tick": tick_id, "kind": kind},
        timestamp=at,
    )


# -- history for a page of customers ---------------------------------------------------


class PageHistory:
    """`last` and `count` for many customers at once: the first call for an event name
    (and `within`) queries the whole page, later customers read the answer. `recent`,
    rare in segments, queries per customer."""

    def __init__(self, session: Session, customer_ids: list[str], now: datetime) -> None:
        self.session = session
        self.ids = customer_ids
        self.now = now
        self._last: dict[str, dict[str, dict[str, Any]]] = {}
        self._count: dict[tuple[str, timedelta | None], dict[str, int]] = {}

    def functions(self, customer_id: str) -> dict[str, Callable[..., Any]]:
        own = history_functions(self.session, customer_id, self.now)

        def last(name: str, **props: Any) -> dict[str, Any] | None:
            if props:  # property filters (DSL v2) ask per customer
                return own["last"](name, **props)
            return self._lasts(name).get(customer_id)

        def count(name: str, within: timedelta | None = None, **props: Any) -> int:
            if within is not None and not isinstance(within, timedelta):
                raise ExpressionError(f"within= takes a duration such as days(30), not {within!r}")
            if props:
                return int(own["count"](name, within, **props))
            return self._counts(name, within).get(customer_id, 0)

        return {
            "last": last,
            "count": count,
            "recent": own["recent"],
            **lookup_functions(self.session, customer_id, self.now),
        }

    def _lasts(self, name: str) -> dict[str, dict[str, Any]]:
        if name not in self._last:
            latest = (
                select(Event.customer_id, func.max(Event.timestamp).label("at"))
                .where(
                    Event.customer_id.in_(self.ids),
                    Event.name == name,
                    Event.timestamp <= self.now,
                )
                .group_by(Event.customer_id)
                .subquery()
            )
            rows = self.session.execute(
                select(Event.customer_id, Event.properties, Event.timestamp)
                .join(
                    latest,
                    and_(Event.customer_id == latest.c.customer_id, Event.timestamp == latest.c.at),
                )
                .where(Event.name == name)
                .order_by(Event.id)
            )
            found: dict[str, dict[str, Any]] = {}
            for customer_id, properties, timestamp in rows:
                # Ties on the time: the last stored wins, as in `last()`.
                found[customer_id] = {
                    "event": name,
                    "name": name,
                    "properties": properties,
                    "at": timestamp,
                    "timestamp": timestamp,
                }
            self._last[name] = found
        return self._last[name]

    def _counts(self, name: str, within: timedelta | None) -> dict[str, int]:
        key = (name, within)
        if key not in self._count:
            query = select(Event.customer_id, func.count()).where(
                Event.customer_id.in_(self.ids), Event.name == name, Event.timestamp <= self.now
            )
            if within is not None:
                query = query.where(Event.timestamp > self.now - within)
            rows = self.session.execute(query.group_by(Event.customer_id))
            self._count[key] = {customer_id: int(n) for customer_id, n in rows}
        return self._count[key]


# -- one page --------------------------------------------------------------------------


@dataclass
class Page:
    """One page of customers, evaluated and decided."""

    cursor: str  # the last customer id of the page
    evaluated: int
    matched: int
    enter: list[str] = field(default_factory=list)  # customer ids to enter now
    entered_already: int = 0  # by this very tick, before a retry
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> customers
    errors: list[str] = field(default_factory=list)  # "customer: message"


def pages(
    db: Database,
    plan: Plan,
    at: datetime,
    *,
    tick_id: str,
    after: str | None = None,
    default_timezone: str = "UTC",
    page_size: int | None = None,
    narrow: bool = True,
) -> Iterator[Page]:
    """Every page of customers after `after`, evaluated at `at` and decided for `tick_id`.
    Each page is read in a session of its own, closed before the page is yielded.

    Where SQL can narrow the segment (journeyman/audiences/pushdown.py), a page covers a
    window of up to `WINDOW` pages of customers, of whom only those the prefilter keeps
    (at most a page of them) are read and evaluated; the others are counted as evaluated.
    `narrow=False` evaluates every profile in Python (what the prefilter is checked against).
    """
    size = page_size or PAGE_SIZE
    segment = plan.journey.entry.segment
    assert segment is not None, "a segment journey"
    journey, dialect = _journey_names(plan, at), db.engine.dialect.name
    where = prefilter(segment.tree, at=at, journey=journey, dialect=dialect) if narrow else None
    cursor = after
    while True:
        with db.session() as session:
            found = _next_customers(session, cursor, size, where)
            if found is None:
                return
            customers, end, evaluated = found
            page = _page(session, plan, at, customers, tick_id, default_timezone)
            page.cursor, page.evaluated = end, evaluated
            session.expunge_all()
        cursor = page.cursor
        yield page


def _next_customers(
    session: Session, after: str | None, size: int, where: ColumnElement[bool] | None
) -> tuple[list[dict[str, Any]], str, int] | None:
    """The profiles to evaluate after `after`, the last customer id they stand for and
    how many customers that is; None when no customer is left."""
    if where is None:
        customers = _customers(session, after, size)
        if not customers:
            return None
        return customers, customers[-1]["id"], len(customers)
    window = select(Customer.id).where(Customer.merged_into.is_(None))
    if after is not None:
        window = window.where(Customer.id > after)
    ids = window.order_by(Customer.id).limit(size * WINDOW).subquery()
    counted, last = session.execute(select(func.count(), func.max(ids.c.id))).one()
    if not counted:
        return None
    customers = _customers(session, after, size, until=last, where=where)
    if len(customers) < size:
        return customers, last, int(counted)
    end = customers[-1]["id"]
    upto = select(func.count()).where(Customer.merged_into.is_(None), Customer.id <= end)
    if after is not None:
        upto = upto.where(Customer.id > after)
    return customers, end, int(session.scalar(upto) or 0)


def _customers(
    session: Session,
    after: str | None,
    limit: int,
    *,
    until: str | None = None,
    where: ColumnElement[bool] | None = None,
) -> list[dict[str, Any]]:
    """The next page of profiles, read as columns (no ORM objects: a tick reads them all)."""
    query = select(*CUSTOMER_PROFILE_COLUMNS).where(Customer.merged_into.is_(None))
    if after is not None:
        query = query.where(Customer.id > after)
    if until is not None:
        query = query.where(Customer.id <= until)
    if where is not None:
        query = query.where(where)
    return [profile_of(*row) for row in session.execute(query.order_by(Customer.id).limit(limit))]


def _journey_names(plan: Plan, at: datetime) -> dict[str, Any]:
    return {
        "id": plan.journey.id,
        "name": plan.journey.name,
        "version": plan.version,
        "entered_at": at,  # a matching customer enters as of the tick
    }


def _page(
    session: Session,
    plan: Plan,
    at: datetime,
    profiles: list[dict[str, Any]],
    tick_id: str,
    default_timezone: str,
) -> Page:
    segment = plan.journey.entry.segment
    assert segment is not None, "a segment journey"
    ids = [profile["id"] for profile in profiles]
    history = PageHistory(session, ids, at)
    journey = _journey_names(plan, at)
    page = Page(cursor=ids[-1] if ids else "", evaluated=len(profiles), matched=0)
    matched: list[str] = []
    zones: dict[str | None, dict[str, Any]] = {}  # the customer's clock, by time zone
    for profile in profiles:
        tz_name = profile["timezone"]
        if tz_name not in zones:
            zones[tz_name] = clock_names(at, zone(tz_name, default_timezone))
        names = {
            "profile": profile,
            "now": at,
            "journey": journey,
            **history.functions(profile["id"]),
            **zones[tz_name],
        }
        try:
            if evaluate(segment.tree, names):
                matched.append(profile["id"])
        except ExpressionError as exc:
            page.errors.append(f"{profile['id']}: {exc}")
    page.matched = len(matched)
    verdicts = _entry_verdicts(session, plan, matched, tick_id, at)
    for customer_id in matched:
        verdict = verdicts[customer_id]
        if verdict is None:
            page.enter.append(customer_id)
        elif verdict == ENTERED_BY_THIS_TICK:
            page.entered_already += 1
        else:
            page.skipped[verdict] += 1
    return page


def _entry_verdicts(
    session: Session, plan: Plan, customer_ids: list[str], tick_id: str, at: datetime
) -> dict[str, str | None]:
    """For each customer: None to enter, else why not (ENTERED_BY_THIS_TICK included)."""
    verdicts: dict[str, str | None] = dict.fromkeys(customer_ids)
    if not customer_ids:
        return verdicts
    topic = plan.journey.topic
    if topic:
        opted_out = session.scalars(
            select(Consent.customer_id).where(
                Consent.customer_id.in_(customer_ids),
                Consent.scope == "topic",
                Consent.name == topic,
                Consent.subscribed.is_(False),
            )
        )
        for customer_id in opted_out:
            verdicts[customer_id] = f"unsubscribed from topic {topic}"
    # Runs started under an anonymous id merged into the customer are theirs too.
    owner = owners(session, customer_ids)
    mine = {segment_message_id(tick_id, c): c for c in customer_ids}
    latest: dict[str, JourneyRun] = {}
    runs = session.scalars(
        select(JourneyRun)
        .where(
            JourneyRun.journey_id == plan.journey.id,
            JourneyRun.customer_id.in_(list(owner)),
            JourneyRun.entry_key == "",
        )
        .order_by(JourneyRun.started_at)
    )
    for run in runs:
        customer_id = owner[run.customer_id]
        if mine.get(run.trigger_message_id or "") == customer_id:
            verdicts[customer_id] = ENTERED_BY_THIS_TICK
        latest[customer_id] = run
    rule = plan.journey.entry.reentry
    for customer_id in customer_ids:
        if verdicts[customer_id] is None:
            verdicts[customer_id] = reentry_refusal(latest.get(customer_id), rule, at)
    return verdicts


# -- tick progress ---------------------------------------------------------------------


def begin_tick(db: Database, plan: Plan, tick_id: str, kind: str, at: datetime) -> AudienceTick:
    """The tick's progress row: made on the first attempt, found again by a retry."""
    with db.session() as session:
        tick = session.get(AudienceTick, tick_id)
        if tick is None:
            tick = AudienceTick(
                tick_id=tick_id,
                journey_id=plan.journey.id,
                version=plan.version,
                kind=kind,
                at=at,
                status="running",
                evaluated=0,
                matched=0,
                entered=0,
                errors=0,
                skipped={},
                error_samples=[],
            )
            session.add(tick)
        elif tick.status == "paused":
            tick.status = "running"  # resumed: go on from the cursor
        session.flush()
        session.expunge(tick)
        return tick


def record_page(db: Database, tick_id: str, page: Page, entered: int) -> AudienceTick:
    """Add a finished page to the tick's counts and move its cursor past the page, in one
    transaction: a page is counted once, however often it is evaluated."""
    with db.session() as session:
        tick = session.get(AudienceTick, tick_id)
        assert tick is not None
        tick.cursor = page.cursor
        tick.evaluated += page.evaluated
        tick.matched += page.matched
        tick.entered += entered + page.entered_already
        tick.errors += len(page.errors)
        skipped = Counter(tick.skipped or {})
        skipped.update(page.skipped)
        tick.skipped = dict(skipped)
        room = MAX_ERROR_SAMPLES - len(tick.error_samples or [])
        if room > 0 and page.errors:
            tick.error_samples = [*(tick.error_samples or []), *page.errors[:room]]
        session.flush()
        session.expunge(tick)
        return tick


def finish_tick(db: Database, tick_id: str, status: str) -> AudienceTick:
    with db.session() as session:
        tick = session.get(AudienceTick, tick_id)
        assert tick is not None
        tick.status = status
        if status == "done":
            tick.finished_at = utcnow()
        session.flush()
        session.expunge(tick)
        return tick


def paused(db: Database, journey_id: str) -> str | None:
    """Why the journey is paused, or None."""
    with db.session() as session:
        control = session.get(JourneyControl, journey_id)
        if control is None or not control.paused:
            return None
        return f"journey paused by {control.paused_by}: {control.reason}"


def latest_ticks(db: Database, journey_id: str, limit: int = 5) -> list[AudienceTick]:
    with db.session() as session:
        rows = list(
            session.scalars(
                select(AudienceTick)
                .where(AudienceTick.journey_id == journey_id)
                .order_by(AudienceTick.at.desc(), AudienceTick.started_at.desc())
                .limit(limit)
            )
        )
        session.expunge_all()
        return rows


# -- dry run ---------------------------------------------------------------------------


@dataclass
class DryRun:
    """What a tick of the segment would do now, before anything is sent."""

    journey_id: str
    version: str
    at: datetime
    evaluated: int = 0
    matched: int = 0
    entering: int = 0
    held_out: int = 0  # of those entering: the holdout, sent nothing
    skipped: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    # send step -> channel (or "none: <reasons>") -> customers, for those sent to
    channels: dict[str, Counter[str]] = field(default_factory=dict)


def reach(session: Session, customer: Customer, step: SendStep, topic: str | None) -> str:
    """The channel a send step would use for this customer now (reachable, consenting,
    not suppressed; caps and quiet hours only delay a send), or `none (<why>)`."""
    from journeyman.messaging.channels import Channels

    decision = Channels().suitable(session, customer, _Probe(step.send.channels, topic))
    if decision.candidates:
        return decision.candidates[0].channel
    return f"none ({decision.reason or 'no channel'})"


@dataclass(frozen=True)
class _Probe:
    """The part of a send's input that channel choice reads."""

    channels: Sequence[str]
    topic: str | None


def dry_run(
    db: Database,
    plan: Plan,
    at: datetime,
    *,
    channel_check: Callable[[Session, Customer, SendStep, str | None], str] = reach,
    default_timezone: str = "UTC",
    page_size: int | None = None,
) -> DryRun:
    """Who would enter at `at`, and on which channel each send step would reach them:
    `channel_check(session, customer, step, topic)` names the channel, or why none."""
    report = DryRun(journey_id=plan.journey.id, version=plan.version, at=at)
    sends = [step for step in plan.journey.steps if isinstance(step, SendStep)]
    report.channels = {step.id: Counter() for step in sends}
    tick_id = f"dry-run/{plan.journey.id}/{at.isoformat()}"
    for page in pages(
        db, plan, at, tick_id=tick_id, default_timezone=default_timezone, page_size=page_size
    ):
        report.evaluated += page.evaluated
        report.matched += page.matched
        report.skipped.update(page.skipped)
        report.errors += len(page.errors)
        room = MAX_ERROR_SAMPLES - len(report.error_samples)
        report.error_samples.extend(page.errors[: max(0, room)])
        report.entering += len(page.enter)
        with db.session() as session:
            for customer_id in page.enter:
                if in_holdout(plan, customer_id):
                    report.held_out += 1
                    continue
                customer = session.get(Customer, customer_id)
                if customer is None:  # erased meanwhile
                    continue
                for step in sends:
                    report.channels[step.id][
                        channel_check(session, customer, step, plan.journey.topic)
                    ] += 1
    return report
