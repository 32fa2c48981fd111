"""The Temporal dev server stopped and started again on its file database mid-run.

Ten customers wait between two sends (outbox provider) when the server is stopped
with SIGTERM; it comes back on the same database file and port. The worker keeps its
client: every run must complete with exactly two messages per customer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus

from journeyman.routing import Catalog, Router
from journeyman.runtime import build_worker, journey_activities
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, JourneyRun, OutboxMessage
from journeyman.types import CustomerEvent
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
    wait: 3s
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
            await eventually(
                lambda: sum(outbox_by_customer(db).values()) == CUSTOMERS,
                within=20,
                what="the first email of every customer",
            )

            server.stop()
            assert server.process is not None and server.process.returncode is not None
            # Stopped while every run waits on its timer: no second email yet.
            assert sum(outbox_by_customer(db).values()) == CUSTOMERS
            server.start()
            await server.ready()

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
