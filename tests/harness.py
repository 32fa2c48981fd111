"""A test harness that runs journeys on a Temporal test server with a real worker."""

from __future__ import annotations

import contextlib
import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from journeyman.contracts import CustomerEvent, JourneyResult
from journeyman.dsl.compiler import compile_file
from journeyman.events.catalog import registered_listens
from journeyman.events.routing import Catalog, Router, RouteResult
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, Event, JourneyRun, OutboxMessage
from journeyman.wiring import build_worker, journey_activities

DEFAULT_TEMPLATES = {
    "email.html": "{% block subject %}Hello {{ profile.id }}{% endblock %}<p>Hi</p>",
    "sms.txt": "Hi {{ profile.id }}",
    "push.txt": "{% block title %}Hi{% endblock %}{% block body %}Hello{% endblock %}",
    "whatsapp.txt": "Hi {{ profile.id }} on WhatsApp",
    "inbox.txt": (
        "{% block title %}Hi {{ profile.id }}{% endblock %}{% block body %}Hello{% endblock %}"
    ),
}


class Harness:
    def __init__(self, env: WorkflowEnvironment, db: Database, root: Path, task_queue: str) -> None:
        self.env = env
        self.client = env.client
        self.db = db
        self.journeys_dir = root / "journeys"
        self.templates_dir = root / "templates"
        self.journeys_dir.mkdir(exist_ok=True)
        self.templates_dir.mkdir(exist_ok=True)
        self.task_queue = task_queue
        self.settings = Settings(
            database_url=db.url, default_timezone="UTC", secret_key="harness-secret"
        )
        self.router: Router | None = None
        self._worker: Worker | None = None
        self.providers: dict[str, Any] = {}
        self.started: set[str] = set()  # workflow ids a test started by hand

    async def __aenter__(self) -> Harness:
        return self

    async def __aexit__(self, *exc: object) -> None:
        # A run left waiting would hold the shared test server's clock for later tests.
        with self.db.session() as session:
            running = session.scalars(
                select(JourneyRun.workflow_id).where(JourneyRun.status == "running")
            ).all()
        for workflow_id in {*running, *self.started}:
            with contextlib.suppress(RPCError):  # already closed
                await self.client.get_workflow_handle(workflow_id).terminate("test over")
        if self._worker is not None:
            await self._worker.__aexit__(None, None, None)

    # -- set up ---------------------------------------------------------------------

    def template(self, name: str, files: dict[str, str] | None = None) -> None:
        folder = self.templates_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        for filename, text in (files or DEFAULT_TEMPLATES).items():
            (folder / filename).write_text(text)

    async def journey(self, yaml_text: str) -> Catalog:
        """Write a journey (templates named by its sends get defaults) and start the worker."""
        text = textwrap.dedent(yaml_text).strip() + "\n"
        journey_id = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("id:")
        )
        path = self.journeys_dir / f"{journey_id}.yaml"
        path.write_text(text)
        for line in text.splitlines():
            if "template:" in line:
                name = line.split("template:", 1)[1].strip().strip("{},").split(",")[0].strip()
                if not (self.templates_dir / name).exists():
                    self.template(name)
        compile_file(path, self.templates_dir)  # fail fast with positions
        return await self.start()

    async def start_catalog_only(self) -> Catalog:
        """Compile and register the journeys and route with them, knowing (as the
        API's live catalog does) what every registered version hears; no worker."""
        catalog = Catalog.from_dirs(self.journeys_dir, self.templates_dir)
        catalog.register(self.db)
        catalog = Catalog(list(catalog.compiled.values()), listened=registered_listens(self.db))
        self.router = Router(self.client, self.db, catalog, self.task_queue)
        return catalog

    async def start(self) -> Catalog:
        catalog = await self.start_catalog_only()
        if self._worker is None:
            activities = journey_activities(self.db, self.settings, self.providers)
            self._worker = build_worker(self.client, self.task_queue, activities)
            await self._worker.__aenter__()
        return catalog

    def customer(self, customer_id: str = "c1", **fields: Any) -> str:
        columns = {
            k: fields.pop(k)
            for k in ("email", "phone", "timezone", "locale", "push_tokens")
            if k in fields
        }
        with self.db.session() as session:
            row = session.get(Customer, customer_id)
            if row is None:
                row = Customer(id=customer_id, traits={}, push_tokens=[])
                session.add(row)
            for key, value in columns.items():
                setattr(row, key, value)
            row.traits = {**(row.traits or {}), **fields}
        return customer_id

    # -- drive ----------------------------------------------------------------------

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def event(
        self, name: str, customer_id: str = "c1", message_id: str | None = None, **properties: Any
    ) -> RouteResult:
        """Store and route an event at the server's current (virtual) time."""
        assert self.router is not None, "call journey() first"
        timestamp = (await self.now()).astimezone(UTC)
        event = CustomerEvent(
            message_id=message_id or str(uuid.uuid4()),
            name=name,
            properties=properties,
            timestamp=timestamp,
        )
        with self.db.session() as session:
            if session.scalar(select(Event).where(Event.message_id == event.message_id)) is None:
                session.add(
                    Event(
                        message_id=event.message_id,
                        type="track",
                        customer_id=customer_id,
                        name=name,
                        properties=properties,
                        timestamp=timestamp,
                    )
                )
        return await self.router.route(customer_id, event)

    async def sleep(self, duration: timedelta) -> None:
        await self.env.sleep(duration)

    async def sleep_past(self, local: str, by: timedelta, timezone: str = "UTC") -> datetime:
        """Sleep until `by` after the next `local` (HH:MM) on `timezone`'s clock, whatever
        the hour the test started at; returns that instant."""
        now = (await self.now()).astimezone(ZoneInfo(timezone))
        hour, minute = (int(part) for part in local.split(":"))
        target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if target <= now:
            target += timedelta(days=1)
        await self.env.sleep(target + by - now)
        return target + by

    def handle(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        return self.client.get_workflow_handle(workflow_id, result_type=JourneyResult)

    async def result(
        self,
        workflow_id: str,
        step: timedelta = timedelta(minutes=30),
        limit: timedelta = timedelta(days=90),
    ) -> JourneyResult:
        """Let virtual time run in steps until the run finishes.

        Stepping (rather than unlocking time skipping while waiting on the result) keeps
        the clock near the end of the run: once nothing is scheduled, an unlocked test
        server leaps years ahead, which later events of the same test would see.
        """
        handle = self.handle(workflow_id)
        waited = timedelta(0)
        while (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
            if waited > limit:
                raise AssertionError(f"{workflow_id} still running after {limit} of virtual time")
            await self.env.sleep(step)
            waited += step
        return await handle.result()

    # -- observe --------------------------------------------------------------------

    def outbox(self, customer_id: str | None = None) -> list[OutboxMessage]:
        with self.db.session() as session:
            query = select(OutboxMessage).order_by(OutboxMessage.id)
            if customer_id:
                query = query.where(OutboxMessage.customer_id == customer_id)
            return list(session.scalars(query))

    def deliveries(self) -> list[Delivery]:
        with self.db.session() as session:
            return list(session.scalars(select(Delivery).order_by(Delivery.id)))


def actions(result: JourneyResult) -> list[tuple[str, str]]:
    """The (step, action) pairs of a finished run, for compact assertions."""
    return [(entry.step, entry.action) for entry in result.path]
