"""`journeyman simulate`: one customer through one journey, days of it in seconds.

Everything runs in this process and is thrown away afterwards (journeyman/insight/
sandbox.py): Temporal's time-skipping test server, a SQLite database in a temporary
folder, the real worker (workflow and activities) with every channel going to the
recording outbox, and the real router. The profile becomes the customer; the events file
(journeyman/insight/scenario.py) is played on the server's virtual clock: the first event
is the trigger at `0s`, each later one is stored and routed when virtual time reaches its
`at`, and `identify` lines update the profile at theirs. After the last event the runs
are left to finish, virtual time skipping ahead over every wait, within a bound so that
a journey that never ends does not keep the command busy.

What comes back is the runs' own path (`JourneyResult.path`) as a timeline relative to
the trigger, with the message each send recorded (journeyman/insight/timeline.py).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from temporalio.testing import WorkflowEnvironment

from journeyman.audiences.segments import pages, segment_trigger
from journeyman.contracts import CustomerEvent, PathEntry
from journeyman.customers import traits
from journeyman.customers.clock import next_local_time, zone
from journeyman.dsl.compiler import Compiled, compile_file
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Router, RouteResult, Skipped
from journeyman.insight.sandbox import (
    MAX_REAL,
    Sandbox,
    advance_to,
    entered_runs,
    finish,
    throwaway,
)
from journeyman.insight.scenario import ScriptedEvent, SimulationError, parse_start
from journeyman.insight.timeline import (
    Simulation,
    WebhookCall,
    attributed_entry,
    heard_entries,
    timeline,
)
from journeyman.messaging import catalogs as catalog_items
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

MAX_VIRTUAL = timedelta(days=400)
PROFILE_COLUMNS = ("email", "phone", "timezone", "locale", "push_tokens")


async def simulate(
    journey: Path,
    profile: dict[str, Any],
    events: list[ScriptedEvent],
    *,
    settings: Settings,
    templates_dir: Path | None = None,
    env: WorkflowEnvironment | None = None,
    max_virtual: timedelta = MAX_VIRTUAL,
    max_real: timedelta = MAX_REAL,
    start: str | None = None,
    catalogs: dict[str, list[catalog_items.Item]] | None = None,
) -> Simulation:
    """Play `events` for `profile` through the journey in `journey` (a file).

    `start` ("HH:MM") places the trigger at the next time the customer's clock shows
    it, so that quiet hours and time-of-day waits come out the same on every run;
    without it the trigger happens now. `catalogs` (`--catalog NAME=FILE`) are what
    `catalog()` and `viewed_products()` read. Compiling raises `JourneyError`; bad input
    raises `SimulationError`. Without `env` a test server is started for the
    simulation and stopped afterwards.
    """
    started = time.perf_counter()
    compiled = compile_file(journey, templates_dir or settings.templates_dir)
    segment = compiled.plan.journey.entry.segment is not None
    during = [e for e in events if e.at >= timedelta(0)]
    if not segment and (not during or during[0].type not in ("track", "identify")):
        raise SimulationError(
            "the first event must be the trigger: a track event, or an identify whose "
            "trait_changed events enter the journey"
        )
    start_at = parse_start(start) if start is not None else None
    bounds = _Bounds(max_virtual, started + max_real.total_seconds(), start_at)
    async with throwaway(env, "simulate") as (server, db):
        if catalogs:
            with db.session() as session:
                catalog_items.load(session, catalogs)
        result = await _run(server, db, compiled, profile, events, settings, bounds)
    result.real_seconds = time.perf_counter() - started
    return result


@dataclass(frozen=True)
class _Bounds:
    """How long a simulation may go: virtual time, and the real moment (`perf_counter`)
    after which runs still going are cut; `start_at`, the trigger's time of day."""

    max_virtual: timedelta
    deadline: float
    start_at: tuple[int, int] | None = None


