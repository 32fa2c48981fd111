"""Publishing: the database says what is live, `deploy` shows what changes and publishes
all or nothing, `rollback` and `releases`, and processes follow a new release."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.dsl.compiler import compile_dir
from journeyman.events.routing import Catalog, Skipped
from journeyman.operations import releases
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import JourneyRun
from tests.waiting import eventually

NUDGE = """\
id: nudge
name: Nudge
entry: {event: cart_abandoned}
steps:
  - id: wait_a_bit
    wait: 1h
  - id: remind
    send: {template: nudge, channels: [email]}
"""
PICKUP = """\
id: pickup
name: Pickup
entry: {event: order_ready}
steps:
  - id: tell
    send: {template: pickup, channels: [email]}
"""
TEMPLATE = "{% block subject %}Your cart{% endblock %}<p>Come back, {{ profile.id }}</p>\n"


def project(root: Path) -> tuple[Path, Path]:
    journeys, templates = root / "journeys", root / "templates"
    journeys.mkdir(exist_ok=True)
    (journeys / "nudge.yaml").write_text(NUDGE)
    (journeys / "pickup.yaml").write_text(PICKUP)
    for name in ("nudge", "pickup"):
        (templates / name).mkdir(parents=True, exist_ok=True)
        (templates / name / "email.html").write_text(TEMPLATE.replace("cart", name))
    return journeys, templates


def compiled(root: Path) -> list:  # type: ignore[type-arg]
    return compile_dir(root / "journeys", root / "templates")


def live(db: Database) -> dict[str, tuple[str, bool]]:
    with db.session() as session:
        return {j: (r.version, r.enabled) for j, r in releases.live_releases(session).items()}


def test_a_first_publish_makes_every_journey_live_in_one_release_log(
    db: Database, tmp_path: Path
) -> None:
    project(tmp_path)
    changes = releases.plan_deploy(db, compiled(tmp_path))

    assert [c.headline().split(",")[0] for c in changes] == [
        "nudge: new journey",
        "pickup: new journey",
    ]
    releases.publish(db, changes, by="ana", message="launch")

    versions = {c.plan.journey.id: c.plan.version for c in compiled(tmp_path)}
    assert live(db) == {j: (v, True) for j, v in versions.items()}
    assert [(r.journey_id, r.by, r.message) for r in releases.history(db)] == [
        ("pickup", "ana", "launch"),
        ("nudge", "ana", "launch"),
    ]
    assert releases.plan_deploy(db, compiled(tmp_path)) == []
    served = Catalog(releases.live_compiled(db))
    assert served.compiled["nudge"].templates["nudge/email.html"].startswith("{% block")


def test_a_template_edit_is_a_change_named_in_words_with_the_runs_under_way(
    db: Database, tmp_path: Path
) -> None:
    project(tmp_path)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    old = live(db)["nudge"][0]
    with db.session() as session:
        session.add(_run("r1", old))
    (tmp_path / "templates" / "nudge" / "email.html").write_text(
        TEMPLATE.replace("Come back", "We kept it for you")
    )

    (change,) = releases.plan_deploy(db, compiled(tmp_path))

    assert change.headline() == f"nudge: version {old} → {change.new_version}"
    assert change.lines == [
        "",
        "templates",
        '  ~ nudge/email.html: 1 line changed (now: "{% block subject %}Your cart'
        '{% endblock %}<p>We kept it for ")',
    ]
    assert change.running == 1
    text = releases.change_lines([change])
    assert f"  runs under way on {old}: 1; they finish the version they entered" in text


def test_removed_steps_and_the_runs_waiting_there_are_counted(db: Database, tmp_path: Path) -> None:
    project(tmp_path)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    old = live(db)["nudge"][0]
    with db.session() as session:
        session.add_all([_run("r1", old), _run("r2", old)])
    (tmp_path / "journeys" / "nudge.yaml").write_text(
        NUDGE.replace("  - id: wait_a_bit\n    wait: 1h\n", "")
    )
    (change,) = releases.plan_deploy(db, compiled(tmp_path))

    async def steps(journey_id: str, version: str) -> dict[str, int]:
        assert (journey_id, version) == ("nudge", old)
        return {"wait_a_bit": 2}

    import asyncio

    asyncio.run(releases.count_at_removed([change], steps))

    assert "steps removed" in change.lines
    assert change.removed_steps == ["wait_a_bit"]
    assert (
        f"  runs under way on {old}: 2, 2 waiting at steps this removes (wait_a_bit 2); "
        "they finish the version they entered"
    ) in releases.change_lines([change])


def test_a_deleted_file_switches_the_journey_off_and_keeps_its_history(
    db: Database, tmp_path: Path
) -> None:
    project(tmp_path)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    version = live(db)["pickup"][0]
    (tmp_path / "journeys" / "pickup.yaml").unlink()

    (change,) = releases.plan_deploy(db, compiled(tmp_path))
    releases.publish(db, [change], by="ana", message="pickup retired")

    assert change.headline() == "pickup: switched off (file deleted); takes no new entries"
    assert live(db)["pickup"] == (version, False)
    assert "pickup" not in Catalog(releases.live_compiled(db)).compiled
    assert Catalog(releases.live_compiled(db)).entered_by("order_ready") == []
    assert releases.plan_deploy(db, compiled(tmp_path)) == []  # off stays off
    # Putting the file back switches it on again, same version.
    project(tmp_path)
    (again,) = releases.plan_deploy(db, compiled(tmp_path))
    assert again.headline() == f"pickup: switched on again, version {version}"


def test_the_live_catalog_hears_what_any_version_may_react_to_and_nothing_else(
    db: Database, tmp_path: Path
) -> None:
    """Intake stores an event no journey hears as handed over (`Catalog.hears`): the
    catalog must hear every name the router could act on, old versions' waits included."""
    project(tmp_path)
    waiting = NUDGE.replace(
        "  - id: wait_a_bit\n    wait: 1h\n",
        "  - id: wait_a_bit\n    wait_for: {event: cart_viewed, timeout: 1h}\n",
    )
    (tmp_path / "journeys" / "nudge.yaml").write_text(waiting)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    assert releases.live_catalog(db).hears("cart_viewed")
    # Version 2 waits for nothing and has a goal counted for 2 days after a run ends;
    # runs of version 1 may still wait for cart_viewed.
    goal = "goal: {event: order_completed, within: 2d}\n"
    (tmp_path / "journeys" / "nudge.yaml").write_text(NUDGE.replace("steps:\n", goal + "steps:\n"))
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    # Pickup switched off: its entry event is still counted as "journey off".
    (tmp_path / "journeys" / "pickup.yaml").unlink()
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")

    catalog = releases.live_catalog(db)
    assert "wait_for" not in (tmp_path / "journeys" / "nudge.yaml").read_text()
    for name in ("cart_abandoned", "cart_viewed", "order_completed", "order_ready"):
        assert catalog.hears(name), name
    for name in ("page_viewed", "product_viewed", None):
        assert not catalog.hears(name), name
    # A catalog that does not know every version's waits hears everything.
    assert Catalog(releases.live_compiled(db)).hears("page_viewed")


