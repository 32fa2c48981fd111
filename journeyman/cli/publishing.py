"""Publishing and audiences: `deploy`, `rollback`, `releases`, `broadcast`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from journeyman.dsl import JourneyError
from journeyman.dsl.overlap import overlap_warnings
from journeyman.dsl.schedule import describe_every
from journeyman.settings import Settings, get_settings

if TYPE_CHECKING:
    from journeyman.dsl.plan import Plan
    from journeyman.events.catalog import Catalog
from journeyman.cli.common import (
    _count,
    _fail,
    _migrated,
    _problems,
    _running_steps,
    _uses_temporal,
    app,
    reports_problems,
)
from journeyman.cli.controls import _control, _operator_client, _served

# -- publishing and audiences ----------------------------------------------------------


def _catalog(settings: Settings) -> Any:
    from journeyman.events.catalog import Catalog

    return Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)


@app.command()
def deploy(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would change; publish nothing.")
    ] = False,
    message: Annotated[
        str, typer.Option("--message", "-m", help="Why: kept in the publish log.")
    ] = "",
    by: Annotated[str | None, typer.Option(help="Who publishes (default: the OS user).")] = None,
) -> None:
    """Publish the journey files: compile them all, show per journey what changes (steps
    and templates, in words) and how many runs are under way, then make the new versions
    live in one transaction. A journey with errors stops the whole deploy (nothing
    changes). Every API process and worker follows within seconds."""
    from journeyman.dsl.compiler import compile_dir
    from journeyman.operations import releases
    from journeyman.storage.db import Database

    settings = get_settings()
    _uses_temporal()
    try:
        compiled = compile_dir(settings.journeys_dir, settings.templates_dir)
    except JourneyError as exc:
        _problems(exc.problems)
        _fail("nothing published: fix the errors above, then deploy again")
    for warning in overlap_warnings(compiled):
        typer.echo(str(warning), err=True)
    db = Database(settings.database_url)
    try:
        _migrated(db)
        changes = releases.plan_deploy(db, compiled)

        async def steps(journey_id: str, version: str) -> dict[str, int] | None:
            return await _running_steps(settings, journey_id, version)

        asyncio.run(releases.count_at_removed(changes, steps))
        for line in releases.change_lines(changes):
            typer.echo(line)
        if dry_run:
            typer.echo("dry run: nothing published")
            return
        if changes:
            made = releases.publish(db, changes, by or releases.default_author(), message)
            live = [c for c in changes if c.enabled]
            off = len(changes) - len(live)
            typer.echo(
                f"published: {_many(len(live), 'journey')} live"
                + (f", {off} switched off" if off else "")
                + f" (release {made[-1].id})"
            )
        catalog_plans = [c.plan for c in releases.live_compiled(db)]
    finally:
        db.dispose()
    # Published: what follows is the schedules, which the workers also sync on release.
    for line in asyncio.run(_sync_after_release(settings, catalog_plans)):
        typer.echo(line)


async def _sync_after_release(settings: Settings, plans: list[Any]) -> list[str]:
    """The segment schedules made to match the live release now; the workers do it too
    within seconds, so a Temporal that cannot be reached is a note, not a failure."""
    from temporalio.service import RPCError

    from journeyman.audiences import schedules
    from journeyman.platform.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=10)
        report = await schedules.sync(
            client, plans, task_queue=settings.task_queue, timezone=settings.default_timezone
        )
    except (RuntimeError, TimeoutError, RPCError) as exc:
        return [f"note: segment schedules not synced now ({exc}); the workers sync them"]
    except Exception as exc:
        from journeyman.operations import devstate

        if not devstate.is_undecodable(exc):
            raise
        return [f"note: segment schedules not synced now: {devstate.missing_key_message()}"]
    return report.lines()


@app.command()
def rollback(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    version: Annotated[
        str | None, typer.Argument(help="The version to make live (default: the one before).")
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Why.")] = "",
    by: Annotated[str | None, typer.Option(help="Who (default: the OS user).")] = None,
) -> None:
    """Make an earlier version of a journey live again (new entries take it; runs under
    way finish the version they entered)."""
    from journeyman.operations import releases
    from journeyman.storage.db import Database

    settings = get_settings()
    db = Database(settings.database_url)
    try:
        _migrated(db)
        release = releases.rollback(db, journey, version, by or releases.default_author(), message)
        plans = [c.plan for c in releases.live_compiled(db)]
    except releases.ReleaseError as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"{journey}: version {release.version} live (release {release.id})")
    _uses_temporal()
    for line in asyncio.run(_sync_after_release(settings, plans)):
        typer.echo(line)


@app.command("releases")
def releases_command(
    journey: Annotated[str | None, typer.Argument(help="Only this journey.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the newest.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
) -> None:
    """The publish log, newest first: when, which version, live or off, by whom, why."""
    from journeyman.operations import releases
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        _migrated(db)
        rows = releases.history(db, journey, limit)
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps([releases.release_json(r) for r in rows], indent=2))
        return
    if not rows:
        typer.echo("no releases" + (f" of {journey}" if journey else "") + " yet")
    for row in rows:
        typer.echo(releases.release_line(row))


def _live_plan(db: Any, plan: Any) -> Any:
    """The live version of the journey of `plan` (the files' version where nothing was
    ever published); refused when the journey is switched off."""
    live = _served(db, None)
    if live is None:
        return plan
    compiled = live.compiled.get(plan.journey.id)
    if compiled is None:
        _fail(
            f"{plan.journey.id} is not live (switched off, or never deployed): "
            "`journeyman deploy` it first"
        )
    return compiled.plan


def _entry_text(plan: Any) -> str:
    entry = plan.journey.entry
    if entry.segment is None:
        return f"entered on {entry.event}"
    if entry.once_at is not None:
        return f"broadcast once at {entry.once_at.isoformat()}"
    return f"segment {describe_every(str(entry.every))}"


@app.command()
@reports_problems
def broadcast(
    journey: Annotated[str, typer.Argument(help="The id of a journey entered by a segment.")],
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Count who would enter now and on which channels; send nothing."
        ),
    ] = False,
    now: Annotated[
        bool,
        typer.Option("--now", help="Enter the segment's customers now, and wait until done."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The dry run as JSON.")] = False,
) -> None:
    """A segment journey's audience: its schedule and recent checks; with --dry-run, who
    would enter and how they would be reached, before anything is sent; with --now,
    enter them now."""
    from journeyman.audiences import segments
    from journeyman.storage.db import Database

    if dry_run and now:
        _fail("choose --dry-run (send nothing) or --now (enter them now), not both")
    settings = get_settings()
    catalog = _catalog(settings)
    plan = _segment_plan(catalog, journey, settings)
    db = Database(settings.database_url)
    try:
        _migrated(db)
        catalog.register(db)
        if dry_run:
            report = segments.dry_run(
                db, plan, datetime.now(UTC), default_timezone=settings.default_timezone
            )
            _print_dry_run(report, as_json)
            return
        _uses_temporal()
        if now:
            plan = _live_plan(db, plan)
            result = _control(lambda: _broadcast_now(settings, plan))
            typer.echo(
                f"{journey}: {_many(result.evaluated, 'customer')} evaluated, "
                f"{result.matched:,} matched, {result.entered:,} entered ({result.status})"
            )
            for reason, count in sorted(result.skipped.items()):
                typer.echo(f"  not entered: {reason}: {count:,}")
            return
        ticks = segments.latest_ticks(db, journey)
    finally:
        db.dispose()
    description = asyncio.run(_schedule_description(settings, journey))
    for line in audience_status_lines(plan, description, ticks):
        typer.echo(line)


def _segment_plan(catalog: Catalog, journey: str, settings: Settings) -> Plan:
    """The plan of `journey`, entered by a segment, or stop saying why not."""
    compiled = catalog.compiled.get(journey)
    if compiled is None:
        _fail(f"no journey {journey!r} in {settings.journeys_dir}")
    plan = compiled.plan
    if plan.journey.entry.segment is None:
        _fail(
            f"{journey} is entered on the event {plan.journey.entry.event}, not by a segment: "
            "broadcast works on journeys with entry: {segment, every} or {segment, once_at}"
        )
    return plan


def _print_dry_run(report: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_dry_run_json(report), indent=2))
        return
    for line in dry_run_lines(report):
        typer.echo(line)


async def _broadcast_now(settings: Settings, plan: Any) -> Any:
    from journeyman.audiences import schedules

    client = await _operator_client(settings)
    tick_id = schedules.manual_tick_id(plan.journey.id, settings.task_queue, datetime.now(UTC))
    handle = await schedules.start_tick(
        client, plan, tick_id=tick_id, task_queue=settings.task_queue
    )
    return await handle.result()


async def _schedule_description(settings: Settings, journey: str) -> Any:
    """The journey's Temporal Schedule; None when it has none, `False` when Temporal
    cannot be asked."""
    from temporalio.service import RPCError

    from journeyman.audiences import schedules
    from journeyman.platform.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        return await schedules.describe(client, journey, settings.task_queue)
    except (RuntimeError, TimeoutError, RPCError):
        return False


def dry_run_lines(report: Any) -> list[str]:
    """`journeyman broadcast J --dry-run`: who would enter and how they would be reached."""
    at = report.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"{report.journey_id} (version {report.version}), as of {at}; nothing was sent",
        f"  {_many(report.evaluated, 'customer')} evaluated, {report.matched:,} "
        + ("matches" if report.matched == 1 else "match")
        + " the segment",
        f"  {report.entering:,} would enter"
        + (
            f" ({report.held_out:,} of them in the holdout, sent nothing)"
            if report.held_out
            else ""
        ),
    ]
    for reason, count in sorted(report.skipped.items()):
        lines.append(f"  not entered: {reason}: {count:,}")
    if report.errors:
        lines.append(f"  {_count(report.errors, 'customer')} not evaluated (expression errors):")
        lines += [f"    {sample}" for sample in report.error_samples]
    for step_id, channels in report.channels.items():
        reached = ", ".join(f"{channel} {n:,}" for channel, n in channels.most_common())
        lines.append(f"  step {step_id}: {reached or 'nobody'}")
    return lines


def _many(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _held_out(n: int) -> str:
    return f" ({n:,} of them in the holdout, sent nothing)" if n else ""


def _dry_run_json(report: Any) -> dict[str, Any]:
    return {
        "journey": report.journey_id,
        "version": report.version,
        "at": report.at.isoformat(),
        "evaluated": report.evaluated,
        "matched": report.matched,
        "entering": report.entering,
        "held_out": report.held_out,
        "skipped": dict(report.skipped),
        "errors": report.errors,
        "error_samples": report.error_samples,
        "channels": {step: dict(counts) for step, counts in report.channels.items()},
    }


def audience_status_lines(plan: Any, description: Any, ticks: list[Any]) -> list[str]:
    """`journeyman broadcast J`: the segment, its schedule, and its latest checks."""
    journey = plan.journey
    segment = journey.entry.segment.text if journey.entry.segment is not None else ""
    lines = [f"{journey.id} (version {plan.version}): {_entry_text(plan)}", f"  segment: {segment}"]
    if description is False:
        lines.append("  schedule: unknown (Temporal cannot be reached)")
    elif description is None:
        lines.append(
            "  schedule: none yet (the worker creates it at start; `journeyman deploy` too)"
        )
    else:
        state = description.schedule.state
        status = "paused" + (f" ({state.note})" if state.note else "") if state.paused else "active"
        lines.append(f"  schedule: {description.id}, {status}")
        upcoming = description.info.next_action_times[:1]
        if upcoming and not (state.limited_actions and state.remaining_actions == 0):
            lines.append(f"  next check: {upcoming[0].astimezone(UTC):%Y-%m-%d %H:%M UTC}")
    if not ticks:
        lines.append("  no check has run yet")
    for tick in ticks:
        lines.append(
            f"  {tick.at.astimezone(UTC):%Y-%m-%d %H:%M UTC} {tick.status}: "
            f"{tick.evaluated:,} evaluated, {tick.matched:,} matched, {tick.entered:,} entered"
            + (f", {tick.errors:,} errors" if tick.errors else "")
        )
        for reason, count in sorted((tick.skipped or {}).items()):
            lines.append(f"      not entered: {reason}: {count:,}")
    return lines
