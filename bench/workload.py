"""The benchmark's journeys, customers and runs, and what histories tell about them.

Contract:
- `write_project` writes the benchmark journeys (YAML, compiled by the product's own
  compiler) and their templates into a folder; `prepare_database` migrates a fresh
  database, registers the journey versions and adds customers with an email address,
  so every send goes to the outbox.
- `start_journeys` starts interpreter runs exactly as the router enters a customer
  (the trigger in the start input, the four search attributes, the static summary),
  and records each run in `journey_runs` as the router does, so closing the run (its
  last step-log record, `finish_run` before patch `lean-steps`) updates a real row.
  `start_handwritten` starts the baseline with the trigger as its input.
- `history_stats` reads histories: events by type, payload bytes, workflow task
  latencies (scheduled → completed, and started → completed).
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import insert
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from bench.handwritten import HandWrittenInput
from journeyman.contracts import CustomerEvent
from journeyman.dsl import Plan, compile_file
from journeyman.events.routing import Catalog
from journeyman.events.starting import start_run, start_search_attributes
from journeyman.names import (
    workflow_id,
)
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, JourneyRun

# send → wait 1s → wait_for (timeout 1s) → branch → send. The branch reads only the
# trigger, so the interpreter evaluates it in the workflow (no `evaluate` activity);
# gold customers stop there, the others get the follow-up.
OVERHEAD = """
id: bench_overhead
name: Interpreter overhead
entry: {event: bench_started}
steps:
  - id: hello
    send: {template: bench_hello, channels: [email]}
  - id: pause
    wait: 1s
  - id: listen
    wait_for: {event: bench_replied, timeout: 1s}
  - id: check
    branch:
      - when: "trigger.properties.tier == 'gold'"
        goto: stop
      - goto: follow_up
  - id: stop
    end: true
  - id: follow_up
    send: {template: bench_follow_up, channels: [email]}
"""

# A run that waits an hour: the scale section keeps many of these waiting at once.
WAITING = """
id: bench_waiting
name: Waiting an hour
entry: {event: bench_waiting}
steps:
  - id: hold
    wait: 1h
  - id: remind
    send: {template: bench_hello, channels: [email]}
"""

# No wait: the event-to-message section times the way from the API to the outbox.
SIGNUP = """
id: bench_signup
name: Signup to message
entry: {event: bench_signed_up}
steps:
  - id: welcome
    send: {template: bench_hello, channels: [email]}