def test_rollback_makes_the_version_before_live_again_and_says_when_it_cannot(
    db: Database, tmp_path: Path
) -> None:
    project(tmp_path)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    first = live(db)["nudge"][0]
    (tmp_path / "journeys" / "nudge.yaml").write_text(NUDGE.replace("1h", "2h"))
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    second = live(db)["nudge"][0]

    made = releases.rollback(db, "nudge", None, by="bo")

    assert (made.version, made.by, made.message) == (first, "bo", f"rollback from {second}")
    assert live(db)["nudge"] == (first, True)
    with pytest.raises(releases.ReleaseError, match="is already live"):
        releases.rollback(db, "nudge", first, by="bo")
    releases.rollback(db, "nudge", second, by="bo")
    assert live(db)["nudge"] == (second, True)
    with pytest.raises(releases.ReleaseError, match="no version 'nope' of nudge"):
        releases.rollback(db, "nudge", "nope", by="bo")
    with pytest.raises(releases.ReleaseError, match="never published"):
        releases.rollback(db, "unknown", None, by="bo")
    with pytest.raises(releases.ReleaseError, match="no version before"):
        releases.rollback(db, "pickup", None, by="bo")


def test_a_start_publishes_only_on_an_empty_database_and_names_files_that_differ(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project(tmp_path)
    served = releases.on_start(db, compiled(tmp_path), who="first start (api)")
    first = live(db)["nudge"][0]
    assert set(served.compiled) == {"nudge", "pickup"}
    assert {r.message for r in releases.history(db)} == {"first start"}

    # An old (or newer) image restarted with other files: served is the live release.
    (tmp_path / "journeys" / "nudge.yaml").write_text(NUDGE.replace("1h", "3h"))
    with caplog.at_level(logging.WARNING, logger="journeyman.operations.releases"):
        served = releases.on_start(db, compiled(tmp_path), who="first start (worker)")

    assert live(db)["nudge"] == (first, True)
    assert served.compiled["nudge"].plan.version == first
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "journey files differ from the live release (nudge): serving the live release; "
        "`journeyman deploy` publishes the files"
    ]


