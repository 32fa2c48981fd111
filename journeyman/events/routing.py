"""From a customer event to journey runs: who enters, and which waiting runs hear it.

The journeys in force are a `Catalog` (journeyman/events/catalog.py). `Router.route`
does, for one event:

1. entries: each journey whose `entry.event` is the event's name and whose `when`
   holds enters the customer, once per customer and key, under the `reentry` rule,
   with its trigger in the start input (journeyman/events/starting.py; a run already
   going under that id hears it as a signal);
2. delivery: each run of this customer still running whose version listens to this
   event name (goal, exit, wait_for) gets it as a signal. The lookup is one indexed
   query on the customer's running runs, never a scan of all runs.

Runs de-duplicate by message id, so routing the same event twice has one effect.

While an operator has paused a journey (`journey_controls`), an entry that would happen
is held instead (`held_entries`, by the event's message id); `release_held` enters them
on resume, each if it still applies then (entry condition, key, reentry rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from journeyman.contracts import CustomerEvent, ExprContext
from journeyman.customers import identity
from journeyman.customers.profiles import expression_names
from journeyman.dsl.chance import in_holdout
from journeyman.dsl.durations import format_duration
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.model import Reentry
from journeyman.dsl.plan import Plan
from journeyman.events import ahead as running_ahead
from journeyman.events import claims
from journeyman.events.catalog import Catalog as Catalog  # imported from here by many
from journeyman.events.starting import start_run
from journeyman.insight.attribution import attribute, windowed_goal
from journeyman.names import (
    DELIVERY_EVENTS,
    EVENT_SIGNAL,
    WAKE_SIGNAL,
    workflow_id,
)
from journeyman.platform import metrics
from journeyman.privacy.pseudonyms import erased
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Customer,
    EntryError,
    EntryOff,
    Event,
    HeldEntry,
    JourneyControl,
    JourneyRun,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EntryFailure:
    """An entry not made because its expression failed: recorded (`EntryError`, with
    `error`, the expression's own message) when the event is routed, not when an entry
    is only considered."""

    error: str

    def __str__(self) -> str:
        return f"entry expression failed: {self.error}"


@dataclass(frozen=True)
class Enters:
    """The customer enters, under this entry key ("" without `entry.key`)."""

    key: str


# Why not: the reason in words (`reentry_refusal`, a condition false, held), or a failure.
Refusal = str | EntryFailure


@dataclass(frozen=True)
class Skipped:
    """A journey the event did not enter, and why; shown as "journey: why not"."""

    journey: str
    reason: str

    def __str__(self) -> str:
        return f"{self.journey}: {self.reason}"


@dataclass
class RouteResult:
    entered: list[str] = field(default_factory=list)  # workflow ids started
    delivered: list[str] = field(default_factory=list)  # workflow ids signalled
    skipped: list[Skipped] = field(default_factory=list)  # journeys not entered, and why
    # workflow ids of ended runs this event converted within their goal.within
    attributed: list[str] = field(default_factory=list)

    def reason(self, journey_id: str) -> str | None:
        """Why the event did not enter `journey_id`, if it says."""
        return next((s.reason for s in self.skipped if s.journey == journey_id), None)

    def add(self, other: RouteResult) -> None:
        """`other`'s runs and skips after these (events routed one after another)."""
        self.entered.extend(other.entered)
        self.delivered.extend(other.delivered)
        self.skipped.extend(other.skipped)
        self.attributed.extend(other.attributed)


# `Router._running`'s statement, built once: it runs for every event routed.
_RUNNING = select(JourneyRun.workflow_id, JourneyRun.journey_id, JourneyRun.version).where(
    JourneyRun.customer_id.in_(identity.identities_query("customer_id")),
    JourneyRun.status == "running",
)


class Router:
    def __init__(
        self,
        client: Client,
        db: Database,
        catalog: Catalog,
        task_queue: str,
        *,
        default_timezone: str = "UTC",
        erasure_key: bytes | None = None,
    ) -> None:
        self.client = client
        self.db = db
        # The installation's pseudonym key: with it, an entry recorded while its customer
        # is being erased is undone (journeyman/privacy/pseudonyms.py).
        self.erasure_key = erasure_key
        self.catalog = catalog
        self.task_queue = task_queue
        self.default_timezone = default_timezone

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        result = RouteResult()
        now = event.timestamp or datetime.now(UTC)
        touched: set[str] = set()
        for plan in self.catalog.entered_by(event.name):
            # Database work runs in a thread: the event loop also serves the API.
            decision = await asyncio.to_thread(self._entry_decision, plan, customer_id, event, now)
            if not isinstance(decision, Enters):
                result.skipped.append(Skipped(plan.journey.id, str(decision)))
                continue
            wf_id = await self._enter(plan, customer_id, decision.key, event, now)
            touched.add(wf_id)
            result.entered.append(wf_id)
        for plan in self.catalog.switched_off(event.name):
            if await asyncio.to_thread(self._pass_by, plan, customer_id, event, now):
                result.skipped.append(Skipped(plan.journey.id, "journey off"))
        # A delivery event belongs to the run that sent the message.
        sender = event.properties.get("workflow_id") if event.name in DELIVERY_EVENTS else None
        # As the dispatcher looked them up for the event's page, else read now.
        runs: Sequence[_Running | running_ahead.RunningRun] | None = running_ahead.AHEAD.get()
        if runs is None:
            runs = await asyncio.to_thread(self._running, customer_id)
        for run in runs:
            if run.workflow_id in touched:
                continue
            if sender is not None and run.workflow_id != sender:
                continue
            run_plan = self.catalog.plan(self.db, run.journey_id, run.version)
            if run_plan is None or event.name not in run_plan.listens:
                continue
            handle = self.client.get_workflow_handle(run.workflow_id, run_id=None)
            try:
                await handle.signal(EVENT_SIGNAL, event)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                log.info(
                    "run %s already closed; event %s not delivered",
                    run.workflow_id,
                    event.message_id,
                )
                continue
            result.delivered.append(run.workflow_id)
        if any(windowed_goal(p, event.name) for p in self.catalog.plans):
            result.attributed = await asyncio.to_thread(self._attribute, customer_id, event, now)
        return result

    def _attribute(self, customer_id: str, event: CustomerEvent, now: datetime) -> list[str]:
        """`goal.within`: ended runs this goal event converts after all."""
        with self.db.session() as session:
            return attribute(
                session,
                self.catalog.plans,
                lambda journey_id, version: self.catalog.plan(self.db, journey_id, version),
                identity.identities(session, customer_id),
                event,
                now,
                self.default_timezone,
            )

    def _running(self, customer_id: str) -> list[_Running]:
        # Run for every event: with the identities as a subquery it is one round trip.
        # Only the runs' customer index fits it (no plan scans the runs for this).
        with self.db.session() as session:
            rows = session.execute(_RUNNING, {"customer_id": customer_id})
            return [_Running(*row) for row in rows]

    def _entry_decision(
        self, plan: Plan, customer_id: str, event: CustomerEvent, now: datetime
    ) -> Enters | Refusal:
        """Whether the customer enters, else the reason why not (an entry into a paused
        journey is held, to be entered on resume)."""
        with self.db.session() as session:
            decision = self._would_enter_in(session, plan, customer_id, event, now)
            if isinstance(decision, EntryFailure):
                _record_entry_error(session, plan, customer_id, event, now, decision)
            if not isinstance(decision, Enters):
                return decision
            # Read here too: a journey not paused (nearly always) costs no session more.
            control = session.get(JourneyControl, plan.journey.id)
            if control is None or not control.paused:
                return decision
        return self._hold(plan, customer_id, event, now, decision)

    def _pass_by(self, plan: Plan, customer_id: str, event: CustomerEvent, now: datetime) -> bool:
        """Whether the customer would have entered the switched-off journey; that entry
        passed by is recorded (once per event) for stats' "journey off"."""
        with self.db.session() as session:
            decision = self._would_enter_in(session, plan, customer_id, event, now)
            if not isinstance(decision, Enters):
                return False
            passed = EntryOff(
                journey_id=plan.journey.id,
                version=plan.version,
                message_id=event.message_id,
                at=now,
            )
            _add_once(session, passed)
        return True

    def _hold(
        self,
        plan: Plan,
        customer_id: str,
        event: CustomerEvent,
        now: datetime,
        decision: Enters,
    ) -> Enters | Refusal:
        """Hold the entry while the journey is paused (read again with the write), else
        let it through."""
        with self.db.session() as session:
            control = session.get(JourneyControl, plan.journey.id)
            if control is None or not control.paused:
                return decision
            held = HeldEntry(
                journey_id=plan.journey.id,
                message_id=event.message_id,
                customer_id=customer_id,
                at=now,
            )
            _add_once(session, held)
        return f"journey paused by {control.paused_by}: {control.reason}; entry held"

    def _would_enter(
        self, plan: Plan, customer_id: str, event: CustomerEvent, now: datetime
    ) -> Enters | Refusal:
        """Whether the customer enters, else the reason why not."""
        with self.db.session() as session:
            return self._would_enter_in(session, plan, customer_id, event, now)

    def _would_enter_in(
        self, session: Session, plan: Plan, customer_id: str, event: CustomerEvent, now: datetime
    ) -> Enters | Refusal:
        entry = plan.journey.entry
        if entry.when is not None or entry.key is not None:
            context = ExprContext(
                event=event,
                trigger=event,
                # The run would enter now: `journey.entered_at` is this moment.
                journey={
                    "id": plan.journey.id,
                    "name": plan.journey.name,
                    "version": plan.version,
                    "entered_at": now,
                },
                now=now,
            )
            # Only expressions read these: an entry with neither skips the profile read.
            names: dict[str, Any] = expression_names(
                session, customer_id, context, self.default_timezone
            )
            try:
                if entry.when is not None and not evaluate(entry.when.tree, names):
                    return f"entry condition false ({entry.when.text})"
                key = str(evaluate(entry.key.tree, names)) if entry.key is not None else ""
            except ExpressionError as exc:
                log.warning("journey %s entry for %s: %s", plan.journey.id, customer_id, exc)
                return EntryFailure(str(exc))
        else:
            key = ""
        identities = identity.identities(session, customer_id)
        entered_on_this_event = session.scalar(
            select(JourneyRun.run_id).where(
                JourneyRun.trigger_message_id == event.message_id,
                JourneyRun.journey_id == plan.journey.id,
                JourneyRun.customer_id.in_(identities),
            )
        )
        if entered_on_this_event is not None:
            return "already entered on this event"
        previous = session.scalars(
            select(JourneyRun)
            .where(
                JourneyRun.journey_id == plan.journey.id,
                JourneyRun.customer_id.in_(identities),
                JourneyRun.entry_key == key,
            )
            .order_by(JourneyRun.started_at.desc())
        ).first()
        refusal = reentry_refusal(previous, entry.reentry, now)
        return refusal if refusal is not None else Enters(key)

    async def release_held(self, journey_id: str) -> RouteResult:
        """Enter the entries held while `journey_id` was paused, oldest first, each
        under the entry rules as they apply now; stops if the journey is paused again."""
        result = RouteResult()
        plan = self.catalog.compiled.get(journey_id)
        for held_id, customer_id, event in await asyncio.to_thread(self._held, journey_id):
            if await asyncio.to_thread(self._paused, journey_id):
                break
            if plan is None:
                result.skipped.append(Skipped(journey_id, "not in the journeys in force"))
            elif event is None:
                result.skipped.append(Skipped(journey_id, "held event no longer stored"))
            else:
                now = event.timestamp or datetime.now(UTC)
                decision = await asyncio.to_thread(
                    self._would_enter, plan.plan, customer_id, event, now
                )
                if not isinstance(decision, Enters):
                    result.skipped.append(Skipped(journey_id, str(decision)))
                else:
                    wf_id = await self._enter(plan.plan, customer_id, decision.key, event, now)
                    result.entered.append(wf_id)
            await asyncio.to_thread(self._forget_held, held_id)
        return result

    async def wake(self, journey_id: str) -> list[str]:
        """Signal `wake` to every running run of the journey: a send it holds for the
        pause is tried again now. Returns the workflow ids woken."""
        woken = []
        for wf_id in await asyncio.to_thread(self._running_in, journey_id):
            try:
                await self.client.get_workflow_handle(wf_id).signal(WAKE_SIGNAL)
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
                continue
            woken.append(wf_id)
        return woken

    def _held(self, journey_id: str) -> list[tuple[int, str, CustomerEvent | None]]:
        with self.db.session() as session:
            rows = session.execute(
                select(HeldEntry.id, HeldEntry.customer_id, Event)
                .outerjoin(Event, Event.message_id == HeldEntry.message_id)
                .where(HeldEntry.journey_id == journey_id)
                .order_by(HeldEntry.at, HeldEntry.id)
            ).all()
            return [
                (held_id, customer_id, _customer_event(event) if event is not None else None)
                for held_id, customer_id, event in rows
            ]

    def _forget_held(self, held_id: int) -> None:
        with self.db.session() as session:
            row = session.get(HeldEntry, held_id)
            if row is not None:
                session.delete(row)

    def _paused(self, journey_id: str) -> bool:
        with self.db.session() as session:
            control = session.get(JourneyControl, journey_id)
            return control is not None and control.paused

    def _running_in(self, journey_id: str) -> list[str]:
        with self.db.session() as session:
            return list(
                session.scalars(
                    select(JourneyRun.workflow_id)
                    .where(JourneyRun.journey_id == journey_id, JourneyRun.status == "running")
                    .distinct()
                )
            )

    async def enter(
        self, plan: Plan, customer_id: str, key: str, event: CustomerEvent, now: datetime
    ) -> str:
        """Start the customer's run (keyed: `journey/customer[/key]`) with `event` as its
        trigger, or reach the run already going under that id, and record the entry.
        The caller has decided that the customer enters (`_would_enter`, or a segment)."""
        return await self._enter(plan, customer_id, key, event, now)

    async def _enter(
        self, plan: Plan, customer_id: str, key: str, event: CustomerEvent, now: datetime
    ) -> str:
        wf_id = workflow_id(plan.journey.id, customer_id, key)
        first = await asyncio.to_thread(
            claims.claim_entry, self.db, plan.journey.id, event.message_id
        )
        if not first:
            # This event entered before, and the record of it is missing (a crash after
            # the start): never start again, only record the run it started, if any.
            started = await claims.started_run(self.client, wf_id, event.message_id)
            if started is not None:
                await asyncio.to_thread(
                    self._record_run, plan, started, wf_id, customer_id, key, event, now
                )
                return wf_id
        handle = await start_run(self.client, self.task_queue, plan, customer_id, key, event, wf_id)
        run_id = handle.result_run_id or handle.run_id or ""
        recorded = await asyncio.to_thread(
            self._record_run, plan, run_id, wf_id, customer_id, key, event, now
        )
        if not recorded:
            # The customer was erased while this event was being routed: the run goes too.
            with contextlib.suppress(RPCError):
                await handle.terminate("customer erased")
        return wf_id

    def _record_run(
        self,
        plan: Plan,
        run_id: str,
        wf_id: str,
        customer_id: str,
        key: str,
        event: CustomerEvent,
        now: datetime,
    ) -> bool:
        """False when the customer is being (or was) erased: nothing is recorded."""
        # A run that ends at once can close (and so write its row) between our read and
        # our insert: on that conflict, read again and fill in the entry's fields.
        for attempt in (1, 2):
            try:
                with self.db.session() as session:
                    if self.erasure_key is not None:
                        # Waits for an erasure holding the customer (erasure._find).
                        session.execute(
                            select(Customer.id).where(Customer.id == customer_id).with_for_update()
                        )
                        if erased(session, self.erasure_key, customer_id):
                            log.info("entry of an erased customer into %s: undone", wf_id)
                            return False
                    run = session.get(JourneyRun, run_id)
                    if run is None:
                        session.add(
                            JourneyRun(
                                run_id=run_id,
                                workflow_id=wf_id,
                                journey_id=plan.journey.id,
                                version=plan.version,
                                customer_id=customer_id,
                                entry_key=key,
                                trigger_message_id=event.message_id,
                                holdout=in_holdout(plan, customer_id),
                                status="running",
                                started_at=now,
                            )
                        )
                    elif run.trigger_message_id is None and run.outcome not in (None, "erased"):
                        # The run ended before this, and its close wrote the row: the
                        # entry's own fields are ours to fill in; its outcome stays.
                        run.entry_key = key
                        run.trigger_message_id = event.message_id
                        run.holdout = in_holdout(plan, customer_id)
                        run.started_at = now
                    else:
                        return True
            except IntegrityError:
                if attempt == 2:
                    raise
                continue
            metrics.runs_started.labels(journey=plan.journey.id).inc()  # once committed
            return True
        return True


def reentry_refusal(previous: JourneyRun | None, rule: Reentry, now: datetime) -> str | None:
    """Why a customer whose latest run (for this key) is `previous` may not enter again
    now; None when they may."""
    if previous is None:
        return None
    if previous.status == "running":
        return "already in the journey"
    if rule.mode == "never":
        return "already entered once (reentry: never)"
    if rule.mode == "after" and rule.after is not None and now < previous.started_at + rule.after:
        after = format_duration(rule.after)
        return f"entered less than {after} ago (reentry: after {after})"
    return None


def _customer_event(event: Event) -> CustomerEvent:
    """A stored event as journeys see it (as the dispatcher hands it over)."""
    return CustomerEvent(
        message_id=event.message_id,
        name=event.name or event.type,
        properties=dict(event.properties or {}),
        timestamp=event.timestamp,
    )


def _record_entry_error(
    session: Session,
    plan: Plan,
    customer_id: str,
    event: CustomerEvent,
    now: datetime,
    failure: EntryFailure,
) -> None:
    """Once per journey and event."""
    error = EntryError(
        journey_id=plan.journey.id,
        version=plan.version,
        message_id=event.message_id,
        customer_id=customer_id,
        error=failure.error,
        at=now,
    )
    if _add_once(session, error):
        metrics.entry_errors.labels(journey=plan.journey.id).inc()


def _add_once(session: Session, row: EntryError | EntryOff | HeldEntry) -> bool:
    """Add `row` unless one of its kind is recorded for its journey and event: an event
    routed again (the dispatcher retrying after a crash) counts once. Whether it was added."""
    kind = type(row)
    known = session.scalar(
        select(kind.id).where(kind.journey_id == row.journey_id, kind.message_id == row.message_id)
    )
    if known is None:
        session.add(row)
    return known is None


@dataclass(frozen=True)
class _Running:
    """What delivery reads of a running run."""

    workflow_id: str
    journey_id: str
    version: str
