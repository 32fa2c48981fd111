"""`journeyman worker` stopped by SIGTERM lets the activity it runs finish, and serves
its metrics (its own and Temporal's) while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman.contracts import CustomerEvent
from journeyman.events.routing import Catalog, Router
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery
from tests.processes import free_port
from tests.standins import Answer, Received, SendGridStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEY = """\
id: slow
name: Slow provider
entry: {event: signed_up}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""
TEMPLATE = "{% block subject %}Hello{% endblock %}<p>Hi {{ profile.id }}</p>"


def scrape(port: int) -> str | None:
    """The metrics page, or None while nothing answers on the port yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())
    except OSError:
        return None


class HeldSendGrid(SendGridStandIn):
    """SendGrid answering only once the test lets it (`release`), and saying when it has
    (`answered`): the send in flight stays in flight until then, however fast or slow
    the machine."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.answered = threading.Event()

    def answer(self, request: Received) -> Answer:
        reply = super().answer(request)
        self.release.wait(60)
        return reply

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        super().serve(handler)
        self.answered.set()

    def close(self) -> None:
        self.release.set()  # a test that failed meanwhile leaves no handler held
        super().close()


async def test_sigterm_lets_the_running_send_finish_before_the_worker_exits(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The send is held at SendGrid from before SIGTERM until the worker has begun
    stopping, so it can only be recorded if the worker waits for it: the delivery comes
    out sent, with SendGrid's id, only by a worker that stayed up, took the answer,
    recorded it and reported the activity complete before exiting."""
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "slow.yaml").write_text(JOURNEY)
    (tmp_path / "templates" / "hello").mkdir(parents=True)
    (tmp_path / "templates" / "hello" / "email.html").write_text(TEMPLATE)
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    migrate.upgrade(db)
    task_queue = f"tq-shutdown-{uuid.uuid4()}"
    worker_port, temporal_port = free_port(), free_port()
    log_path = tmp_path / "worker.log"

    def output() -> str:
        return log_path.read_text(errors="replace")

    def delivery() -> tuple[str, str | None] | None:
        with db.session() as session:
            row = session.scalars(select(Delivery)).one_or_none()
            return None if row is None else (row.status, row.provider_message_id)

    with HeldSendGrid() as sendgrid, log_path.open("ab") as log:
        sendgrid.script(Answer(202, headers={"X-Message-Id": "sg-1"}))
        prefixes = ("TEMPORAL_", "JOURNEYMAN_", "SENDGRID_", "TWILIO_", "FCM_", "EMAIL_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.pop("DATABASE_URL", None)
        env |= {
            "JOURNEYMAN_PAYLOAD_PLAINTEXT": "true",
            "TEMPORAL_ADDRESS": local_env.client.service_client.config.target_host,
            "JOURNEYMAN_TASK_QUEUE": task_queue,
            "DATABASE_URL": db.url,
            "JOURNEYS_DIR": str(tmp_path / "journeys"),
            "TEMPLATES_DIR": str(tmp_path / "templates"),
            "JOURNEYMAN_SECRET_KEY": secrets.token_hex(16),
            "SENDGRID_API_KEY": sendgrid.api_key,
            "SENDGRID_BASE_URL": sendgrid.base_url,
            "EMAIL_FROM": "Shop <shop@example.com>",
            "JOURNEYMAN_SHUTDOWN_GRACE": "20",
            "JOURNEYMAN_WORKER_METRICS_PORT": str(worker_port),
            "JOURNEYMAN_TEMPORAL_METRICS_PORT": str(temporal_port),
            "JOURNEYMAN_METRICS_HOST": "127.0.0.1",
            "JOURNEYMAN_LOG_FORMAT": "json",
        }
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "journeyman"), "worker"],
            env=env,
            cwd=tmp_path,  # no stray `.env` of the repository is read
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        router = Router(
            local_env.client,
            db,
            Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates"),
            task_queue,
        )
        try:
            with db.session() as session:
                session.add(Customer(id="c1", email="ana@example.com", traits={}, push_tokens=[]))
            event = CustomerEvent(message_id=str(uuid.uuid4()), name="signed_up")
            assert (await router.route("c1", event)).entered == ["slow/c1"]
            await eventually(lambda: sendgrid.received, what="the email at SendGrid", detail=output)
            assert delivery() == ("sending", None)  # in flight, nothing recorded yet
            worker_metrics = await eventually(
                lambda: scrape(worker_port), what="the worker's metrics", detail=output
            )
            temporal_metrics = await eventually(
                lambda: scrape(temporal_port), what="Temporal's metrics", detail=output
            )

            process.send_signal(signal.SIGTERM)
            await eventually(
                lambda: '"message": "stopping: running activities get' in output(),
                what="the worker stopping on SIGTERM",
                detail=output,
            )
            assert process.poll() is None, f"the worker exited with the send in flight:\n{output()}"
            assert not sendgrid.answered.is_set()
            sendgrid.release.set()
            status = await asyncio.to_thread(process.wait, 30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            with contextlib.suppress(RPCError):
                await local_env.client.get_workflow_handle("slow/c1").terminate("test over")
    assert sendgrid.answered.is_set()
    assert delivery() == ("sent", "sg-1"), output()[-3000:]
    db.dispose()
    # The worker reported the send complete to Temporal before it went.
    history = await local_env.client.get_workflow_handle("slow/c1").fetch_history()
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    completed = [
        scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]
    assert "journey.send" in completed, history.events
    log_text = output()
    assert status == 0, log_text[-3000:]
    assert log_text.index('"message": "stopping') < log_text.index('"message": "worker stopped"')
    assert "ana@example.com" not in log_text
    assert "# TYPE journeyman_messages_total counter" in worker_metrics
    assert "temporal_" in temporal_metrics
