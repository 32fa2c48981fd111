"""`journeyman deploy`, `journeyman broadcast` and simulating a segment journey, run as
users run them."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.names import schedule_id
from journeyman.settings import Settings, get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import Consent, Customer, Event, JourneyRun
from journeyman.wiring import build_worker, journey_activities
from tests.cli.test_cli import cli, invoke, scratch_journey

__all__ = ["cli"]  # the fixture, used by name

NEWS = """
id: news
name: December news
topic: store_news
entry:
  segment: "count('order_placed') > 0"
  once_at: 2099-12-04T09:00:00Z
  holdout: 50%
steps:
  - id: letter
    send: {template: reminder, channels: [email, sms]}
"""


def news_journey(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch_journey(root, NEWS, monkeypatch)
    (root / "templates" / "reminder" / "sms.txt").write_text("News from the shop")


def seed(db: Database) -> None:
    """Six customers who ordered (one by email, one by text only, one unreachable, one
    unsubscribed from email, one from the topic, one in the holdout) and one who did not."""
    now = datetime.now(UTC)
    with db.session() as session:
        people = {
            "by_email": {"email": "a@example.com"},
            "by_sms": {"phone": "+15035550100"},
            "unreachable": {},
            "no_email": {"email": "b@example.com"},
            "no_news": {"email": "c@example.com"},
            "never_ordered": {"email": "d@example.com"},
        }
        for customer_id, columns in people.items():
            session.add(Customer(id=customer_id, traits={}, push_tokens=[], **columns))
            if customer_id != "never_ordered":
                session.add(
                    Event(
                        message_id=f"o-{customer_id}",
                        type="track",
                        customer_id=customer_id,
                        name="order_placed",
                        properties={},
                        timestamp=now - timedelta(days=3),
                    )
                )
        session.add(
            Consent(
                customer_id="no_email",
                scope="channel",
                name="email",
                subscribed=False,
                source="t",
            )
        )
        session.add(
            Consent(
                customer_id="no_news",
                scope="topic",
                name="store_news",
                subscribed=False,
                source="t",
            )
        )


def holdout_free(customers: list[str]) -> list[str]:
    """The customers of `seed` that the 50% holdout of `news` does not take."""
    from journeyman.dsl.chance import bucket

    return [c for c in customers if bucket("news", c, "holdout") >= 0.5]


def test_broadcast_dry_run_counts_who_would_enter_and_how_they_are_reached(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    news_journey(tmp_path, monkeypatch)
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    invoke(cli, "db", "upgrade")
    seed(db)
    treated = holdout_free(["by_email", "by_sms", "unreachable", "no_email"])

    result = invoke(cli, "broadcast", "news", "--dry-run")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("news (version ") and lines[0].endswith("nothing was sent")
    assert lines[1] == "  6 customers evaluated, 5 match the segment"
    held_out = 4 - len(treated)
    assert lines[2] == "  4 would enter" + (
        f" ({held_out} of them in the holdout, sent nothing)" if held_out else ""
    )
    assert "  not entered: unsubscribed from topic store_news: 1" in lines
    expected = {
        "by_email": "email",
        "by_sms": "sms",
        "unreachable": "none (email: not reachable (no email address); "
        "sms: not reachable (no phone number))",
        "no_email": "none (email: unsubscribed from email; sms: not reachable (no phone number))",
    }
    report = json.loads(invoke(cli, "broadcast", "news", "--dry-run", "--json").stdout)
    channels = report["channels"]["letter"]
    assert channels == {
        expected[c]: sum(1 for t in treated if expected[t] == expected[c]) for c in treated
    }
    assert report["entering"] == 4 and report["held_out"] == held_out
    with db.session() as session:
        assert session.query(JourneyRun).count() == 0  # nothing entered, nothing sent
    db.dispose()


def test_broadcast_refuses_what_it_cannot_do(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    news_journey(tmp_path, monkeypatch)
    scratch_journey(
        tmp_path,
        "id: nudge\nname: Nudge\nentry: {event: cart_abandoned}\nsteps:\n  - {id: d, end: true}",
        monkeypatch,
    )

    event = invoke(cli, "broadcast", "nudge", "--dry-run")
    both = invoke(cli, "broadcast", "news", "--dry-run", "--now")
    unknown = invoke(cli, "broadcast", "nothing", "--dry-run")

    assert event.exit_code == 1
    assert "nudge is entered on the event cart_abandoned, not by a segment" in event.stderr
    assert both.exit_code == 1 and "not both" in both.stderr
    assert unknown.exit_code == 1 and "no journey 'nothing'" in unknown.stderr


@pytest.mark.slow
async def test_deploy_creates_the_schedule_and_broadcast_now_enters_the_audience(
    local_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_queue = f"tq-{uuid.uuid4()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/journeyman.db")
    monkeypatch.setenv("TEMPORAL_ADDRESS", local_env.client.service_client.config.target_host)
    monkeypatch.setenv("JOURNEYMAN_TASK_QUEUE", task_queue)
    news_journey(tmp_path, monkeypatch)
    runner = CliRunner()

    def run(*args: str):  # type: ignore[no-untyped-def]
        get_settings.cache_clear()
        return runner.invoke(app, list(args), catch_exceptions=False)

    deployed = await asyncio.to_thread(run, "deploy")
    assert deployed.exit_code == 0, deployed.output
    assert "news: new journey, version " in deployed.stdout
    assert "published: 1 journey live" in deployed.stdout
    assert "schedule created: news" in deployed.stdout
    redeployed = await asyncio.to_thread(run, "deploy")
    assert "nothing to publish: the live release is the same as these files" in redeployed.stdout
    assert "schedule unchanged: news" in redeployed.stdout

    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    seed(db)
    settings = Settings(database_url=db.url, secret_key="cli-audience")
    async with build_worker(local_env.client, task_queue, journey_activities(db, settings, {})):
        status = await asyncio.to_thread(run, "broadcast", "news")
        now = await asyncio.to_thread(run, "broadcast", "news", "--now")
        after = await asyncio.to_thread(run, "broadcast", "news")

    assert status.exit_code == 0, status.output
    assert f"  schedule: {schedule_id('news', task_queue)}, active" in status.stdout
    assert "  next check: 2099-12-04 09:00 UTC" in status.stdout
    assert "  no check has run yet" in status.stdout
    assert now.exit_code == 0, now.output
    assert now.stdout.splitlines()[0] == (
        "news: 6 customers evaluated, 5 matched, 4 entered (done)"
    )
    assert "  not entered: unsubscribed from topic store_news: 1" in now.stdout
    assert " done: 6 evaluated, 5 matched, 4 entered" in after.stdout
    with db.session() as session:
        assert sorted(r.customer_id for r in session.query(JourneyRun)) == [
            "by_email",
            "by_sms",
            "no_email",
            "unreachable",
        ]
    get_settings.cache_clear()
    from journeyman.audiences import schedules

    await schedules.sync(local_env.client, [], task_queue=task_queue)
    db.dispose()


def test_simulate_a_segment_journey_with_history_before_the_check(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch_journey(
        tmp_path,
        """
        id: lapsed
        name: Lapsed
        entry:
          segment: "last('order_placed') and last('order_placed').at < now - days(60)"
          every: 1d
        goal: {event: order_placed}
        steps:
          - id: offer
            send: {template: reminder, channels: [email]}
          - id: wait_a_week
            wait: 7d
        """,
        monkeypatch,
    )
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"id": "c1", "email": "ana@example.com"}))
    lapsed = tmp_path / "lapsed.jsonl"
    lapsed.write_text(
        json.dumps({"at": "-90d", "event": "order_placed"})
        + "\n"
        + json.dumps({"at": "2d", "event": "order_placed"})
        + "\n"
    )
    recent = tmp_path / "recent.jsonl"
    recent.write_text(json.dumps({"at": "-5d", "event": "order_placed"}) + "\n")

    entered = invoke(cli, "simulate", "lapsed", "--profile", profile, "--events", lapsed, "--json")
    left_out = invoke(cli, "simulate", "lapsed", "--profile", profile, "--events", recent)
    no_history = invoke(cli, "simulate", "lapsed", "--profile", profile)

    assert entered.exit_code == 0, entered.output
    timeline = [json.loads(line) for line in entered.stdout.splitlines()]
    assert [(e["at_seconds"], e["step"], e["action"]) for e in timeline] == [
        (0, "entry", "entered"),
        (0, "offer", "sent"),
        (2 * 86400, "wait_a_week", "converted"),
    ]
    assert timeline[0]["detail"] == "entered on segment_entry"
    assert left_out.exit_code == 1
    assert "not entered: lapsed: not in the segment (last('order_placed') and" in left_out.stderr
    assert no_history.exit_code == 1
    assert "not in the segment" in no_history.stderr
