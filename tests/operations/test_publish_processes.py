"""Every process follows a release: two `journeyman api` processes and a worker on one
PostgreSQL database switch to what `journeyman deploy` published, within 5 seconds and
without a restart; the next new customer enters the new version."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from journeyman.dsl.compiler import compile_dir
from journeyman.names import schedule_id
from journeyman.operations import releases
from journeyman.storage.models import JourneyRun
from tests.conftest import fresh_postgres
from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
SERVER = os.environ.get("JOURNEYMAN_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
# The promise: every process serves a new release within 5 s of `deploy` returning.
SWITCH_WITHIN = 5.0

JOURNEY = """\
id: nudge
name: Nudge
entry: {event: cart_abandoned}
steps:
  - id: wait_a_bit
    wait: 1h
  - id: remind
    send: {template: nudge, channels: [email]}
"""
NEWS = """\
id: news
name: News
entry:
  segment: "count('cart_abandoned') > 0"
  once_at: 2099-12-04T09:00:00Z
steps:
  - id: letter
    send: {template: nudge, channels: [email]}
"""
TEMPLATE = "{% block subject %}Your cart{% endblock %}<p>Come back, {{ profile.id }}</p>\n"


def write_project(root: Path) -> None:
    (root / "journeys").mkdir()
    (root / "journeys" / "nudge.yaml").write_text(JOURNEY)
    (root / "templates" / "nudge").mkdir(parents=True)
    (root / "templates" / "nudge" / "email.html").write_text(TEMPLATE)


def current_versions(http: httpx.Client) -> dict[str, str | None]:
    try:
        answer = http.get("/v1/journeys")
    except httpx.TransportError:
        return {}
    if answer.status_code != 200:
        return {}
    return {j["id"]: j["current_version"] for j in answer.json()}


async def test_two_apis_and_a_worker_on_postgresql_switch_within_5_s_of_deploy(
    local_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    write_project(tmp_path)
    token, write_key = secrets.token_hex(16), "wk_publish"
    ports = [free_port(), free_port()]
    with fresh_postgres(SERVER) as db:
        db.create_all()
        env = clean_environment(
            TEMPORAL_ADDRESS=local_env.client.service_client.config.target_host,
            DATABASE_URL=db.url,
            JOURNEYMAN_TASK_QUEUE=f"tq-publish-{secrets.token_hex(4)}",
            JOURNEYMAN_WRITE_KEYS=write_key,
            JOURNEYMAN_ADMIN_TOKEN=token,
            JOURNEYMAN_SECRET_KEY=secrets.token_hex(16),
        )
        apis = [[str(JOURNEYMAN), "api", "--port", str(port)] for port in ports]
        with (
            running(apis[0], env, tmp_path, tmp_path / "api1.log") as api1,
            running(apis[1], env, tmp_path, tmp_path / "api2.log") as api2,
            running([str(JOURNEYMAN), "worker"], env, tmp_path, tmp_path / "worker.log") as worker,
        ):
            admin = {"Authorization": f"Bearer {token}"}
            https = [
                httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=admin, timeout=10)
                for port in ports
            ]

            def detail() -> str:
                return "\n".join(p.detail() for p in (api1, api2, worker))

            first = await eventually(
                lambda: (
                    all(current_versions(h).get("nudge") for h in https)
                    and current_versions(https[0])["nudge"]
                ),
                what="both APIs serve the journey published on the empty database",
                detail=detail,
            )
            await eventually(
                lambda: "worker polling task queue" in worker.output(),
                what="the worker polls",
                detail=detail,
            )
            (tmp_path / "templates" / "nudge" / "email.html").write_text(
                TEMPLATE.replace("Come back", "We kept it for you")
            )

            deployed = subprocess.run(
                [str(JOURNEYMAN), "deploy", "--message", "warmer copy"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
            )
            done_at = time.monotonic()
            assert deployed.returncode == 0, deployed.stderr
            assert f"nudge: version {first} → " in deployed.stdout
            assert "  ~ nudge/email.html: 1 line changed" in deployed.stdout
            new = deployed.stdout.split(f"nudge: version {first} → ", 1)[1].split()[0]

            await eventually(
                lambda: all(current_versions(h).get("nudge") == new for h in https),
                what="both APIs serve the new release",
                within=SWITCH_WITHIN,
                detail=detail,
            )
            await eventually(
                lambda: f" is live: nudge {new}" in worker.output(),
                what="the worker follows the new release",
                within=SWITCH_WITHIN - (time.monotonic() - done_at),
                detail=detail,
            )
            # The next new customer, through either API, enters the new version.
            with httpx.Client(
                base_url=f"http://127.0.0.1:{ports[1]}", auth=(write_key, "")
            ) as intake:
                track = {"userId": "c1", "event": "cart_abandoned", "messageId": "m-1"}
                assert intake.post("/v1/track", json=track).status_code == 200

            def entered() -> str | None:
                with db.session() as session:
                    return session.scalar(
                        select(JourneyRun.version).where(JourneyRun.customer_id == "c1")
                    )

            assert await eventually(entered, what="c1 enters", detail=detail) == new
            handle = local_env.client.get_workflow_handle("nudge/c1")
            await handle.terminate("test over")

            # A segment journey published by another hand (CI through another API): the
            # workers make its Temporal Schedule, no command syncs it.
            (tmp_path / "journeys" / "news.yaml").write_text(NEWS)
            changes = releases.plan_deploy(
                db, compile_dir(tmp_path / "journeys", tmp_path / "templates")
            )
            releases.publish(db, changes, by="ci")
            schedule = local_env.client.get_schedule_handle(
                schedule_id("news", env["JOURNEYMAN_TASK_QUEUE"])
            )

            async def scheduled() -> bool:
                try:
                    await schedule.describe()
                except RPCError:
                    return False
                return True

            await eventually(scheduled, what="the worker creates the schedule", detail=detail)
            await schedule.delete()
            for client in https:
                client.close()
            # Neither API published anything at start but on the empty database.
            assert "journey files differ" not in api1.output() + api2.output()
