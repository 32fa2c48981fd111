"""Two API replicas and one worker on one database (PostgreSQL in the suite's PostgreSQL
pass, one SQLite file in the other), each replica with its own dispatcher: 2,000 events
of 200 customers sent round-robin to both reach their runs in order, none twice, none
lost. What each run heard is read from its Temporal history (the signals, in order), not
from anything the dispatchers say about themselves."""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from temporalio.api.common.v1 import Payload
from temporalio.testing import WorkflowEnvironment

from journeyman.platform.codec import CompressionCodec
from journeyman.storage.db import Database
from journeyman.storage.models import Event
from tests.platform.test_worker_script import worker_command
from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
CUSTOMERS = 200
EACH = 10

# One run per customer, entered on the first tick; the goal makes the run listen to
# every later tick (it never converts), and the long wait keeps it running.
TICKS = """\
id: ticks
name: Ticks
entry:
  event: tick
goal:
  event: tick
  when: "event.properties.n == -1"
steps:
  - id: hold
    wait: 30d
"""


def heard(history: object) -> list[str]:
    """The message ids of the events a run heard, in order: its trigger (in the start
    input; the start signal, for runs started before 2026-12-07) first, then those it
    was signalled."""
    ids = []
    for event in history.events:  # type: ignore[attr-defined]
        if event.HasField("workflow_execution_started_event_attributes"):
            payloads = event.workflow_execution_started_event_attributes.input.payloads
            trigger = json.loads(_plain(payloads[0]).data).get("trigger")
            if trigger is not None:
                ids.append(trigger["message_id"])
        if event.HasField("workflow_execution_signaled_event_attributes"):
            payloads = event.workflow_execution_signaled_event_attributes.input.payloads
            ids.append(json.loads(_plain(payloads[0]).data)["message_id"])
    return ids


def _plain(payload: Payload) -> Payload:
    """As the workflow read it: the API processes compress large payloads."""
    return CompressionCodec().decompress(payload)


@pytest.mark.slow
async def test_two_replicas_keep_every_customers_order_none_twice_none_lost(
    local_env: WorkflowEnvironment, db: Database, tmp_path: Path
) -> None:
    journeys = tmp_path / "journeys"
    journeys.mkdir()
    (journeys / "ticks.yaml").write_text(TICKS)
    (tmp_path / "templates").mkdir()
    write_key = "wk_replicas"
    env = clean_environment(
        TEMPORAL_ADDRESS=local_env.client.service_client.config.target_host,
        JOURNEYMAN_TASK_QUEUE=f"replicas-{uuid.uuid4().hex[:8]}",
        DATABASE_URL=db.url,
        JOURNEYS_DIR=str(journeys),
        TEMPLATES_DIR=str(tmp_path / "templates"),
        JOURNEYMAN_WRITE_KEYS=write_key,
        JOURNEYMAN_ADMIN_TOKEN=secrets.token_hex(16),
        JOURNEYMAN_SECRET_KEY=secrets.token_hex(16),
    )
    ports = [free_port(), free_port()]
    commands = [
        [str(JOURNEYMAN), "api", "--host", "127.0.0.1", "--port", str(port)] for port in ports
    ]
    with (
        running(worker_command(), env, tmp_path, tmp_path / "worker.log") as worker,
        running(commands[0], env, tmp_path, tmp_path / "api0.log") as api0,
        running(commands[1], env, tmp_path, tmp_path / "api1.log") as api1,
    ):
        apis = [api0, api1]

        def detail() -> str:
            return "\n".join(p.detail() for p in (*apis, worker))

        clients = [
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", auth=(write_key, ""))
            for port in ports
        ]
        try:
            for client, api in zip(clients, apis, strict=True):

                async def healthy(client: httpx.AsyncClient = client) -> bool:
                    try:
                        return (await client.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                await eventually(healthy, what="the API answers", detail=api.detail)
            # Event k of every customer, then event k + 1: each customer's events go
            # one after another (as an SDK sends them), alternating between replicas.
            gate = asyncio.Semaphore(16)

            async def send(index: int, customer: int, n: int) -> None:
                body = {
                    "userId": f"c{customer}",
                    "event": "tick",
                    "messageId": f"c{customer}-{n}",
                    "properties": {"n": n},
                }
                async with gate:
                    # As the SDKs do: a connection the server closed meanwhile (an idle
                    # keep-alive) is retried; the message id makes a retry harmless.
                    for attempt in range(3):
                        try:
                            response = await clients[index % 2].post("/v1/track", json=body)
                            break
                        except httpx.TransportError:
                            if attempt == 2:
                                raise
                assert response.status_code == 200, response.text

            for n in range(EACH):
                await asyncio.gather(*(send(n * CUSTOMERS + c, c, n) for c in range(CUSTOMERS)))
        finally:
            for client in clients:
                await client.aclose()

        def pending() -> int:
            with db.session() as session:
                return (
                    session.scalar(select(func.count()).where(Event.dispatched_at.is_(None))) or 0
                )

        await eventually(
            lambda: pending() == 0,
            what="every event handed over",
            within=300,
            every=0.5,
            detail=detail,
        )
        with db.session() as session:
            assert session.scalar(select(func.count()).select_from(Event)) == CUSTOMERS * EACH
        # A signal Temporal accepted while the run's workflow task was in flight is kept
        # aside by the server and written to the history only when that task completes:
        # on a loaded machine a task can take seconds, so histories are read until they
        # settle. What they must settle on is exact: every event, in order, once.
        wrong: dict[str, list[str]] = {}

        async def every_run_heard_all() -> bool:
            wrong.clear()
            for c in range(CUSTOMERS):
                handle = local_env.client.get_workflow_handle(f"ticks/c{c}")
                got = heard(await handle.fetch_history())
                if got != [f"c{c}-{n}" for n in range(EACH)]:
                    wrong[f"c{c}"] = got
                    # Never a repeat, nor one out of order: only the tail may be missing.
                    assert got == [f"c{c}-{n}" for n in range(len(got))], got
            return not wrong

        await eventually(
            every_run_heard_all,
            what="every run heard its customer's events",
            within=120,
            every=1,
            detail=lambda: f"{len(wrong)} customers heard otherwise: {list(wrong.items())[:3]}",
        )
        for c in range(CUSTOMERS):
            await local_env.client.get_workflow_handle(f"ticks/c{c}").terminate("test over")
        for api in apis:
            assert "Traceback" not in api.output(), api.detail()
