"""The worker killed with SIGKILL in the middle of journeys, then started again.

Forty customers go through send → wait 2s → send, with email through the SendGrid
stand-in. The worker (`journeyman worker`, a subprocess) is killed -9 once some but
not all messages arrived, and a new one is started. Every run must complete, no
delivery may reach SendGrid twice, and every message must be accounted for in the
ledger: `sent` (SendGrid has it, once) or `unknown` (the worker died during the
provider call; never sent again, so at most once).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from journeyman.contracts import CustomerEvent
from journeyman.events.routing import Catalog, Router
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery, JourneyRun, JourneyVersion
from tests.faults.support import WorkerProcess, eventually, worker_env, write_journey
from tests.standins import SendGridStandIn
from workflows.journey import SEND_HEARTBEAT

pytestmark = pytest.mark.slow

CUSTOMERS = 40
JOURNEY = """
id: crash
name: Two emails
entry: {event: signed_up}
steps:
  - id: first
    send: {template: hello, channels: [email]}
  - id: pause
    wait: 2s
  - id: second
    send: {template: hello, channels: [email]}
  - id: done
    end: true
"""
# A send in flight when the worker dies is retried once its heartbeat timeout
# (SEND_HEARTBEAT) has passed: with the waits, the longest the runs can need.
RECOVERY = SEND_HEARTBEAT.total_seconds() + 60


def delivery_ids(sendgrid: SendGridStandIn) -> list[int]:
    return [int(r.body["custom_args"]["delivery_id"]) for r in sendgrid.received]


def schema_ready(db: Database) -> bool:
    """The worker made the schema and registered the journey (it does both at start)."""
    if not inspect(db.engine).has_table("journey_versions"):
        return False
    with db.session() as session:
        return session.scalar(select(JourneyVersion.version)) is not None


@pytest.fixture
def empty_db(tmp_path: Path) -> Iterator[Database]:
    """A database file with no tables: the worker sets up the schema, as in production."""
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    yield db
    db.dispose()


async def test_runs_complete_once_each_after_the_worker_is_killed_mid_journey(
    local_env: WorkflowEnvironment, empty_db: Database, tmp_path: Path
) -> None:
    db = empty_db
    write_journey(tmp_path, JOURNEY)
    customers = [f"c{n:02d}-{uuid.uuid4().hex[:6]}" for n in range(CUSTOMERS)]
    task_queue = f"tq-faults-{uuid.uuid4()}"
    workers: list[WorkerProcess] = []
    with SendGridStandIn() as sendgrid:
        env = worker_env(
            TEMPORAL_ADDRESS=local_env.client.service_client.config.target_host,
            JOURNEYMAN_TASK_QUEUE=task_queue,
            DATABASE_URL=db.url,
            JOURNEYS_DIR=str(tmp_path / "journeys"),
            TEMPLATES_DIR=str(tmp_path / "templates"),
            JOURNEYMAN_SECRET_KEY="faults-secret",
            SENDGRID_API_KEY=sendgrid.api_key,
            SENDGRID_BASE_URL=sendgrid.base_url,
            EMAIL_FROM="Shop <shop@example.com>",
        )

        def start_worker(name: str) -> WorkerProcess:
            worker = WorkerProcess(env, tmp_path, tmp_path / f"{name}.log")
            workers.append(worker)
            return worker

        try:
            first = start_worker("worker-1")

            def started() -> bool:
                first.check_alive()
                return schema_ready(db)

            await eventually(started, within=30, what="the worker's schema", detail=first.log)
            with db.session() as session:
                for customer in customers:
                    email = f"{customer}@example.com"
                    session.add(Customer(id=customer, email=email, traits={}, push_tokens=[]))
            catalog = Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates")
            router = Router(local_env.client, db, catalog, task_queue)
            for customer in customers:
                event = CustomerEvent(message_id=str(uuid.uuid4()), name="signed_up")
                assert (await router.route(customer, event)).entered == [f"crash/{customer}"]

            def some_sent() -> bool:
                first.check_alive()
                return len(sendgrid.received) >= CUSTOMERS // 4

            await eventually(
                some_sent,
                within=30,
                what="a quarter of the first emails at SendGrid",
                every=0.005,
                detail=first.log,
            )
            first.kill()
            received_at_kill = len(sendgrid.received)
            assert received_at_kill < 2 * CUSTOMERS

            second = start_worker("worker-2")

            def all_completed() -> bool:
                second.check_alive()
                with db.session() as session:
                    statuses = session.scalars(select(JourneyRun.status)).all()
                return len(statuses) == CUSTOMERS and set(statuses) == {"completed"}

            await eventually(
                all_completed, within=RECOVERY, what="every run completed", detail=second.log
            )
            # The ledger of runs says completed a workflow task before Temporal does.
            for customer in customers:
                handle = local_env.client.get_workflow_handle(f"crash/{customer}")
                await asyncio.wait_for(handle.result(), timeout=30)
                assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED
        finally:
            for worker in workers:
                worker.stop()

    with db.session() as session:
        ledger = {d.id: d.status for d in session.scalars(select(Delivery))}
    times_received = Counter(delivery_ids(sendgrid))
    twice = {delivery: n for delivery, n in times_received.items() if n > 1}
    assert not twice, f"deliveries SendGrid received more than once: {twice}"
    assert set(ledger.values()) <= {"sent", "unknown"}, Counter(ledger.values())
    sent = [d for d, status in ledger.items() if status == "sent"]
    unknown = [d for d, status in ledger.items() if status == "unknown"]
    assert all(times_received[d] == 1 for d in sent)
    assert all(times_received[d] <= 1 for d in unknown)
    assert len(sent) + len(unknown) == 2 * CUSTOMERS, "a message was lost"
    # Kept beside the workers' logs: how the kill landed, for whoever reads a failure.
    (tmp_path / "outcome.json").write_text(
        json.dumps(
            {
                "received_at_kill": received_at_kill,
                "unknown": len(unknown),
                "unknown_received": sum(times_received[d] for d in unknown),
            }
        )
    )
