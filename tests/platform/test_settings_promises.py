"""Configuration promises of ../shared/product/interfaces.md that only a user would
notice broken: the task queue's default (and that the API and the worker really use
it), settings read from a `.env` in the working directory (the environment winning),
and the default sender of email."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.provider_config import build_providers
from journeyman.contracts import JourneyResult
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import OutboxMessage
from tests.harness import Harness, actions
from tests.platform.test_worker_script import JOURNEY, worker_command, write_files
from tests.processes import clean_environment, free_port, running
from tests.standins import SendGridStandIn
from tests.waiting import eventually

JOURNEYMAN = Path(sys.executable).parent / "journeyman"


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No setting in the environment and an empty working directory (so no `.env`):
    `Settings()` gives the defaults. Returns that directory."""
    names = {
        str(field.validation_alias or name).upper() for name, field in Settings.model_fields.items()
    }
    for name in names:
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


# -- JOURNEYMAN_TASK_QUEUE -------------------------------------------------------------


def test_the_task_queue_is_journeyman_unless_set(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings().task_queue == "journeyman"
    monkeypatch.setenv("JOURNEYMAN_TASK_QUEUE", "shop-eu")
    assert Settings().task_queue == "shop-eu"


@pytest.mark.slow
@pytest.mark.database_incidental
async def test_the_api_and_the_worker_meet_on_the_default_task_queue(
    time_env: WorkflowEnvironment, db: Database, tmp_path: Path
) -> None:
    """`journeyman api` and `python worker.py` with no JOURNEYMAN_TASK_QUEUE: an event
    posted to the API starts a run on task queue `journeyman`, which the worker serves.
    The test's own time-skipping server is used, so no other test's worker polls that
    queue."""
    journeys, templates = write_files(tmp_path)
    port = free_port()
    write_key = "wk_default_queue"
    env = clean_environment(
        TEMPORAL_ADDRESS=time_env.client.service_client.config.target_host,
        DATABASE_URL=db.url,
        JOURNEYS_DIR=str(journeys),
        TEMPLATES_DIR=str(templates),
        JOURNEYMAN_WRITE_KEYS=write_key,
        JOURNEYMAN_ADMIN_TOKEN=secrets.token_hex(16),
        JOURNEYMAN_SECRET_KEY=secrets.token_hex(16),
    )
    api_command = [str(JOURNEYMAN), "api", "--host", "127.0.0.1", "--port", str(port)]
    handle = time_env.client.get_workflow_handle("hello_world/c1", result_type=JourneyResult)
    with (
        running(api_command, env, tmp_path, tmp_path / "api.log") as api,
        running(worker_command(), env, tmp_path, tmp_path / "worker.log") as worker,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", auth=(write_key, "")) as http,
    ):

        def healthy() -> bool:
            try:
                return http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        await eventually(healthy, what="the API answers", detail=api.detail)
        identify = {"userId": "c1", "traits": {"email": "ana@example.com"}, "messageId": "m-0"}
        assert http.post("/v1/identify", json=identify).status_code == 200
        track = {"userId": "c1", "event": "signed_up", "messageId": "m-1"}
        assert http.post("/v1/track", json=track).status_code == 200

        async def completed() -> bool:
            try:
                status = (await handle.describe()).status
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:  # not handed to Temporal yet
                    return False
                raise
            return status == WorkflowExecutionStatus.COMPLETED

        try:
            await eventually(
                completed,
                what="the run started through the API completes",
                detail=lambda: f"{api.detail()}\n{worker.detail()}",
            )
        finally:
            with contextlib.suppress(RPCError):  # already closed, or never started
                await handle.terminate("test over")
        description = await handle.describe()
        result = await handle.result()
        assert await worker.stop() == 0, worker.detail()
        await api.stop()
    assert description.task_queue == "journeyman"
    assert actions(result)[-1] == ("hello", "sent")
    with db.session() as session:
        [message] = session.query(OutboxMessage).all()
        assert (message.channel, message.to, message.subject) == (
            "email",
            "ana@example.com",
            "Hello c1",
        )


# -- .env ------------------------------------------------------------------------------


def test_settings_are_read_from_a_dotenv_file_in_the_working_directory(clean: Path) -> None:
    (clean / ".env").write_text(
        "TEMPORAL_ADDRESS=temporal.internal:7233\n"
        "JOURNEYMAN_TASK_QUEUE=from-dotenv\n"
        "DATABASE_URL=sqlite:///dotenv.db\n"
        "JOURNEYS_DIR=shop/journeys\n"
        'EMAIL_FROM="Shop <news@shop.example>"\n'
        "SENDGRID_API_KEY=SG.from-dotenv\n"
    )
    settings = Settings()
    assert settings.temporal_address == "temporal.internal:7233"
    assert settings.task_queue == "from-dotenv"
    assert settings.database_url == "sqlite:///dotenv.db"
    assert settings.journeys_dir == Path("shop/journeys")
    assert settings.email_from == "Shop <news@shop.example>"
    assert settings.sendgrid_api_key == SecretStr("SG.from-dotenv")


def test_an_environment_variable_wins_over_dotenv(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean / ".env").write_text(
        "JOURNEYMAN_TASK_QUEUE=from-dotenv\nEMAIL_FROM=Dotenv <dotenv@shop.example>\n"
    )
    monkeypatch.setenv("JOURNEYMAN_TASK_QUEUE", "from-environment")
    settings = Settings()
    assert settings.task_queue == "from-environment"
    assert settings.email_from == "Dotenv <dotenv@shop.example>"  # not in the environment


def outbox_command(cwd: Path, **env: str) -> str:
    """`journeyman outbox` run in `cwd`, with only `env` of the settings; its stdout."""
    done = subprocess.run(
        [str(JOURNEYMAN), "outbox"],
        env=clean_environment(**env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.slow
@pytest.mark.database_incidental
def test_a_command_reads_dotenv_from_its_working_directory(db: Database, tmp_path: Path) -> None:
    """`journeyman outbox` finds the database named by `.env` in the directory it runs
    in; DATABASE_URL in the environment, naming another database, wins over it."""
    with db.session() as session:
        session.add(
            OutboxMessage(
                delivery_id=1,
                customer_id="c_dotenv",
                journey_id="hello_world",
                channel="email",
                to="dotenv@example.com",
                subject="Found through .env",
                body="Hi",
            )
        )
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text(f"DATABASE_URL={db.url}\n")
    output = outbox_command(project)
    assert "c_dotenv" in output
    assert "dotenv@example.com" in output
    other = f"sqlite:///{tmp_path}/other.db"
    output = outbox_command(project, DATABASE_URL=other)
    assert output.strip() == "the outbox is empty"


# -- EMAIL_FROM --------------------------------------------------------------------------


def test_the_default_sender_is_journeyman_at_localhost(clean: Path) -> None:
    assert Settings().email_from == "Journeyman <noreply@localhost>"


def test_sendgrid_with_the_default_sender_is_refused_at_start_naming_email_from(
    clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default sender is the outbox's: SendGrid refuses `noreply@localhost` for
    every message, so a SendGrid key with EMAIL_FROM left unset stops the start, saying
    what to set, instead of failing each send."""
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.key")
    with pytest.raises(ValueError, match="EMAIL_FROM 'Journeyman <noreply@localhost>' has no"):
        build_providers(Settings(secret_key="s"))
    monkeypatch.setenv("EMAIL_FROM", "Shop <hello@shop.example>")
    assert set(build_providers(Settings(secret_key="s"))) == {"email"}


async def test_an_email_goes_out_from_email_from(
    harness: Harness, clean: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SendGrid configured by the environment: the request SendGrid gets is from
    EMAIL_FROM, name and address."""
    with SendGridStandIn() as sendgrid:
        monkeypatch.setenv("SENDGRID_API_KEY", sendgrid.api_key)
        monkeypatch.setenv("SENDGRID_BASE_URL", sendgrid.base_url)
        monkeypatch.setenv("EMAIL_FROM", "Shop <hello@shop.example>")
        harness.settings = Settings(database_url=harness.db.url, secret_key="harness-secret")
        harness.providers = build_providers(harness.settings)
        await harness.journey(JOURNEY)
        harness.customer("c1", email="ana@example.com")
        await harness.event("signed_up")
        await harness.result("hello_world/c1")
    [mail] = sendgrid.received
    assert mail.body["from"] == {"email": "hello@shop.example", "name": "Shop"}
    assert mail.body["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]
