"""`journeyman worker` stopped by SIGTERM lets the activity it runs finish, and serves
its metrics (its own and Temporal's) while it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman.routing import Catalog, Router
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Delivery
from journeyman.types import CustomerEvent
from tests.standins import Answer, SendGridStandIn

pytestmark = pytest.mark.slow

PROVIDER_DELAY = 3.0  # seconds SendGrid takes to answer: SIGTERM arrives meanwhile
JOURNEY = """\
id: slow
name: Slow provider
entry: {event: signed_up}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""
TEMPLATE = "{% block subject %}Hello{% endblock %}<p>Hi {{ profile.id }}</p>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def eventually(check: Callable[[], bool], within: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s\n{log.read_text()[-3000:]}")
        await asyncio.sleep(0.02)


async def test_sigterm_lets_the_running_send_finish_before_the_worker_exits(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "slow.yaml").write_text(JOURNEY)
    (tmp_path / "templates" / "hello").mkdir(parents=True)
    (tmp_path / "templates" / "hello" / "email.html").write_text(TEMPLATE)
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    migrate.upgrade(db)
    task_queue = f"tq-shutdown-{uuid.uuid4()}"
    worker_port, temporal_port = free_port(), free_port()
    log_path = tmp_path / "worker.log"
    with SendGridStandIn() as sendgrid, log_path.open("ab") as log:
        sendgrid.script(Answer(202, headers={"X-Message-Id": "sg-1"}, delay=PROVIDER_DELAY))
        prefixes = ("TEMPORAL_", "JOURNEYMAN_", "SENDGRID_", "TWILIO_", "FCM_", "EMAIL_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
        env.pop("DATABASE_URL", None)
        env |= {
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
            await eventually(lambda: bool(sendgrid.received), 30, "the email at SendGrid", log_path)
            worker_metrics, temporal_metrics = scrape(worker_port), scrape(temporal_port)
            process.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(process.wait, 30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            with contextlib.suppress(RPCError):
                await local_env.client.get_workflow_handle("slow/c1").terminate("test over")
    with db.session() as session:
        [delivery] = session.scalars(select(Delivery)).all()
        assert (delivery.status, delivery.provider_message_id) == ("sent", "sg-1")
    db.dispose()
    output = log_path.read_text()
    assert status == 0, output[-3000:]
    assert '"message": "worker stopped"' in output
    assert "ana@example.com" not in output
    assert "# TYPE journeyman_messages_total counter" in worker_metrics
    assert "temporal_" in temporal_metrics
