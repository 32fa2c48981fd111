"""`journeyman.insight.backtest`: a recorded week replayed through a journey version."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.insight.backtest import (
    BacktestError,
    BacktestReport,
    backtest,
    day_shift,
    parse_moment,
)
from journeyman.settings import Settings, get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

SINCE = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
UNTIL = SINCE + timedelta(days=7)
QUIET = "21:00-08:00"

NUDGE = f"""
id: nudge
name: Cart nudge
entry:
  event: cart_abandoned
  when: "event.properties.cart_total >= 20"
goal:
  event: order_placed
settings: {{quiet_hours: "{QUIET}"}}
steps:
  - id: pause
    wait: 1h
  - id: remind
    send: {{template: reminder, channels: [email]}}
  - id: wait_a_day
    wait: 1d
  - id: nudge
    send: {{template: reminder, channels: [sms]}}
  - id: done
    end: true
"""

# The edited copy: a text right after the email as well.
NUDGE_WITH_TEXT = NUDGE.replace(
    "  - id: wait_a_day",
    "  - id: text_now\n    send: {template: reminder, channels: [sms]}\n  - id: wait_a_day",
)

TEMPLATES = {
    "reminder/email.html": "{% block subject %}Your cart{% endblock %}<p>Come back</p>",
    "reminder/sms.txt": "Your cart is waiting",
}

NOT_ENTERED = "entry condition false (event.properties.cart_total >= 20)"
NO_PHONE = "sms: not reachable (no phone number)"


def at(day: int, clock: str) -> datetime:
    """Day `day` of the period (0 is the first) at `clock` UTC."""
    hour, minute = map(int, clock.split(":"))
    return SINCE + timedelta(days=day, hours=hour, minutes=minute)


def write_journey(folder: Path, text: str, subfolder: str = "journeys") -> Path:
    """The journey in `folder/subfolder` (an edited copy elsewhere than `journeys`),
    its templates in `folder/templates`."""
    (folder / subfolder).mkdir(parents=True, exist_ok=True)
    for name, body in TEMPLATES.items():
        path = folder / "templates" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    path = folder / subfolder / "nudge.yaml"
    path.write_text(textwrap.dedent(text).strip() + "\n")
    return path


def record(db: Database, customers: list[dict[str, Any]], events: list[tuple[Any, ...]]) -> None:
    """Customers (profile columns) and track events `(customer, name, at, properties)`."""
    with db.session() as session:
        for profile in customers:
            session.add(Customer(traits={}, push_tokens=[], timezone="UTC", **profile))
        for n, (customer, name, when, properties) in enumerate(events):
            session.add(
                Event(
                    message_id=f"m{n}",
                    type="track",
                    customer_id=customer,
                    name=name,
                    properties=properties,
                    timestamp=when,
                    dispatched_at=when,
                )
            )


@pytest.fixture
def recorded(db: Database) -> Database:
    """A recorded week: who abandoned carts, who bought, who was up late."""
    record(
        db,
        [
            {"id": "c1", "email": "c1@example.com", "phone": "+15550001"},
            {"id": "c2", "email": "c2@example.com", "phone": "+15550002"},
            {"id": "c3", "email": "c3@example.com", "phone": "+15550003"},
            {"id": "c4", "email": "c4@example.com", "phone": "+15550004"},
            {"id": "c5", "email": "c5@example.com"},
            {"id": "c6", "email": "c6@example.com"},
            {"id": "c7", "email": "c7@example.com"},
            {"id": "c8", "email": "c8@example.com"},
        ],
        [
            # c1: email an hour later, the text the next day.
            ("c1", "cart_abandoned", at(0, "10:00"), {"cart_total": 50}),
            # c2: a cart too small to enter.
            ("c2", "cart_abandoned", at(0, "11:00"), {"cart_total": 5}),
            # c3: buys two hours after the email: converted before the text.
            ("c3", "cart_abandoned", at(0, "12:00"), {"cart_total": 30}),
            ("c3", "order_placed", at(0, "15:00"), {"order_id": "o3"}),
            # c4: the text falls due at 21:30, in quiet hours, and waits for 08:00.
            ("c4", "cart_abandoned", at(0, "20:30"), {"cart_total": 80}),
            # c5: no phone: the text is skipped.
            ("c5", "cart_abandoned", at(1, "09:00"), {"cart_total": 25}),
            # c6: browses, never abandons a cart: not considered.
            ("c6", "page_viewed", at(1, "09:00"), {}),
            # c7: abandoned before the period: history only, not considered.
            ("c7", "cart_abandoned", at(-1, "09:00"), {"cart_total": 25}),
            # c8: a small cart first (not entered), a big one later (entered), no phone.
            ("c8", "cart_abandoned", at(2, "10:00"), {"cart_total": 5}),
            ("c8", "cart_abandoned", at(2, "11:00"), {"cart_total": 40}),
        ],
    )
    return db


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/unused.db",
        journeys_dir=tmp_path / "journeys",
        templates_dir=tmp_path / "templates",
        default_timezone="UTC",
    )


async def run(env: Any, settings: Settings, source: Database, journey: Path) -> BacktestReport:
    return await backtest(
        journey, settings=settings, source=source, since=SINCE, until=UNTIL, env=env
    )


async def test_recorded_week_gives_known_counts(time_env, settings, recorded, tmp_path):
    report = await run(time_env, settings, recorded, write_journey(tmp_path, NUDGE))
    assert (report.considered, report.entered, report.runs) == (6, 5, 5)
    assert report.not_entered == {NOT_ENTERED: 1}
    assert report.events == 8  # of the customers considered: not c6's page view
    assert report.messages == {"email": {"reminder": 5}, "sms": {"reminder": 2}}
    assert report.skipped == {NO_PHONE: 2}
    assert report.deferrals == {"quiet hours": 1, "frequency cap": 0}
    assert report.outcomes == {"ended": 4, "converted": 1}
    assert (report.conversions, report.exits) == (1, 0)
    data = report.as_json()
    assert data["conversion_rate"] == 0.2
    assert data["customers"]["entered_rate"] == round(5 / 6, 4)
    assert report.note is None


async def test_an_extra_text_step_shows_more_sms(time_env, settings, recorded, tmp_path):
    edited = write_journey(tmp_path, NUDGE_WITH_TEXT, "edited")
    report = await run(time_env, settings, recorded, edited)
    # c1, c3 and c4 get the new text; c4's waits out the night, c5 and c8 have no phone.
    assert report.messages == {"sms": {"reminder": 5}, "email": {"reminder": 5}}
    assert report.deferrals["quiet hours"] == 1
    assert report.skipped == {NO_PHONE: 4}
    assert report.outcomes == {"ended": 4, "converted": 1}


@pytest.mark.clock_sensitive
async def test_quiet_hours_follow_the_recorded_time_of_day(time_env, settings, tmp_path, db):
    """The period is shifted by whole days: a text due at 22:00 then is due at 22:00 now."""
    record(
        db,
        [{"id": "late", "email": "late@example.com", "phone": "+15550009"}],
        [("late", "cart_abandoned", at(3, "21:00"), {"cart_total": 99})],
    )
    report = await run(time_env, settings, db, write_journey(tmp_path, NUDGE))
    assert report.deferrals == {"quiet hours": 1, "frequency cap": 0}
    assert report.messages == {"email": {"reminder": 1}, "sms": {"reminder": 1}}


async def test_limit_customers_takes_the_first_entrants(time_env, settings, recorded, tmp_path):
    report = await backtest(
        write_journey(tmp_path, NUDGE),
        settings=settings,
        source=recorded,
        since=SINCE,
        until=UNTIL,
        env=time_env,
        limit_customers=2,
    )
    assert (report.considered, report.entered) == (2, 1)  # c1 and c2
    assert report.not_entered == {NOT_ENTERED: 1}


async def test_a_period_without_entries_reports_zeros(time_env, settings, db, tmp_path):
    report = await run(time_env, settings, db, write_journey(tmp_path, NUDGE))
    assert (report.considered, report.entered, report.runs, report.message_count) == (0, 0, 0, 0)
    assert report.as_json()["conversion_rate"] is None


async def test_a_segment_journey_is_refused_with_what_to_use_instead(
    time_env, settings, db, tmp_path
):
    journey = write_journey(
        tmp_path,
        """
        id: nudge
        name: Lapsed
        entry:
          segment: "count('order_placed') == 0"
          every: 1d
        steps:
          - {id: done, end: true}
        """,
    )
    with pytest.raises(BacktestError, match="journeyman broadcast nudge --dry-run"):
        await run(time_env, settings, db, journey)


def test_day_shift_is_whole_days_and_never_backwards():
    now = datetime(2026, 5, 1, 15, 30, tzinfo=UTC)
    shift = day_shift(SINCE, now)
    assert shift % timedelta(days=1) == timedelta(0)
    assert now <= SINCE + shift < now + timedelta(days=1)
    assert day_shift(now + timedelta(hours=1), now) == timedelta(0)


def test_moments_are_durations_before_now_or_dates():
    now = datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert parse_moment("7d", now) == now - timedelta(days=7)
    assert parse_moment("2026-04-01", now) == datetime(2026, 4, 1, tzinfo=UTC)
    assert parse_moment("2026-04-01T10:00+02:00", now) == datetime(2026, 4, 1, 8, tzinfo=UTC)
    with pytest.raises(BacktestError, match="neither a duration"):
        parse_moment("last week", now)


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYS_DIR", str(tmp_path / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/journeyman.db")
    monkeypatch.setenv("JOURNEYMAN_TIMEZONE", "UTC")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_backtest_command_prints_the_report(cli, tmp_path):
    write_journey(tmp_path, NUDGE)
    source = Database(f"sqlite:///{tmp_path}/journeyman.db")
    source.create_all()
    record(
        source,
        [{"id": "c1", "email": "c1@example.com", "phone": "+15550001"}],
        [("c1", "cart_abandoned", datetime.now(UTC) - timedelta(days=2), {"cart_total": 50})],
    )
    source.dispose()
    result = cli.invoke(app, ["backtest", "nudge", "--since", "7d"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "backtest nudge (Cart nudge) version" in result.output
    assert "email  reminder  1" in result.output
    assert "sms    reminder  1" in result.output
    assert "conversions: 0 of 1 runs (0.0%)" in result.output


def test_backtest_command_compares_an_edited_copy_as_json(cli, tmp_path):
    import json

    write_journey(tmp_path, NUDGE)
    edited = write_journey(tmp_path, NUDGE_WITH_TEXT, "edited")
    source = Database(f"sqlite:///{tmp_path}/journeyman.db")
    source.create_all()
    record(
        source,
        [{"id": "c1", "email": "c1@example.com", "phone": "+15550001"}],
        [("c1", "cart_abandoned", datetime.now(UTC) - timedelta(days=2), {"cart_total": 50})],
    )
    source.dispose()
    result = cli.invoke(
        app,
        ["backtest", "nudge", "--version-file", str(edited), "--since", "7d", "--json"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["messages"]["by_channel"]["sms"]["total"] == 2


def test_backtest_command_refuses_a_bad_period(cli, tmp_path):
    write_journey(tmp_path, NUDGE)
    result = cli.invoke(app, ["backtest", "nudge", "--since", "yesterday"])
    assert result.exit_code == 1
    assert "neither a duration" in result.output