"""

TEMPLATES = {
    "bench_hello": "{% block subject %}Hello {{ profile.first_name }}{% endblock %}"
    "<p>Hi {{ profile.first_name }}, thanks for joining.</p>",
    "bench_follow_up": "{% block subject %}Still there, {{ profile.first_name }}?{% endblock %}"
    "<p>We kept your place.</p>",
}
JOURNEYS = {"bench_overhead": OVERHEAD, "bench_waiting": WAITING, "bench_signup": SIGNUP}


@dataclass(frozen=True)
class Project:
    journeys_dir: Path
    templates_dir: Path

    def plan(self, journey_id: str) -> Plan:
        return compile_file(self.journeys_dir / f"{journey_id}.yaml", self.templates_dir).plan


def write_project(root: Path) -> Project:
    journeys, templates = root / "journeys", root / "templates"
    journeys.mkdir(parents=True, exist_ok=True)
    for journey_id, text in JOURNEYS.items():
        (journeys / f"{journey_id}.yaml").write_text(textwrap.dedent(text).lstrip())
    for name, source in TEMPLATES.items():
        (templates / name).mkdir(parents=True, exist_ok=True)
        (templates / name / "email.html").write_text(source)
    return Project(journeys, templates)


def prepare_database(url: str, project: Project, customers: Sequence[str]) -> Database:
    """A migrated database with the journeys registered and `customers` (with emails)."""
    db = Database(url)
    migrate.upgrade(db)
    Catalog.from_dirs(project.journeys_dir, project.templates_dir).register(db)
    add_customers(db, customers)
    return db


def add_customers(db: Database, customers: Sequence[str]) -> None:
    rows = [
        {
            "id": c,
            "email": f"{c}@example.com",
            "traits": {"first_name": "Ana"},
            "push_tokens": [],
        }
        for c in customers
    ]
    for chunk in range(0, len(rows), 5000):
        with db.session() as session:
            session.execute(insert(Customer), rows[chunk : chunk + 5000])


def customer_ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def trigger(name: str, customer: str) -> CustomerEvent:
    return CustomerEvent(
        message_id=f"m-{name}-{customer}",
        name=name,
        properties={"tier": "silver", "cart_id": f"cart-{customer}", "total": 42.5},
        timestamp=datetime.now(UTC),
    )


# -- starting runs ----------------------------------------------------------------------


@dataclass
class Started:
    """What a batch of starts did: when it began and ended, and the workflow ids."""

    began: float  # time.time()
    ended: float
    workflow_ids: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.workflow_ids) / max(self.ended - self.began, 1e-9)


async def start_many(
    starts: Sequence[Callable[[], Awaitable[str]]], concurrency: int = 64
) -> Started:
    """Run the start calls, `concurrency` at a time, as a client under load would."""
    began = time.time()
    queue = list(reversed(starts))
    ids: list[str] = []

    async def lane() -> None:
        while queue:
            ids.append(await queue.pop()())

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return Started(began, time.time(), ids)


class RunRecorder:
    """Writes `journey_runs` rows as the router does after each start, in batches, so
    the benchmark client does not slow the starts down with one transaction each."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None

    def add(self, plan: Plan, run_id: str, wf_id: str, customer: str, event: CustomerEvent) -> None:
        self.rows.append(
            {
                "run_id": run_id,
                "workflow_id": wf_id,
                "journey_id": plan.journey.id,
                "version": plan.version,
                "customer_id": customer,
                "entry_key": "",
                "trigger_message_id": event.message_id,
                "holdout": False,
                "status": "running",
                "started_at": event.timestamp or datetime.now(UTC),
            }
        )

    async def __aenter__(self) -> RunRecorder:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self._flush)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        rows, self.rows = self.rows, []
        if rows:
            with self.db.session() as session:
                session.execute(insert(JourneyRun), rows)


def journey_starts(
    client: Client,
    plan: Plan,
    customers: Sequence[str],
    task_queue: str,
    recorder: RunRecorder,
    event_name: str,
) -> list[Callable[[], Awaitable[str]]]:
    """Start calls for interpreter runs, one per customer, as `Router._enter` makes them
    (`start_run`, the same call)."""

    def one(customer: str) -> Callable[[], Awaitable[str]]:
        async def start() -> str:
            event = trigger(event_name, customer)
            wf_id = workflow_id(plan.journey.id, customer)
            # The router's own start (journeyman/events/starting.py): its input (trigger,
            # era), search attributes, memo and summary.
            handle = await start_run(client, task_queue, plan, customer, "", event, wf_id)
            recorder.add(plan, handle.result_run_id or handle.run_id or "", wf_id, customer, event)
            return wf_id

        return start

    return [one(c) for c in customers]


def handwritten_starts(
    client: Client,
    workflow: str,
    plan: Plan,
    customers: Sequence[str],
    task_queue: str,
    wait: timedelta,
) -> list[Callable[[], Awaitable[str]]]:
    """Start calls for the baseline: the trigger as input, the same search attributes."""

    def one(customer: str) -> Callable[[], Awaitable[str]]:
        async def start() -> str:
            wf_id = f"hand/{plan.journey.id}/{customer}"
            await client.start_workflow(
                workflow,
                HandWrittenInput(
                    journey_id=plan.journey.id,
                    version=plan.version,
                    customer_id=customer,
                    trigger=trigger("bench_started", customer),
                    wait=wait,
                ),
                id=wf_id,
                task_queue=task_queue,
                search_attributes=start_search_attributes(plan, customer),
            )
            return wf_id

        return start

    return [one(c) for c in customers]


async def wait_closed(
    client: Client, task_queue: str, expected: int, within: float, check: Callable[[], None]
) -> None:
    """Until visibility counts `expected` closed runs on the task queue."""
    deadline = time.monotonic() + within
    query = f'TaskQueue = "{task_queue}" AND ExecutionStatus != "Running"'
    while (await client.count_workflows(query)).count < expected:
        check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} runs closed within {within:g} s")
        await asyncio.sleep(0.5)