async def _run(
    env: WorkflowEnvironment,
    db: Database,
    compiled: Compiled,
    profile: dict[str, Any],
    events: list[ScriptedEvent],
    settings: Settings,
    bounds: _Bounds,
) -> Simulation:
    plan = compiled.plan
    customer_id = profile["id"]
    journey = plan.journey
    sim = Simulation(journey.id, journey.name, plan.version, customer_id, outcome="not entered")
    with db.session() as session:
        customer = Customer(id=customer_id, traits={}, push_tokens=[])
        session.add(customer)
        apply_traits(customer, profile)
    calls: list[WebhookCall] = []
    sandbox = Sandbox(env, db, compiled, settings, "simulate", calls)
    loop = asyncio.get_running_loop()

    def route_trait_changes(changed_customer: str) -> None:
        # In an activity's thread: routed on the simulation's loop before the step ends,
        # so the run's next step already sees them, as the dispatcher's few seconds would.
        routing = _route_stored(db, sandbox.router, changed_customer)
        asyncio.run_coroutine_threadsafe(routing, loop).result()

    sandbox.activities.on_trait_changes = route_trait_changes
    async with sandbox.running() as router:
        if bounds.start_at is not None:
            tz = zone(profile.get("timezone"), settings.default_timezone)
            now = await env.get_current_time()
            await advance_to(env, next_local_time(now, tz, *bounds.start_at))
        sim.started_at = origin = await env.get_current_time()
        player = _Player(env, db, router, plan, sim, origin)
        # History before the trigger (or the segment check): stored, never routed.
        player.store_history([e for e in events if e.at < timedelta(0)])
        segment = plan.journey.entry.segment is not None
        if segment and not await player.enter_segment(settings.default_timezone):
            return sim
        if not await player.play([e for e in events if e.at >= timedelta(0)]):
            return sim
        runs = [(wf, run) for wf, run, _ in entered_runs(db)]
        results, cut = await finish(
            env,
            runs,
            origin,
            bounds.max_virtual,
            bounds.deadline,
            between=lambda: _route_stored(db, router, customer_id),
        )
    for (workflow_id, _), (_, path) in zip(runs, results, strict=True):
        sim.entries.extend(timeline(db, workflow_id, path, origin, calls))
    sim.entries.extend(heard_entries(plan, sim.entries, player.delivered))
    await _conclude(env, sim, [wf for wf, _ in runs], results, cut, origin)
    return sim


async def _conclude(
    env: WorkflowEnvironment,
    sim: Simulation,
    runs: list[str],
    results: list[tuple[str | None, list[PathEntry]]],
    cut: str | None,
    origin: datetime,
) -> None:
    """The timeline in time order, the runs' outcomes, and the virtual time it took."""
    sim.entries.sort(key=lambda e: e.offset)
    sim.messages = sum(1 for e in sim.entries if e.action == "sent")
    sim.outcomes = {wf: outcome or "cut" for wf, (outcome, _) in zip(runs, results, strict=True)}
    sim.outcome = "cut" if cut else results[0][0] or "completed"
    if cut:
        sim.note = cut
    last = max((e.offset for e in sim.entries), default=timedelta(0))
    virtual = max(last, await env.get_current_time() - origin) if cut else last
    sim.virtual = timedelta(seconds=round(virtual.total_seconds()))


@dataclass
class _Player:
    """Plays the events file on the virtual clock for the one customer of a simulation."""

    env: WorkflowEnvironment
    db: Database
    router: Router
    plan: Plan
    sim: Simulation
    origin: datetime
    # Track events handed to running runs: (offset, name, workflow ids).
    delivered: list[tuple[timedelta, str, list[str]]] = field(default_factory=list)

    def store_history(self, history: list[ScriptedEvent]) -> None:
        for scripted in history:
            at = self.origin + scripted.at
            if scripted.type == "identify":
                _identify(self.db, self.sim.customer_id, scripted, at, history=True)
            else:
                _store(self.db, self.sim.customer_id, scripted, at)

    async def enter_segment(self, default_timezone: str) -> bool:
        """Check the segment for the customer at the origin as a tick would, and enter
        them if it matches; otherwise say why not in `sim.not_entered`."""
        plan, at, customer_id = self.plan, self.origin, self.sim.customer_id
        tick_id = f"simulate/{plan.journey.id}"
        page = next(
            pages(self.db, plan, at, tick_id=tick_id, default_timezone=default_timezone), None
        )
        assert plan.journey.entry.segment is not None
        if page is None or page.errors:
            problem = page.errors[0] if page is not None else "no such customer"
            why = f"the segment could not be checked: {problem}"
            self.sim.not_entered = [Skipped(plan.journey.id, why)]
            return False
        if not page.enter:
            reasons = list(page.skipped) or [
                f"not in the segment ({plan.journey.entry.segment.text} is false)"
            ]
            self.sim.not_entered = [Skipped(plan.journey.id, reason) for reason in reasons]
            return False
        trigger = segment_trigger(tick_id, "schedule", customer_id, at)
        await self.router.enter(plan, customer_id, "", trigger, at)
        return True

    async def play(self, events: list[ScriptedEvent]) -> bool:
        """Each event at its time, the trigger first; False when the trigger entered
        nothing (`sim.not_entered` says why)."""
        db, customer_id, journey = self.db, self.sim.customer_id, self.plan.journey
        for scripted in events:
            # What update_profile steps changed by now is routed before time moves.
            await _route_stored(db, self.router, customer_id)
            await advance_to(self.env, self.origin + scripted.at)
            now = await self.env.get_current_time()
            if scripted.type == "identify":
                _identify(db, customer_id, scripted, now)
                changed = await _route_stored(db, self.router, customer_id)
                if scripted is events[0] and not changed.entered:
                    # An identify as the trigger: its trait_changed events enter.
                    self.sim.not_entered = changed.skipped or [
                        Skipped(
                            journey.id,
                            "this identify changes no trait that enters it "
                            f"(it enters on {journey.entry.event})",
                        )
                    ]
                    return False
                continue
            routed = await self.router.route(customer_id, _store(db, customer_id, scripted, now))
            if scripted is events[0] and not routed.entered and journey.entry.segment is None:
                self.sim.not_entered = routed.skipped or [
                    Skipped(
                        journey.id,
                        f"{scripted.name} does not enter it (it enters on {journey.entry.event})",
                    )
                ]
                return False
            self._heard(scripted, routed)
        return True

    def _heard(self, scripted: ScriptedEvent, routed: RouteResult) -> None:
        """Who the track event reached: runs it was delivered to, a conversion after a
        run ended (`goal.within`), or no one."""
        if routed.delivered and scripted.name:
            self.delivered.append((scripted.at, scripted.name, list(routed.delivered)))
        if self.plan.journey.entry.segment is None:
            for workflow_id in routed.attributed:
                self.sim.entries.append(
                    attributed_entry(self.plan, workflow_id, scripted.at, scripted.name)
                )
            if routed.attributed or routed.entered:
                return
        if not routed.delivered and scripted.name:
            self.sim.unheard.append((scripted.at, scripted.name))


