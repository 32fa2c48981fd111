"""The API over a real worker on the time-skipping server, driven in-process; or the
API with no Temporal server at all.

`api` wraps the journey `Harness` (tests/harness.py): `await api.start(JOURNEY)` writes
the journey, starts the worker, builds the app and enters its lifespan. By default
the dispatcher is driven by the test (`await api.dispatch()`), so every hand-off to
Temporal happens at a known point; `run_dispatcher=True` runs it in the background
as in production.

`offline_api` is the same app with no Temporal server: its client is lazy and points
where nothing listens, so it never connects (what the API does when Temporal is down).
Intake stores events and reads answer from the database without one; a test that
dispatches, runs a journey or asks Temporal anything uses `api`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman.api import create_app
from journeyman.events.dispatcher import Dispatcher, PassReport
from journeyman.events.routing import Catalog, Router
from journeyman.platform.codec import plain_data_converter
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, Event, JourneyRun, OutboxMessage
from tests.harness import Harness

WRITE_KEY = "wk_test_1"  # a client key (public)
SERVER_KEY = "sk_test_1"  # a server key (secret)
ADMIN_TOKEN = "admin-token-for-tests"
WEBHOOK_KEY = b"0123456789abcdef0123456789abcdef"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()

CART_JOURNEY = """
id: cart
name: Cart reminder
entry:
  event: cart_abandoned
  key: "event.properties.cart_id"
steps:
  - id: pause
    wait: 1h
  - id: remind
    send: {template: cart_reminder, channels: [email]}
"""


# Nothing listens on port 1 (tcpmux, privileged): a client pointed there never connects.
NO_TEMPORAL = "127.0.0.1:1"


class OfflineHarness(Harness):
    """The journey harness with no Temporal server: journeys are compiled and registered
    and events routed to a client that never connects; no worker runs."""

    @classmethod
    async def create(cls, db: Database, root: Path, task_queue: str) -> OfflineHarness:
        client = await Client.connect(NO_TEMPORAL, data_converter=plain_data_converter, lazy=True)
        return cls(WorkflowEnvironment.from_client(client), db, root, task_queue)

    async def __aexit__(self, *exc: object) -> None:
        """Nothing to stop: no run was started, no worker runs."""

    async def start(self) -> Catalog:
        return await self.start_catalog_only()

    async def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """The dispatcher's clock, moved by the test (backoff without waiting)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


class Api:
    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.db = harness.db
        self.clock = FakeClock()
        self.router: Any = None
        self.dispatcher: Dispatcher | None = None
        self.app: FastAPI | None = None
        self.client: httpx.AsyncClient | None = None
        self._stack = contextlib.AsyncExitStack()

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": self.db.url,
            "write_keys": f"{WRITE_KEY},wk_other",
            "server_keys": SERVER_KEY,
            "admin_token": ADMIN_TOKEN,
            "webhook_secret": WEBHOOK_SECRET,
            "task_queue": self.harness.task_queue,
            "journeys_dir": self.harness.journeys_dir,
            "templates_dir": self.harness.templates_dir,
            **overrides,
        }
        return Settings(**values)

    async def start(
        self,
        *journeys: str,
        router: Callable[[Router], Any] | None = None,
        dispatcher: Callable[..., Dispatcher] = Dispatcher,
        run_dispatcher: bool = False,
        **settings: Any,
    ) -> FastAPI:
        for text in journeys:
            await self.harness.journey(text)
        if not journeys:
            await self.harness.start()
        assert self.harness.router is not None
        self.router = router(self.harness.router) if router else self.harness.router
        self.dispatcher = dispatcher(self.db, self.router, clock=self.clock)
        self.app = create_app(
            self.settings(**settings),
            self.db,
            self.router,
            dispatcher=self.dispatcher,
            run_dispatcher=run_dispatcher,
        )
        await self._stack.enter_async_context(self.app.router.lifespan_context(self.app))
        self.client = await self._stack.enter_async_context(
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=self.app), base_url="http://journeyman.test"
            )
        )
        return self.app

    async def close(self) -> None:
        """Stop the app, and terminate the runs the test left waiting.

        The time-skipping server is shared by the session: a run left behind would wake
        up when a later test skips time, with no worker to take its workflow task, and
        the server stops skipping time while that task is outstanding.
        """
        await self._stack.aclose()
        if isinstance(self.harness, OfflineHarness):
            return
        for run in self.runs():
            if run.status != "running":
                continue
            handle = self.harness.client.get_workflow_handle(run.workflow_id)
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")

    # -- calls ----------------------------------------------------------------------

    async def post(
        self,
        path: str,
        payload: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        write_key: str | None = WRITE_KEY,
    ) -> httpx.Response:
        assert self.client is not None, "call start() first"
        auth = httpx.BasicAuth(write_key, "") if write_key is not None else None
        if content is None:
            return await self.client.post(path, json=payload, headers=headers, auth=auth)
        return await self.client.post(path, content=content, headers=headers, auth=auth)

    async def admin_get(self, path: str, **params: Any) -> httpx.Response:
        assert self.client is not None, "call start() first"
        return await self.client.get(
            path, params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    async def dispatch(self) -> PassReport:
        assert self.dispatcher is not None, "call start() first"
        return await self.dispatcher.dispatch_pending()

    # -- observe --------------------------------------------------------------------

    def events(self) -> list[Event]:
        with self.db.session() as session:
            return list(session.scalars(select(Event).order_by(Event.id)))

    def runs(self) -> list[JourneyRun]:
        with self.db.session() as session:
            return list(session.scalars(select(JourneyRun).order_by(JourneyRun.started_at)))

    def customer(self, customer_id: str) -> Customer | None:
        with self.db.session() as session:
            return session.get(Customer, customer_id)

    def outbox(self) -> list[OutboxMessage]:
        return self.harness.outbox()

    def deliveries(self) -> list[Delivery]:
        return self.harness.deliveries()


@contextlib.asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free loopback port; yields its base URL.

    The socket listens before uvicorn starts, so clients may connect at once: their
    connection waits in the backlog until uvicorn accepts it.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    # The lifespan (and so the dispatcher) is the one `Api.start` entered.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
