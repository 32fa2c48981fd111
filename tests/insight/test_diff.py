"""`journeyman.insight.diff`: what changes between two versions of a journey, and whom
it concerns."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.dsl.compiler import compile_file
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.insight.diff import FINISH_NOTE, DiffError, diff_plans, live_runs, load_version
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun
from tests.insight.test_backtest import NUDGE, NUDGE_WITH_TEXT, write_journey


def plan_of(tmp_path: Path, text: str, folder: str = "journeys") -> Plan:
    return compile_file(write_journey(tmp_path, text, folder), tmp_path / "templates").plan


def edited(tmp_path: Path, *replacements: tuple[str, str]) -> Plan:
    text = NUDGE
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    return plan_of(tmp_path, text, "edited")


def test_a_new_step_is_added_and_its_predecessor_goes_there(tmp_path):
    result = diff_plans(plan_of(tmp_path, NUDGE), plan_of(tmp_path, NUDGE_WITH_TEXT, "edited"))
    assert result.added == [("text_now", "send reminder via [sms]")]
    assert result.removed == []
    assert result.changed == {"remind": ["then wait_a_day → text_now"]}
    assert result.journey == []


def test_a_removed_step_is_listed_with_what_it_did(tmp_path):
    new = edited(tmp_path, ("  - id: nudge\n    send: {template: reminder, channels: [sms]}\n", ""))
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.removed == [("nudge", "send reminder via [sms]")]
    assert result.changed == {"wait_a_day": ["then nudge → done"]}


def test_changed_steps_say_what_changed(tmp_path):
    new = edited(
        tmp_path,
        ("wait: 1h", "wait: 2h"),
        ("channels: [sms]}", "channels: [sms, email]}\n    goto: done"),
    )
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.changed == {
        "pause": ["wait 1h → 2h"],
        "nudge": ["send channels [sms] → [sms, email]", "goto (next step) → done"],
    }


def test_a_step_with_another_action_shows_both(tmp_path):
    new = edited(tmp_path, ("wait: 1h", 'wait: {until: "09:00"}'))
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.changed == {"pause": ["wait 1h → until 09:00"]}
    new = edited(tmp_path, ("  - id: done\n    end: true", "  - id: done\n    wait: 1h"))
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.changed == {"done": ["end → wait 1h"]}


def test_a_wait_at_and_an_on_error_are_changes_too(tmp_path):
    new = edited(
        tmp_path, ("wait: 1d", 'wait: {at: "journey.entered_at + days(1)"}\n    on_error: done')
    )
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.changed == {
        "wait_a_day": [
            "wait 1d → at journey.entered_at + days(1)",
            "on_error (outcome error) → done",
        ]
    }


def test_entry_goal_and_settings_changes_are_listed(tmp_path):
    new = edited(
        tmp_path,
        (">= 20", ">= 30"),
        ("event: order_placed", "event: order_completed"),
        ('quiet_hours: "21:00-08:00"', 'quiet_hours: "22:00-07:00", frequency_cap: "2 per 1d"'),
    )
    result = diff_plans(plan_of(tmp_path, NUDGE), new)
    assert result.journey == [
        "entry when event.properties.cart_total >= 20 → event.properties.cart_total >= 30",
        "goal event order_placed → order_completed",
        "settings quiet_hours 21:00-08:00 → 22:00-07:00",
        "settings frequency_cap (none) → 2 per 1d",
    ]
    assert result.added == result.removed == []


def test_the_same_file_has_no_changes(tmp_path):
    plan = plan_of(tmp_path, NUDGE)
    result = diff_plans(plan, plan)
    assert result.unchanged
    assert "same version" in result.lines()


# -- versions from the database -------------------------------------------------------


def test_journey_at_version_reads_the_registered_plan(tmp_path, db):
    path = write_journey(tmp_path, NUDGE)
    compiled = compile_file(path, tmp_path / "templates")
    Catalog([compiled]).register(db)
    dirs = {"journeys_dir": tmp_path / "journeys", "templates_dir": tmp_path / "templates"}
    plan, source = load_version(f"nudge@{compiled.plan.version}", db=db, **dirs)
    assert (plan, source) == (compiled.plan, "registered")
    plan, source = load_version("nudge", db=db, **dirs)
    assert source == str(path)
    with pytest.raises(DiffError, match=f"no version 'v0' of journey 'nudge'.*{plan.version}"):
        load_version("nudge@v0", db=db, **dirs)


# -- live runs ------------------------------------------------------------------------


def add_runs(db: Database, plan: Plan, count: int, status: str = "running") -> None:
    with db.session() as session:
        for n in range(count):
            session.add(
                JourneyRun(
                    run_id=f"{status}-{plan.version}-{n}",
                    workflow_id=f"nudge/c{n}",
                    journey_id="nudge",
                    version=plan.version,
                    customer_id=f"c{n}",
                    status=status,
                    started_at=datetime.now(UTC),
                )
            )


async def test_live_runs_at_removed_steps_come_from_visibility(tmp_path, db):
    old = plan_of(tmp_path, NUDGE)
    add_runs(db, old, 5)
    add_runs(db, old, 3, status="completed")
    asked = []

    async def visibility(journey_id: str, version: str) -> dict[str, int] | None:
        asked.append((journey_id, version))
        return {"pause": 1, "nudge": 2, "wait_a_day": 2}

    live = await live_runs(db, old, ["nudge", "gone"], visibility)
    assert (live.running, live.at_removed) == (5, {"nudge": 2, "gone": 0})
    assert asked == [("nudge", old.version)]


async def test_live_runs_by_step_are_unknown_without_visibility(tmp_path, db):
    old = plan_of(tmp_path, NUDGE)
    add_runs(db, old, 2)

    async def unreachable(journey_id: str, version: str) -> dict[str, int] | None:
        return None

    result = diff_plans(old, edited(tmp_path, ("  - id: nudge\n", "  - id: nudge_sms\n")))
    result.live = await live_runs(db, old, [s for s, _ in result.removed], unreachable)
    assert (result.live.running, result.live.at_removed) == (2, None)
    lines = result.lines()
    assert f"live runs of version {old.version}: 2 running" in lines
    assert any("unknown (Temporal's visibility cannot be reached)" in line for line in lines)
    assert f"  note: {FINISH_NOTE}" in lines


async def test_visibility_is_not_asked_when_no_run_is_live(tmp_path, db):
    async def never(journey_id: str, version: str) -> dict[str, int] | None:
        raise AssertionError("asked")

    live = await live_runs(db, plan_of(tmp_path, NUDGE), ["nudge"], never)
    assert (live.running, live.by_step) == (0, None)


# -- the command ----------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEYS_DIR", str(tmp_path / "journeys"))
    monkeypatch.setenv("TEMPLATES_DIR", str(tmp_path / "templates"))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/journeyman.db")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_diff_command_compares_a_registered_version_with_the_file(cli, tmp_path, monkeypatch):
    old = compile_file(write_journey(tmp_path, NUDGE), tmp_path / "templates")
    db = Database(f"sqlite:///{tmp_path}/journeyman.db")
    db.create_all()
    Catalog([old]).register(db)
    add_runs(db, old.plan, 4)
    db.dispose()
    write_journey(tmp_path, NUDGE.replace("  - id: nudge\n", "  - id: nudge_sms\n"))

    async def visibility(settings, journey_id, version):
        return {"nudge": 3, "pause": 1}

    monkeypatch.setattr("journeyman.cli.journeys._running_steps", visibility)
    result = cli.invoke(app, ["diff", f"nudge@{old.plan.version}", "nudge"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"nudge: version {old.plan.version} (registered) → " in out
    assert "  + nudge_sms: send reminder via [sms]" in out
    assert "  - nudge: send reminder via [sms]" in out
    assert "  ~ wait_a_day: then nudge → nudge_sms" in out
    assert f"live runs of version {old.plan.version}: 4 running" in out
    assert "waiting at steps the new version removes: 3 (nudge 3)" in out
    assert "customers finish the version they entered" in out


def test_diff_command_as_json(cli, tmp_path):
    old = write_journey(tmp_path, NUDGE)
    new = write_journey(tmp_path, NUDGE.replace("wait: 1h", "wait: 2h"), "edited")
    result = cli.invoke(app, ["diff", str(old), str(new), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["changed"] == {"pause": ["wait 1h → 2h"]}
    assert data["live"]["running"] == 0


def test_diff_command_names_an_unknown_version(cli, tmp_path):
    write_journey(tmp_path, NUDGE)
    result = cli.invoke(app, ["diff", "nudge@abc", "nudge"])
    assert result.exit_code == 1
    assert "no version 'abc' of journey 'nudge' (none is registered)" in result.output
