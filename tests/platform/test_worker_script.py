"""`python worker.py`, run as a user runs it: a process configured by the environment,
polling its task queue on a real Temporal dev server, serving journeys end to end and
exiting cleanly on SIGTERM."""

from __future__ import annotations

import contextlib
import secrets
import signal
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman.contracts import CustomerEvent, JourneyResult
from journeyman.events.routing import Catalog, Router
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery
from tests.processes import clean_environment, running
from tests.standins import Answer, SendGridStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = REPO / "worker.py"

JOURNEY = """\
id: hello_world
name: Hello world
entry: {event: signed_up}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""
TEMPLATE = "{% block subject %}Hello {{ profile.id }}{% endblock %}<p>Hi {{ profile.id }}</p>"


def worker_command() -> list[str]:
    """`python worker.py`, with the virtualenv's python."""
    return [sys.executable, str(WORKER_SCRIPT)]


def write_files(root: Path, journey: str = JOURNEY) -> tuple[Path, Path]:
    journeys, templates = root / "journeys", root / "templates"
    journeys.mkdir()
    (journeys / "hello_world.yaml").write_text(journey)
    (templates / "hello").mkdir(parents=True)
    (templates / "hello" / "email.html").write_text(TEMPLATE)
    return journeys, templates


async def test_python_worker_py_serves_journeys_and_exits_cleanly_on_sigterm(
    local_env: WorkflowEnvironment, db: Database, tmp_path: Path
) -> None:
    journeys, templates = write_files(tmp_path)
    task_queue = f"tq-worker-script-{uuid.uuid4()}"
    workflow_id = "hello_world/c1"
    client = local_env.client
    with SendGridStandIn() as sendgrid:
        sendgrid.script(Answer(202, headers={"X-Message-Id": "sg-script-1"}))
        env = clean_environment(
            TEMPORAL_ADDRESS=client.service_client.config.target_host,
            JOURNEYMAN_TASK_QUEUE=task_queue,
            DATABASE_URL=db.url,
            JOURNEYS_DIR=str(journeys),
            TEMPLATES_DIR=str(templates),
            JOURNEYMAN_SECRET_KEY=secrets.token_hex(16),
            SENDGRID_API_KEY=sendgrid.api_key,
            SENDGRID_BASE_URL=sendgrid.base_url,
            EMAIL_FROM="Shop <shop@example.com>",
        )
        # The working directory holds no `.env`: the environment alone configures it.
        with running(worker_command(), env, tmp_path, tmp_path / "worker.log") as worker:
            try:
                with db.session() as session:
                    session.add(
                        Customer(id="c1", email="ana@example.com", traits={}, push_tokens=[])
                    )
                router = Router(client, db, Catalog.from_dirs(journeys, templates), task_queue)
                event = CustomerEvent(message_id=str(uuid.uuid4()), name="signed_up")
                assert (await router.route("c1", event)).entered == [workflow_id]
                handle = client.get_workflow_handle(workflow_id, result_type=JourneyResult)

                async def completed() -> bool:
                    status = (await handle.describe()).status
                    return status == WorkflowExecutionStatus.COMPLETED

                await eventually(
                    completed, what="the worker completes the run", detail=worker.detail
                )
                result = await handle.result()
                status = await worker.stop(signal.SIGTERM)
            finally:
                with contextlib.suppress(RPCError):  # already closed
                    await client.get_workflow_handle(workflow_id).terminate("test over")
            output = worker.output()
    assert result.outcome == "completed"
    assert [(p.step, p.action, p.channel) for p in result.path if p.action == "sent"] == [
        ("hello", "sent", "email")
    ]
    # The email went out through SendGrid, from EMAIL_FROM, to the customer, once.
    [mail] = sendgrid.received
    assert mail.body["from"] == {"email": "shop@example.com", "name": "Shop"}
    assert mail.body["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]
    assert mail.body["subject"] == "Hello c1"
    with db.session() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        assert (delivery.status, delivery.provider_message_id) == ("sent", "sg-script-1")
    assert status == 0, output[-3000:]
    assert "worker stopped" in output
