"""The publish loop next to `journeyman dev`, as the README tells users to run it: every
command that talks to the service works from the project folder with no setting (it
finds the payload key and addresses dev keeps in `.journeyman/`), a saved edit goes
live in seconds, a broken one leaves the last good version serving, `enabled: false`
stops new entries, and `rollback` and `releases` do what they say."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from journeyman.storage.db import Database
from journeyman.storage.models import Event, JourneyRun, OutboxMessage
from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
# The promise: a saved template edit reaches the next new customer within 8 s.
EDIT_REACHES_A_CUSTOMER_WITHIN = 8.0

HELLO = """\
id: hello
name: Hello
entry: {event: signed_up}
steps:
  - id: greet
    send: {template: hello, channels: [email]}
  - id: pause_a_day
    wait: 1d
  - id: again
    send: {template: hello, channels: [email]}
"""
NEWS = """\
id: news
name: News
entry:
  segment: "count('signed_up') > 0"
  once_at: 2099-12-04T09:00:00Z
steps:
  - id: letter
    send: {template: news, channels: [email]}
"""
TEMPLATE = "{% block subject %}Welcome {{ profile.id }}{% endblock %}<p>Hello!</p>\n"


def write_project(root: Path) -> None:
    (root / "journeys").mkdir()
    (root / "journeys" / "hello.yaml").write_text(HELLO)
    (root / "journeys" / "news.yaml").write_text(NEWS)
    for name in ("hello", "news"):
        (root / "templates" / name).mkdir(parents=True)
        (root / "templates" / name / "email.html").write_text(TEMPLATE)


def cli(
    root: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command as a user types it in the project folder: no setting at all."""
    return subprocess.run(
        [str(JOURNEYMAN), *args],
        cwd=root,
        env=env or clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_publish_loop_and_every_command_next_to_dev(tmp_path: Path) -> None:
    write_project(tmp_path)
    ports = {name: free_port() for name in ("api", "temporal", "ui")}
    command = [
        *(str(JOURNEYMAN), "dev", "--port", str(ports["api"])),
        *("--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"])),
    ]
    with running(command, clean_environment(), tmp_path, tmp_path / "dev.log") as dev:
        banner = await eventually(
            lambda: "Write key:" in dev.output() and dev.output(),
            what="journeyman dev starts",
            within=90,
            detail=dev.detail,
        )
        write_key = banner.split("Write key:", 1)[1].split()[0]
        admin = (tmp_path / ".journeyman" / "admin_token").read_text().strip()
        db = Database(f"sqlite:///{tmp_path}/.journeyman/journeyman.db")
        base = f"http://127.0.0.1:{ports['api']}"
        intake = httpx.Client(base_url=base, auth=(write_key, ""), timeout=10)
        api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=10)

        def sign_up(customer: str) -> str:
            traits = {"userId": customer, "traits": {"email": f"{customer}@example.com"}}
            assert intake.post("/v1/identify", json=traits).status_code == 200
            message_id = f"signup-{customer}"
            track = {"userId": customer, "event": "signed_up", "messageId": message_id}
            assert intake.post("/v1/track", json=track).status_code == 200
            return message_id

        def messages(customer: str) -> list[tuple[str | None, str]]:
            with db.session() as session:
                rows = session.scalars(
                    select(OutboxMessage)
                    .where(OutboxMessage.customer_id == customer)
                    .order_by(OutboxMessage.id)
                )
                return [(m.subject, m.body) for m in rows]

        def version_of(customer: str) -> str | None:
            with db.session() as session:
                return session.scalar(
                    select(JourneyRun.version).where(JourneyRun.customer_id == customer)
                )

        def current() -> str | None:
            return {j["id"]: j["current_version"] for j in api.get("/v1/journeys").json()}.get(
                "hello"
            )

        # -- every command that talks to the service, with no setting ----------------
        sign_up("c1")
        await eventually(lambda: messages("c1"), what="c1 is greeted", detail=dev.detail)
        shown = cli(tmp_path, "run", "show", "hello/c1")
        assert shown.returncode == 0, shown.stderr
        assert "pause_a_day" in shown.stdout
        skipped = cli(tmp_path, "run", "skip-wait", "hello/c1", "--who", "ana", "--why", "test")
        assert skipped.returncode == 0, skipped.stderr
        assert skipped.stdout.startswith("hello/c1: ")
        await eventually(
            lambda: len(messages("c1")) == 2, what="the skipped wait sends again", detail=dev.detail
        )
        now = cli(tmp_path, "broadcast", "news", "--now")
        assert now.returncode == 0, now.stderr
        assert now.stdout.startswith("news: 1 customer evaluated, 1 matched, 1 entered (done)")
        deployed = cli(tmp_path, "deploy")
        assert deployed.returncode == 0, deployed.stderr
        assert "nothing to publish: the live release is the same as these files" in deployed.stdout
        sign_up("c0")
        await eventually(lambda: version_of("c0"), what="c0 enters", detail=dev.detail)
        for args in (
            ("pause", "hello", "--who", "ana", "--why", "test"),
            ("resume", "hello", "--who", "ana", "--why", "test"),
            ("stats", "hello"),
            ("stats", "--global"),
            ("runs", "--journey", "hello"),
            ("run", "move", "hello/c0", "--to", "greet", "--who", "ana", "--why", "test"),
            ("run", "end", "hello/c0", "--who", "ana", "--why", "test"),
        ):
            done = cli(tmp_path, *args)
            assert done.returncode == 0, f"{args}: {done.stderr}"
            assert "Traceback" not in done.stderr + done.stdout
        # Elsewhere, with the address but not the key: one clear line, no traceback.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        address = clean_environment(TEMPORAL_ADDRESS=f"localhost:{ports['temporal']}")
        blind = cli(elsewhere, "run", "show", "hello/c1", env=address)
        assert blind.returncode == 1
        assert blind.stderr.count("\n") == 1 and "set JOURNEYMAN_PAYLOAD_KEY" in blind.stderr
        # An action taken there is reported done, though its detail cannot be read.
        sign_up("cz")
        await eventually(lambda: messages("cz"), what="cz is greeted", detail=dev.detail)
        acted = cli(
            elsewhere, "run", "skip-wait", "hello/cz", "--who", "ana", "--why", "t", env=address
        )
        assert acted.returncode == 0, acted.stderr
        assert acted.stdout.startswith("hello/cz: skip-wait done (its detail is not readable here")
        await eventually(
            lambda: len(messages("cz")) == 2, what="the skip took effect", detail=dev.detail
        )

        # -- a saved template edit reaches the next new customer ------------------------
        first = current()
        assert first is not None and version_of("c1") == first
        edited_at = time.monotonic()
        (tmp_path / "templates" / "hello" / "email.html").write_text(
            TEMPLATE.replace("Hello!", "Hello again, and welcome!")
        )
        line = await eventually(
            lambda: next(
                (x for x in dev.output().splitlines() if x.startswith("hello: version ")), None
            ),
            what="dev prints the edit live",
            within=EDIT_REACHES_A_CUSTOMER_WITHIN,
            detail=dev.detail,
        )
        second = line.split()[2]
        assert line.startswith(
            f"hello: version {second} live (hello/email.html: 1 line changed (now: "
        )
        await eventually(lambda: current() == second, what="the API serves it", detail=dev.detail)
        sign_up("c2")
        await eventually(
            lambda: any("Hello again" in body for _, body in messages("c2")),
            what="the next new customer gets the edited copy",
            within=EDIT_REACHES_A_CUSTOMER_WITHIN - (time.monotonic() - edited_at),
            detail=dev.detail,
        )
        assert version_of("c2") == second

        # -- a broken edit: its errors, and the last good version keeps serving -----------
        (tmp_path / "journeys" / "hello.yaml").write_text(HELLO.replace("wait: 1d", "wait: soon"))
        await eventually(
            lambda: (
                "not published: the live version stays until the files validate" in dev.output()
            ),
            what="dev prints the errors",
            detail=dev.detail,
        )
        assert re.search(r"^journeys/hello\.yaml:\d+:\d+: ", dev.output(), re.MULTILINE)
        sign_up("c3")
        await eventually(lambda: version_of("c3"), what="c3 enters", detail=dev.detail)
        assert version_of("c3") == second

        # -- enabled: false stops new entries --------------------------------------------
        (tmp_path / "journeys" / "hello.yaml").write_text(
            HELLO.replace("name: Hello\n", "name: Hello\nenabled: false\n")
        )
        await eventually(
            lambda: "hello: switched off (enabled: false); takes no new entries" in dev.output(),
            what="dev prints the journey switched off",
            detail=dev.detail,
        )
        await eventually(
            lambda: current() is None, what="the API stops entering", detail=dev.detail
        )
        message_id = sign_up("c4")

        def dispatched() -> bool:
            with db.session() as session:
                event = session.scalar(select(Event).where(Event.message_id == message_id))
                return event is not None and event.dispatched_at is not None

        await eventually(dispatched, what="c4's event is handed over", detail=dev.detail)
        assert version_of("c4") is None
        off = cli(tmp_path, "stats", "hello")
        assert "journey off: 1 entry passed by while switched off" in off.stdout, off.stderr

        # -- rollback brings the version before back; releases lists each step ----------
        back = cli(tmp_path, "rollback", "hello", "--by", "ana", "-m", "too quiet")
        assert back.returncode == 0, back.stderr
        assert back.stdout.startswith(f"hello: version {second} live")
        await eventually(
            lambda: current() == second, what="the rollback is served", detail=dev.detail
        )
        sign_up("c5")
        await eventually(lambda: version_of("c5") == second, what="c5 enters", detail=dev.detail)

        log = cli(tmp_path, "releases", "hello")
        assert log.returncode == 0, log.stderr
        lines = log.stdout.splitlines()
        assert [line.split("  ")[2:4] for line in lines] == [
            [second, "live"],
            [lines[1].split("  ")[2], "off"],
            [second, "live"],
            [first, "live"],
        ]
        assert lines[0].endswith("by ana  — too quiet")
        assert lines[1].endswith("(dev)  — saved edit")
        intake.close()
        api.close()
        db.dispose()
        assert await dev.stop(signal.SIGINT) == 0, dev.detail()
    assert not (tmp_path / ".journeyman" / "dev.json").exists()
