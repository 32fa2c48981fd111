"""The API's hand-off to Temporal failing: accepted events still start their journeys.

The API stores an event and answers before anything reaches Temporal; the dispatcher
hands it over later (journeyman/events/dispatcher.py). Here Temporal is unreachable when the
events come in, or its answer is lost after the journey started; either way each
event starts its journey once Temporal answers again, and never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from journeyman.api import create_app
from journeyman.contracts import CustomerEvent
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.routing import Catalog, Router, RouteResult
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Event, JourneyRun
from journeyman.wiring import build_worker, journey_activities
from tests.api.support import ADMIN_TOKEN, WEBHOOK_SECRET, WRITE_KEY, FakeClock
from tests.faults.support import DevServer, eventually, free_port, write_journey

pytestmark = pytest.mark.slow

CUSTOMERS = 5
JOURNEY = """
id: welcome
name: Welcome
entry: {event: signed_up}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
  - id: done
    end: true
"""


def settings(db: Database, root: Path, task_queue: str) -> Settings:
    return Settings(
        database_url=db.url,
        write_keys=WRITE_KEY,
        admin_token=ADMIN_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        secret_key="faults-secret",
        task_queue=task_queue,
        journeys_dir=root / "journeys",
        templates_dir=root / "templates",
    )


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://journeyman.test",
            auth=httpx.BasicAuth(WRITE_KEY, ""),
        ) as http,
    ):
        yield http


async def post_signups(http: httpx.AsyncClient, customers: list[str]) -> None:
    for customer in customers:
        response = await http.post(
            "/v1/track",
            json={"userId": customer, "event": "signed_up", "messageId": f"m-{customer}"},
        )
        assert response.status_code == 200, response.text


def undispatched(db: Database) -> list[Event]:
    with db.session() as session:
        return list(session.scalars(select(Event).where(Event.dispatched_at.is_(None))))


def runs(db: Database) -> list[JourneyRun]:
    with db.session() as session:
        return list(session.scalars(select(JourneyRun)))


async def executions(client: Client, task_queue: str) -> list[str]:
    """Workflow ids of every execution on the task queue, one entry per run."""
    return [w.id async for w in client.list_workflows(f'TaskQueue = "{task_queue}"')]


async def assert_started_once_each(
    client: Client, db: Database, task_queue: str, customers: list[str]
) -> None:
    expected = sorted(f"welcome/{c}" for c in customers)
    assert sorted(r.workflow_id for r in runs(db)) == expected
    for workflow_id in expected:
        result = client.get_workflow_handle(workflow_id).result()
        await asyncio.wait_for(result, timeout=20)
        described = await client.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.COMPLETED

    async def visible() -> bool:
        return len(await executions(client, task_queue)) >= len(expected)

    await eventually(visible, within=10, what="every run in visibility")
    assert sorted(await executions(client, task_queue)) == expected


async def test_events_accepted_while_temporal_is_down_start_journeys_once_it_is_back(
    db: Database, tmp_path: Path
) -> None:
    write_journey(tmp_path, JOURNEY)
    catalog = Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates")
    catalog.register(db)
    task_queue = f"tq-faults-{uuid.uuid4()}"
    # Nothing listens on the port yet; the API's client connects when first used.
    server = DevServer(tmp_path / "t.db", free_port())
    router = Router(await server.connect(lazy=True), db, catalog, task_queue)
    clock = FakeClock()
    dispatcher = Dispatcher(db, router, clock=clock)
    app = create_app(
        settings(db, tmp_path, task_queue), db, router, dispatcher=dispatcher, run_dispatcher=False
    )
    customers = [f"d{n}" for n in range(CUSTOMERS)]
    try:
        async with serving(app) as http:
            await post_signups(http, customers)
            down = await asyncio.wait_for(dispatcher.dispatch_pending(), timeout=60)
            assert (down.dispatched, down.failed) == (0, CUSTOMERS)
            pending = undispatched(db)
            assert [e.attempts for e in pending] == [1] * CUSTOMERS
            assert all(e.last_error for e in pending)
            assert runs(db) == []

            server.start()
            client = await server.ready()
            activities = journey_activities(db, settings(db, tmp_path, task_queue), providers={})
            async with build_worker(client, task_queue, activities):
                clock.advance(timedelta(minutes=1))  # past the backoff
                back = await asyncio.wait_for(dispatcher.dispatch_pending(), timeout=60)
                assert (back.dispatched, back.failed) == (CUSTOMERS, 0)
                assert undispatched(db) == []
                clock.advance(timedelta(hours=1))
                again = await dispatcher.dispatch_pending()
                assert (again.dispatched, again.failed) == (0, 0)
                await assert_started_once_each(client, db, task_queue, customers)
            activities.close()
    finally:
        server.stop()


class LosesAnswers(Router):
    """A router whose first `losses` hand-offs reach Temporal but whose answers are lost
    (a timeout after the start was accepted): the dispatcher sees a failure."""

    losses = 0

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        result = await super().route(customer_id, event)
        if self.losses > 0:
            self.losses -= 1
            raise RPCError("deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")
        return result


async def test_a_hand_off_whose_answer_was_lost_does_not_start_the_journey_twice(
    local_env: WorkflowEnvironment, db: Database, tmp_path: Path
) -> None:
    write_journey(tmp_path, JOURNEY)
    catalog = Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates")
    catalog.register(db)
    task_queue = f"tq-faults-{uuid.uuid4()}"
    router = LosesAnswers(local_env.client, db, catalog, task_queue)
    router.losses = CUSTOMERS
    clock = FakeClock()
    dispatcher = Dispatcher(db, router, clock=clock)
    config = settings(db, tmp_path, task_queue)
    app = create_app(config, db, router, dispatcher=dispatcher, run_dispatcher=False)
    customers = [f"l{n}-{uuid.uuid4().hex[:6]}" for n in range(CUSTOMERS)]
    activities = journey_activities(db, config, providers={})
    async with (
        serving(app) as http,
        build_worker(local_env.client, task_queue, activities),
    ):
        await post_signups(http, customers)
        lost = await asyncio.wait_for(dispatcher.dispatch_pending(), timeout=30)
        assert (lost.dispatched, lost.failed) == (0, CUSTOMERS)
        clock.advance(timedelta(minutes=1))
        retried = await asyncio.wait_for(dispatcher.dispatch_pending(), timeout=30)
        assert (retried.dispatched, retried.failed) == (CUSTOMERS, 0)
        await assert_started_once_each(local_env.client, db, task_queue, customers)
    activities.close()