async def test_a_follower_hands_over_each_new_release_once(db: Database, tmp_path: Path) -> None:
    project(tmp_path)
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    seen: list[dict[str, str]] = []

    async def apply(live_now: Catalog) -> None:
        seen.append({p.journey.id: p.version for p in live_now.plans})

    follower = releases.Follower(db, apply, interval=0.05)
    async with follower.running():
        (tmp_path / "journeys" / "nudge.yaml").write_text(NUDGE.replace("1h", "2h"))
        releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
        new = live(db)["nudge"][0]
        await eventually(lambda: seen, what="the follower applies the release")
    assert seen == [{"nudge": new, "pickup": live(db)["pickup"][0]}]
    assert not await follower.check()  # nothing new: nothing applied


# -- the commands ----------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    # Nothing answers here: deploy publishes anyway and says the schedules wait.
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.delenv("JOURNEYMAN_PAYLOAD_KEY", raising=False)
    project(tmp_path)
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def run(cli: CliRunner, *args: str):  # type: ignore[no-untyped-def]
    get_settings.cache_clear()
    return cli.invoke(app, list(args), catch_exceptions=False)


def test_deploy_dry_run_publishes_nothing_and_deploy_publishes_with_who_and_why(
    cli: CliRunner, tmp_path: Path
) -> None:
    dry = run(cli, "deploy", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "nudge: new journey, version " in dry.stdout
    assert dry.stdout.rstrip().endswith("dry run: nothing published")
    assert run(cli, "releases").stdout == "no releases yet\n"

    done = run(cli, "deploy", "--message", "launch", "--by", "ana")
    assert done.exit_code == 0, done.output
    assert "published: 2 journeys live (release 2)" in done.stdout
    # Temporal is down: published all the same; the workers sync schedules on release.
    assert done.stdout.rstrip().endswith("the workers sync them")

    (tmp_path / "templates" / "nudge" / "email.html").write_text(TEMPLATE.replace("<p>", "<p>Hi! "))
    dry = run(cli, "deploy", "--dry-run")
    assert "  ~ nudge/email.html: 1 line changed" in dry.stdout
    assert "pickup" not in dry.stdout

    log = run(cli, "releases", "nudge").stdout.splitlines()
    assert len(log) == 1 and "  nudge  " in log[0] and log[0].endswith("by ana  — launch")


def test_a_journey_with_errors_stops_the_whole_deploy(cli: CliRunner, tmp_path: Path) -> None:
    run(cli, "deploy")
    before = run(cli, "releases", "--json").stdout
    (tmp_path / "templates" / "nudge" / "email.html").write_text(TEMPLATE.replace("<p>", "<p>Hi "))
    (tmp_path / "journeys" / "pickup.yaml").write_text(PICKUP.replace("send:", "sned:"))

    broken = run(cli, "deploy")

    assert broken.exit_code == 1
    assert "journeys/pickup.yaml:" in broken.stderr
    assert "nothing published: fix the errors above, then deploy again" in broken.stderr
    assert run(cli, "releases", "--json").stdout == before


def test_rollback_and_releases_from_the_command_line(cli: CliRunner, tmp_path: Path) -> None:
    run(cli, "deploy")
    (tmp_path / "journeys" / "nudge.yaml").write_text(NUDGE.replace("1h", "2h"))
    run(cli, "deploy", "-m", "longer wait")

    back = run(cli, "rollback", "nudge", "--by", "bo", "-m", "too slow")
    again = run(cli, "rollback", "nudge", "nope")

    assert back.exit_code == 0, back.output
    assert back.stdout.startswith("nudge: version ")
    assert again.exit_code == 1 and "no version 'nope' of nudge" in again.stderr
    log = run(cli, "releases", "nudge").stdout.splitlines()
    assert [line.rsplit("  ", 1)[-1] for line in log] == [
        "— too slow",
        "— longer wait",
        "by " + releases.default_author(),
    ]


def test_diff_names_a_template_only_edit(cli: CliRunner, tmp_path: Path) -> None:
    run(cli, "deploy")
    version = run(cli, "releases", "nudge", "--json").stdout.split('"version": "')[1][:12]
    (tmp_path / "templates" / "nudge" / "email.html").write_text(
        TEMPLATE.replace("Your cart", "Still thinking?")
    )

    result = run(cli, "diff", f"nudge@{version}", "nudge")

    assert result.exit_code == 0, result.output
    assert "no changes" not in result.stdout
    assert "templates" in result.stdout.splitlines()
    assert '  ~ nudge/email.html: 1 line changed (now: "{% block subject %}Still thinking?' in (
        result.stdout
    )


def _run(run_id: str, version: str) -> JourneyRun:
    from datetime import UTC, datetime

    return JourneyRun(
        run_id=run_id,
        workflow_id=f"nudge/{run_id}",
        journey_id="nudge",
        version=version,
        customer_id=run_id,
        entry_key="",
        status="running",
        started_at=datetime.now(UTC),
    )


async def test_an_entry_a_switched_off_journey_passes_by_is_counted_as_journey_off(
    db: Database, tmp_path: Path
) -> None:
    from journeyman.contracts import CustomerEvent
    from journeyman.events.routing import Router
    from journeyman.insight.stats import journey_stats

    project(tmp_path)
    (tmp_path / "journeys" / "pickup.yaml").write_text(
        PICKUP.replace(
            "entry: {event: order_ready}",
            "entry: {event: order_ready, when: \"event.properties.store == 'north'\"}",
        )
    )
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    version = live(db)["pickup"][0]
    (tmp_path / "journeys" / "pickup.yaml").unlink()
    releases.publish(db, releases.plan_deploy(db, compiled(tmp_path)), by="ana")
    # No entry is made, so Temporal is never asked: the router needs no client here.
    router = Router(None, db, releases.live_catalog(db), "tq")  # type: ignore[arg-type]

    def ready(message_id: str, store: str) -> CustomerEvent:
        return CustomerEvent(message_id, "order_ready", {"store": store})

    passed = await router.route("c1", ready("m1", "north"))
    again = await router.route("c1", ready("m1", "north"))  # handed over twice: counted once
    other = await router.route("c2", ready("m2", "south"))  # would not have entered

    assert passed.skipped == again.skipped == [Skipped("pickup", "journey off")]
    assert passed.entered == [] and other.skipped == [] and other.entered == []
    with db.session() as session:
        report = journey_stats(session, "pickup")
    assert report.overall.journey_off == 1
    assert [(v.version, v.journey_off) for v in report.versions] == [(version, 1)]


def test_validate_and_deploy_warn_of_two_journeys_one_event_starts(
    cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "journeys" / "nudge_again.yaml").write_text(
        NUDGE.replace("id: nudge", "id: nudge_again")
    )
    expected = "journeys nudge and nudge_again both enter on `cart_abandoned`"

    checked = run(cli, "validate")
    deployed = run(cli, "deploy")

    assert checked.exit_code == 0 and f"journeys/nudge_again.yaml:3:1: warning: {expected}" in (
        checked.stdout
    )
    assert run(cli, "validate", "--strict").exit_code == 1
    assert deployed.exit_code == 0 and expected in deployed.stderr
    assert "published: 3 journeys live" in deployed.stdout


def test_files_with_errors_stop_a_start_only_on_an_empty_database(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from journeyman.dsl import JourneyError

    journeys, templates = project(tmp_path)
    (journeys / "broken.yaml").write_text("id: broken\nname: [unclosed\n")
    with pytest.raises(JourneyError):
        releases.start_catalog(db, journeys, templates, "first start (api)")
    (journeys / "broken.yaml").unlink()
    releases.start_catalog(db, journeys, templates, "first start (api)")
    (journeys / "broken.yaml").write_text("id: broken\nname: [unclosed\n")

    with caplog.at_level(logging.WARNING, logger="journeyman.operations.releases"):
        served = releases.start_catalog(db, journeys, templates, "first start (worker)")

    assert set(served.compiled) == {"nudge", "pickup"}
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("journey files have errors (")
    assert (
        warning.endswith("): serving the live release")
        and "broken.yaml:3:1: YAML syntax" in warning
    )


def test_what_dev_keeps_is_found_by_a_command_and_given_back_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json
    import os

    from journeyman.operations import devstate

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("JOURNEYMAN_PAYLOAD_KEY", raising=False)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    get_settings.cache_clear()
    (tmp_path / ".journeyman").mkdir()
    (tmp_path / ".journeyman" / "payload_key").write_text("a2V5\n")
    state = {"pid": os.getpid(), "temporal_address": "localhost:17233", "api_url": None}
    (tmp_path / ".journeyman" / "dev.json").write_text(json.dumps(state))

    before = devstate.apply()
    found = get_settings()
    devstate.restore(before)

    assert found.payload_key is not None and found.payload_key.get_secret_value() == "a2V5"
    assert found.temporal_address == "localhost:17233"
    assert "JOURNEYMAN_PAYLOAD_KEY" not in os.environ and get_settings().payload_key is None
    # A dev that is gone leaves no address to use; a setting given wins over the files.
    (tmp_path / ".journeyman" / "dev.json").write_text(json.dumps({**state, "pid": 2**22 + 7}))
    monkeypatch.setenv("JOURNEYMAN_PAYLOAD_KEY", "given")
    get_settings.cache_clear()
    before = devstate.apply()
    assert get_settings().temporal_address is None
    assert get_settings().payload_key.get_secret_value() == "given"  # type: ignore[union-attr]
    devstate.restore(before)
    get_settings.cache_clear()