async def makespan(client: Client, task_queue: str) -> tuple[int, float, int]:
    """(closed runs, seconds from the first start to the last close, failed runs)."""
    first, last, closed, failed = float("inf"), 0.0, 0, 0
    async for execution in client.list_workflows(f'TaskQueue = "{task_queue}"', page_size=1000):
        first = min(first, execution.start_time.timestamp())
        if execution.close_time is not None:
            closed += 1
            last = max(last, execution.close_time.timestamp())
        if execution.status is not None and execution.status.name != "COMPLETED":
            failed += 1
    return closed, last - first, failed


# -- histories ------------------------------------------------------------------------


@dataclass
class HistoryStats:
    """What a sample of histories holds, per run."""

    runs: int = 0
    events: Counter[str] = field(default_factory=Counter)  # event type -> total over runs
    payload_bytes: int = 0
    history_bytes: int = 0
    markers: Counter[str] = field(default_factory=Counter)  # local activity type -> count
    activities: Counter[str] = field(default_factory=Counter)  # activity type -> count
    upserts: Counter[str] = field(default_factory=Counter)  # "Name=value" upserted -> count
    wft_latency: list[float] = field(default_factory=list)  # scheduled -> completed, s
    wft_run_time: list[float] = field(default_factory=list)  # started -> completed, s

    def per_run(self, count: float) -> float:
        return count / self.runs if self.runs else 0.0

    @property
    def events_per_run(self) -> float:
        return self.per_run(sum(self.events.values()))


async def history_stats(
    client: Client, workflow_ids: Sequence[str], concurrency: int = 8
) -> HistoryStats:
    stats = HistoryStats()
    queue = list(workflow_ids)

    async def lane() -> None:
        while queue:
            history = await client.get_workflow_handle(queue.pop()).fetch_history()
            _add(stats, [e for e in history.events])

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return stats


def _add(stats: HistoryStats, events: Sequence[Any]) -> None:
    stats.runs += 1
    scheduled: dict[int, float] = {}
    started: dict[int, float] = {}
    for event in events:
        name = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
        stats.events[name] += 1
        stats.history_bytes += event.ByteSize()
        stats.payload_bytes += _payload_bytes(event)
        at = event.event_time.ToDatetime().timestamp()
        if name == "WORKFLOW_TASK_SCHEDULED":
            scheduled[event.event_id] = at
        elif name == "WORKFLOW_TASK_STARTED":
            attrs = event.workflow_task_started_event_attributes
            started[attrs.scheduled_event_id] = at
        elif name == "WORKFLOW_TASK_COMPLETED":
            attrs = event.workflow_task_completed_event_attributes
            if attrs.scheduled_event_id in scheduled:
                stats.wft_latency.append(at - scheduled[attrs.scheduled_event_id])
            if attrs.scheduled_event_id in started:
                stats.wft_run_time.append(at - started[attrs.scheduled_event_id])
        elif name == "MARKER_RECORDED":
            stats.markers[_marker_type(event.marker_recorded_event_attributes)] += 1
        elif name == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
            attrs = event.upsert_workflow_search_attributes_event_attributes
            for key, payload in attrs.search_attributes.indexed_fields.items():
                stats.upserts[f"{key}={payload.data.decode(errors='replace')}"] += 1
        elif name == "ACTIVITY_TASK_SCHEDULED":
            stats.activities[event.activity_task_scheduled_event_attributes.activity_type.name] += 1


def _marker_type(attrs: Any) -> str:
    """A local activity's type (from the marker's JSON `data`), else the marker's name
    (`core_patch` for `workflow.patched`)."""
    data = attrs.details.get("data") if "data" in attrs.details else None
    if attrs.marker_name != "core_local_activity" or data is None or not data.payloads:
        return str(attrs.marker_name)
    try:
        return str(json.loads(data.payloads[0].data).get("activity_type", attrs.marker_name))
    except (ValueError, AttributeError):
        return str(attrs.marker_name)


def _payload_bytes(message: Message) -> int:
    """Bytes of every Payload (data and metadata) inside a proto message."""
    if isinstance(message, Payload):
        return message.ByteSize()
    total = 0
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            items = [v for v in value.values() if isinstance(v, Message)]
        elif isinstance(value, Message):
            items = [value]
        else:  # a repeated message field
            items = list(value)
        total += sum(_payload_bytes(item) for item in items)
    return total