def apply_traits(customer: Customer, traits: dict[str, Any]) -> None:
    """Profile columns go to their columns, anything else into the traits."""
    for key in PROFILE_COLUMNS:
        if key in traits:
            value = traits[key]
            setattr(customer, key, list(value or []) if key == "push_tokens" else value)
    others = {k: v for k, v in traits.items() if k not in PROFILE_COLUMNS and k != "id"}
    customer.traits = {**(customer.traits or {}), **others}


def _identify(
    db: Database, customer_id: str, scripted: ScriptedEvent, now: datetime, history: bool = False
) -> None:
    """The profile change, stored with its `trait_changed` events (left for
    `_route_stored` to route, as the dispatcher would; with `history`, before the
    trigger, marked routed: history is never routed)."""
    with db.session() as session:
        customer = session.get(Customer, customer_id)
        assert customer is not None
        before = traits.snapshot(customer)
        apply_traits(customer, scripted.traits)
        changed = traits.changes(before, traits.snapshot(customer))
        traits.store(session, customer_id, scripted.message_id, changed, now, now)
        if history:
            session.flush()
            session.execute(
                update(Event)
                .where(Event.customer_id == customer_id, Event.dispatched_at.is_(None))
                .values(dispatched_at=now)
            )
        session.add(_event_row(customer_id, scripted, now))


def _store(db: Database, customer_id: str, scripted: ScriptedEvent, now: datetime) -> CustomerEvent:
    """Record the event in the history (`last()`, `count()`) and return it for routing."""
    with db.session() as session:
        session.add(_event_row(customer_id, scripted, now))
    assert scripted.name is not None
    return CustomerEvent(
        message_id=scripted.message_id,
        name=scripted.name,
        properties=scripted.properties,
        timestamp=now,
    )


def _event_row(customer_id: str, scripted: ScriptedEvent, now: datetime) -> Event:
    """The line as the events table keeps it, routed already (`dispatched_at`)."""
    identify = scripted.type == "identify"
    return Event(
        message_id=scripted.message_id,
        type=scripted.type,
        customer_id=customer_id,
        name=scripted.name,
        properties=scripted.traits if identify else scripted.properties,
        timestamp=now,
        dispatched_at=now,
    )


async def _route_stored(db: Database, router: Router, customer_id: str) -> RouteResult:
    """Route the customer's stored events not routed yet, oldest first, as the
    dispatcher does: the `trait_changed` events of identify lines and of
    `update_profile` steps. Returns what they did, together."""
    with db.session() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.customer_id == customer_id, Event.dispatched_at.is_(None))
            .order_by(Event.id)
        ).all()
        pending = [
            (
                row.id,
                CustomerEvent(
                    message_id=row.message_id,
                    name=row.name or row.type,
                    properties=dict(row.properties or {}),
                    timestamp=row.timestamp,
                ),
            )
            for row in rows
        ]
    result = RouteResult()
    for event_id, event in pending:
        result.add(await router.route(customer_id, event))
        with db.session() as session:
            row = session.get(Event, event_id)
            if row is not None:
                row.dispatched_at = event.timestamp
    return result
