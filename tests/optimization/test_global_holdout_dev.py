"""The global holdout next to `journeyman dev`, as a user runs it: set in `.env`, keyed
with what `dev` keeps in `.journeyman/`, applied by its worker, and measured by
`journeyman stats --global` from the project folder with no other setting."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from journeyman.optimization.holdout import GlobalHoldout
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Delivery, JourneyRun
from tests.operations.test_dev_publishing import cli
from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
PROMO = """\
id: promo
name: Promo
topic: promotions
entry: {event: signed_up}
goal: {event: order_placed}
steps:
  - id: offer
    send: {template: offer, channels: [email]}
  - id: wait_for_order
    wait_for: {event: order_placed, timeout: 1d}
"""
CUSTOMERS = [f"c{n}" for n in range(12)]


async def test_dev_keeps_a_global_control_group_and_stats_measures_it(tmp_path: Path) -> None:
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "promo.yaml").write_text(PROMO)
    (tmp_path / "templates" / "offer").mkdir(parents=True)
    (tmp_path / "templates" / "offer" / "email.html").write_text(
        "{% block subject %}An offer{% endblock %}<p>Hi</p>\n"
    )
    (tmp_path / ".env").write_text("JOURNEYMAN_GLOBAL_HOLDOUT=50%\n")
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
        assert isinstance(banner, str)
        write_key = banner.split("Write key:", 1)[1].split()[0]
        admin = (tmp_path / ".journeyman" / "admin_token").read_text().strip()
        intake = httpx.Client(
            base_url=f"http://127.0.0.1:{ports['api']}", auth=(write_key, ""), timeout=10
        )
        for customer in CUSTOMERS:
            identify = {"userId": customer, "traits": {"email": f"{customer}@example.com"}}
            assert intake.post("/v1/identify", json=identify).status_code == 200
            track = {"userId": customer, "event": "signed_up", "messageId": f"s-{customer}"}
            assert intake.post("/v1/track", json=track).status_code == 200
        db = Database(f"sqlite:///{tmp_path}/.journeyman/journeyman.db")

        def decided() -> dict[str, str] | None:
            with db.session() as session:
                rows = session.execute(select(Delivery.customer_id, Delivery.status)).all()
            done = {c: s for c, s in rows if s in ("sent", "skipped")}
            return done if len(done) == len(CUSTOMERS) else None

        outcomes = await eventually(decided, what="every offer decided", detail=dev.detail)
        assert outcomes is not None
        order = {"userId": "c0", "event": "order_placed", "messageId": "order-c0"}
        assert intake.post("/v1/track", json=order).status_code == 200
        intake.close()

        def converted() -> bool:
            with db.session() as session:
                run = session.scalar(select(JourneyRun).where(JourneyRun.customer_id == "c0"))
                return run is not None and run.outcome == "converted"

        await eventually(converted, what="c0's order converts its run", detail=dev.detail)
        with db.session() as session:
            reasons = {d.customer_id: d.reason for d in session.scalars(select(Delivery))}
        report = cli(tmp_path, "stats", "--global")
        db.dispose()
    key = Settings(JOURNEYMAN_ADMIN_TOKEN=SecretStr(admin)).signing_key()
    members = {c for c in CUSTOMERS if GlobalHoldout(0.5, key).holds(c)}
    assert 0 < len(members) < len(CUSTOMERS)
    assert {c for c, status in outcomes.items() if status == "skipped"} == members
    assert all(reasons[c] == "global holdout" for c in members)
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert lines[0] == (
        "global holdout 50% of customers get no marketing (transactional topics exempt: none)"
    )
    treated = len(CUSTOMERS) - len(members)
    assert f"  holdout    {int('c0' in members)} of {len(members)} customers" in "\n".join(lines)
    assert f"  marketing  {int('c0' not in members)} of {treated} customers" in "\n".join(lines)
