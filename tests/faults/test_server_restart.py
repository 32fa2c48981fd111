"""The Temporal dev server stopped and started again on its file database mid-run.

Ten customers wait between two sends (outbox provider) when the server is stopped
with SIGTERM; it comes back on the same database file and port. The worker and the
router keep their client: the event each run waits for, routed once the server is
back, must reach it, and every run must complete with exactly two messages per
customer.

The runs wait for that event rather than a timer, so that they are certainly waiting
when the server stops and go on only once it is back: a timer would race the stop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus

from journeyman.contracts import CustomerEvent, RunStatus
from journeyman.events.routing import Catalog, Router
from journeyman.names import STATE_QUERY
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, JourneyRun, OutboxMessage
from journeyman.wiring import build_worker, journey_activities
from tests.faults.support import dev_server, eventually, write_journey

pytestmark = pytest.mark.slow

CUSTOMERS = 10
JOURNEY = """
id: restart
name: Two emails around a wait
entry: {event: signed_up}
steps:
  - id: first
    send: {template: hello, channels: [email]}
  - id: pause
    wait_for: {event: resumed, timeout: 30d}
  - id: second
    send: {template: hello, channels: [email]}
  - id: done
    end: true
"""


def outbox_by_customer(db: Database) -> Counter[str]:
    with db.session() as session:
        return Counter(session.scalars(select(OutboxMessage.customer_id)).all())


async def test_runs_complete_after_the_dev_server_restarts_on_its_database(
    db: Database, tmp_path: Path
) -> None:
    write_journey(tmp_path, JOURNEY)
    catalog = Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates")
    catalog.register(db)
    customers = [f"r{n}-{uuid.uuid4().hex[:6]}" for n in range(CUSTOMERS)]
    with db.session() as session:
        for customer in customers:
            session.add(
                Customer(id=customer, email=f"{customer}@example.com", traits={}, push_tokens=[])
            )
    task_queue = f"tq-faults-{uuid.uuid4()}"
    settings = Settings(database_url=db.url, secret_key="faults-secret")
    activities = journey_activities(db, settings, providers={})

    with dev_server(tmp_path / "t.db") as server:
        client = await server.ready()
        worker = build_worker(client, task_queue, activities)
        running = asyncio.create_task(worker.run())
        try:
            router = Router(client, db, catalog, task_queue)
            for customer in customers:
                event = CustomerEvent(message_id=str(uuid.uuid4()), name="signed_up")
                assert (await router.route(customer, event)).entered == [f"restart/{customer}"]

            async def all_waiting() -> bool:
                for customer in customers:
                    handle = client.get_workflow_handle(f"restart/{customer}")
                    state = await handle.query(STATE_QUERY, result_type=RunStatus)
                    if state.waiting_for != "resumed":
                        return False
                return True

            await eventually(all_waiting, what="every run waiting between its two emails")
            assert outbox_by_customer(db) == dict.fromkeys(customers, 1)

            server.stop()
            assert server.process is not None and server.process.returncode is not None
            server.start()
            await server.ready()
            # Routed with the client the router had before the restart.
            for customer in customers:
                event = CustomerEvent(message_id=str(uuid.uuid4()), name="resumed")
                routed = await router.route(customer, event)
                assert routed.delivered == [f"restart/{customer}"]

            def all_completed() -> bool:
                assert not running.done(), f"the worker stopped: {running}"
                with db.session() as session:
                    statuses = session.scalars(select(JourneyRun.status)).all()
                return len(statuses) == CUSTOMERS and set(statuses) == {"completed"}

            await eventually(all_completed, within=60, what="every run completed")
            # The ledger of runs says completed a workflow task before Temporal does.
            for customer in customers:
                handle = client.get_workflow_handle(f"restart/{customer}")
                await asyncio.wait_for(handle.result(), timeout=30)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        finally:
            await asyncio.wait_for(worker.shutdown(), timeout=30)
            activities.close()

    assert outbox_by_customer(db) == dict.fromkeys(customers, 2)
