"""Commands on journey files: `validate`, `graph`, `schema`, `simulate`, `backtest`, `diff`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from journeyman.dsl import Problem, compile_file, validate
from journeyman.dsl.catalog_check import catalog_problems
from journeyman.dsl.overlap import overlap_warnings
from journeyman.messaging import whatsapp
from journeyman.settings import get_settings

if TYPE_CHECKING:
    from journeyman.dsl import Compiled
    from journeyman.insight.backtest import BacktestReport
    from journeyman.insight.diff import JourneyDiff
    from journeyman.insight.timeline import Simulation
    from journeyman.messaging.rendering import SmsEstimate
from journeyman.cli.common import (
    _catalog_files,
    _count,
    _fail,
    _migrated,
    _running_steps,
    _uses_temporal,
    app,
    reports_problems,
)

# -- journeys -------------------------------------------------------------------------

JourneyArgument = Annotated[
    str, typer.Argument(help="A journey file, or a journey id in JOURNEYS_DIR.")
]
RealTimeout = Annotated[
    float, typer.Option(help="Cut runs still going after this many real seconds.")
]


@app.command("validate")
def validate_command(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Journey files or folders (default: JOURNEYS_DIR).", show_default=False
        ),
    ] = None,
    templates: Annotated[
        Path | None, typer.Option(help="Templates folder (default: TEMPLATES_DIR).")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Fail on warnings too.")] = False,
) -> None:
    """Check journeys and their templates; print `file:line:col: message` per problem,
    then each journey with the estimated length of every text message it can send."""
    settings = get_settings()
    targets = paths or [settings.journeys_dir]
    templates_dir = templates or settings.templates_dir
    compiled, problems = validate(targets, templates_dir)
    problems += overlap_warnings(compiled)
    problems += whatsapp.validate_warnings(compiled, templates_dir)
    problems += catalog_problems(compiled, settings.catalogs_dir, templates_dir)
    reports = {
        c.path: _sms_reports(c, templates_dir, settings.sms_segment_warning) for c in compiled
    }
    sms_warnings = [w for lines in reports.values() for _, w in lines if w is not None]
    problems = [*problems, *dict.fromkeys(sms_warnings)]
    for problem in problems:
        typer.echo(str(problem))
    errors = [p for p in problems if p.severity == "error"]
    warnings = len(problems) - len(errors)
    if errors or (strict and warnings):
        typer.echo(f"{_count(len(errors), 'error')}, {_count(warnings, 'warning')}", err=True)
        raise typer.Exit(1)
    if not compiled:
        _fail("no journeys found in " + ", ".join(str(p) for p in targets))
    for c in sorted(compiled, key=lambda c: c.plan.journey.id):
        plan = c.plan
        typer.echo(
            f"ok {plan.journey.id} version {plan.version}, "
            f"{_count(len(plan.journey.steps), 'step')} ({c.path})"
        )
        for line, _ in reports[c.path]:
            typer.echo(f"  {line}")
        if c.secrets:
            typer.echo(f"  {_secrets_line(c)}")


def _secrets_line(compiled: Compiled) -> str:
    """The secrets the journey's webhooks read, each marked when this environment does
    not set it. Not a warning: what counts is the worker's environment, which is rarely
    the one `validate` runs in; a webhook whose secret is unset fails, naming it."""
    from journeyman.messaging.journey_secrets import is_set

    names = [
        name if is_set(name) else f"{name} (not set in this environment)"
        for name in sorted(compiled.secrets)
    ]
    return "secrets read from the worker's environment: " + ", ".join(names)


def _sms_reports(
    compiled: Compiled, templates_dir: Path, limit: int
) -> list[tuple[str, Problem | None]]:
    """For each SMS file the journey can send (each locale of each `send` listing sms):
    a line on its estimated length, and a warning when it takes more than `limit`
    segments or cannot be rendered with sample data."""
    import re

    from journeyman.dsl.model import SendStep
    from journeyman.messaging.rendering import Renderer, RenderError

    plan = compiled.plan
    renderer = Renderer(compiled.templates)
    names = {"journey": {"id": plan.journey.id, "name": plan.journey.name, "version": plan.version}}
    templates = dict.fromkeys(
        step.send.template
        for step in plan.journey.steps
        if isinstance(step, SendStep) and "sms" in step.send.channels
    )
    reports: list[tuple[str, Problem | None]] = []
    for template in templates:
        for locale in [None, *renderer.locales(template, "sms")]:
            try:
                estimate = renderer.sms_estimate(template, locale, names)
            except RenderError as exc:
                # The message reads "file[:line]: reason", the file relative to templates.
                found = re.match(r"([^:]+?)(?::(\d+))?: (.*)", str(exc), re.DOTALL)
                file, line, reason = found.groups() if found else (template, None, str(exc))
                where = str(templates_dir / file)
                message = f"cannot estimate the SMS length with sample data: {reason}"
                problem = Problem(where, int(line or 1), 1, message, "warning")
                reports.append((f"{where}: length unknown (see the warning above)", problem))
                continue
            where = str(templates_dir / estimate.path)
            over = estimate.segments > limit
            warning = Problem(where, 1, 1, _sms_over(estimate, limit), "warning") if over else None
            reports.append((f"{where}: {_sms_summary(estimate)}", warning))
    return reports


def _sms_summary(estimate: SmsEstimate) -> str:
    """`about 133 characters, 1 segment (GSM-7, 27 characters to spare)`."""
    length = f"about {estimate.characters} characters, {_count(estimate.segments, 'segment')}"
    encoding = estimate.encoding
    if estimate.first_non_gsm is not None:
        encoding += f" because of {estimate.first_non_gsm!r} {_char_name(estimate.first_non_gsm)}"
    return f"{length} ({encoding}, {_count(estimate.spare, 'character')} to spare)"


def _sms_over(estimate: SmsEstimate, limit: int) -> str:
    """The warning for a text over the segment limit, with what makes it long."""
    from journeyman.messaging.rendering import GSM7, segment_size

    length = f"about {estimate.characters} characters, {_count(estimate.segments, 'segment')}"
    text = f"{length} in {estimate.encoding}, over JOURNEYMAN_SMS_SEGMENT_WARNING={limit}: "
    size = segment_size(estimate.encoding, estimate.segments)
    char = estimate.first_non_gsm
    if char is None:
        return text + f"each segment of a long text holds {size} characters"
    text += (
        f"{char!r} ({_char_name(char)}) is not in the GSM-7 alphabet, so the text goes as "
        f"UCS-2 and each segment holds {size} characters, "
        f"not {segment_size(GSM7, estimate.segments)}"
    )
    if estimate.segments_in_gsm7 is not None and estimate.segments_in_gsm7 < estimate.segments:
        text += f"; in GSM-7 it would take {_count(estimate.segments_in_gsm7, 'segment')}"
    return text


def _char_name(char: str) -> str:
    """`U+2019 RIGHT SINGLE QUOTATION MARK`: tells a curly quote from a straight one, and
    names the invisible characters (a no-break space pasted from a document)."""
    import unicodedata

    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".rstrip()


def resolve_journey(journey: str, journeys_dir: Path) -> Path:
    """A journey file given as a path, or as an id found in the journeys folder."""
    given = Path(journey)
    if given.is_file():
        return given
    for suffix in (".yaml", ".yml"):
        candidate = journeys_dir / f"{journey}{suffix}"
        if candidate.is_file():
            return candidate
    _fail(f"no journey {journey!r}: not a file, and no {journeys_dir / journey}.yaml")


@app.command()
@reports_problems
def graph(
    journey: JourneyArgument,
) -> None:
    """The journey as a Mermaid flowchart on stdout."""
    from journeyman.dsl.graph import mermaid

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    compiled = compile_file(path, settings.templates_dir)
    typer.echo(mermaid(compiled.plan))


@app.command()
def schema() -> None:
    """The journey JSON Schema on stdout (for editors: `# yaml-language-server: $schema=`)."""
    from journeyman.dsl.schema import schema_text

    typer.echo(schema_text(), nl=False)


@app.command()
@reports_problems
def simulate(
    journey: JourneyArgument,
    profile: Annotated[Path, typer.Option(help="The customer: one flat JSON object with an id.")],
    events: Annotated[
        Path | None,
        typer.Option(
            help='JSON lines: the trigger first at "0s", then later events. For a segment '
            'journey, checked at "0s": history before it ("-120d"), events after it; optional.'
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per timeline entry.")
    ] = False,
    max_days: Annotated[
        int, typer.Option(help="Cut runs still going after this many virtual days.")
    ] = 400,
    timeout: RealTimeout = 120.0,
    start: Annotated[
        str | None,
        typer.Option(
            help='Trigger at this time of day on the customer\'s clock ("HH:MM"), so quiet '
            "hours and time-of-day waits come out the same on every run. Default: now."
        ),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also print each message's rendered text and each webhook's method, URL, "
            "headers and body (secrets as [secret NAME], never their values).",
        ),
    ] = False,
    catalog: Annotated[
        list[str] | None,
        typer.Option(
            "--catalog",
            help="NAME=FILE: a catalog for catalog() and viewed_products(), from a .csv "
            "or .jsonl file (repeat for several).",
        ),
    ] = None,
) -> None:
    """Run the journey for one customer on a time-skipping server; print the timeline."""

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    _uses_temporal()
    virtual, real = timedelta(days=max_days), timedelta(seconds=timeout)
    result, customer, segment = _simulated(path, profile, events, catalog, start, virtual, real)
    _print_simulation(result, customer, segment, as_json, verbose)


def _simulated(
    path: Path,
    profile: Path,
    events: Path | None,
    catalog: list[str] | None,
    start: str | None,
    max_virtual: timedelta,
    max_real: timedelta,
) -> tuple[Simulation, dict[str, Any], bool]:
    """The simulation, the customer's profile, and whether a segment enters the journey."""
    from journeyman.insight import scenario
    from journeyman.insight.simulate import simulate as run

    settings = get_settings()
    try:
        compiled = compile_file(path, settings.templates_dir)
        segment = compiled.plan.journey.entry.segment is not None
        customer = scenario.load_profile(profile)
        if events is None and not segment:
            _fail("--events is required: a JSON lines file whose first line is the trigger")
        scripted = scenario.load_events(events, segment=segment) if events is not None else []
        given = _catalog_files(catalog)
        result = asyncio.run(
            run(
                path,
                customer,
                scripted,
                settings=settings,
                max_virtual=max_virtual,
                max_real=max_real,
                start=start,
                catalogs=given,
            )
        )
    except scenario.SimulationError as exc:
        _fail(str(exc))
    return result, customer, segment


def _print_simulation(
    result: Simulation, customer: dict[str, Any], segment: bool, as_json: bool, verbose: bool
) -> None:
    """The timeline (one JSON object an entry with `as_json`), or why nothing entered."""
    if not result.entered:
        for reason in result.not_entered:
            typer.echo(f"not entered: {reason}", err=True)
        raise typer.Exit(1)
    if as_json:
        for entry in result.entries:
            typer.echo(json.dumps(entry.as_json(verbose)))
        typer.echo(result.footer(), err=True)
        return
    typer.echo(
        f"journey {result.journey_id} ({result.journey_name}) version {result.version}, "
        f"customer {result.customer_id}, "
        + ("segment checked" if segment else "trigger")
        + f" at {_local(result.started_at, customer)}"
    )
    for line in result.lines(verbose):
        typer.echo(line)
    typer.echo(result.footer())


def _local(instant: Any, profile: dict[str, Any]) -> str:
    """The trigger's instant on the customer's clock: `2026-11-23 10:00 Europe/Paris`."""
    from journeyman.customers.clock import zone

    if instant is None:
        return "now"
    tz = zone(profile.get("timezone"), get_settings().default_timezone)
    return f"{instant.astimezone(tz):%Y-%m-%d %H:%M} {tz}"


@app.command()
@reports_problems
def backtest(
    journey: JourneyArgument,
    since: Annotated[
        str, typer.Option(help="Period start: a duration before now (7d) or a date (2026-03-01).")
    ],
    until: Annotated[
        str | None, typer.Option(help="Period end, in the same forms (default: now).")
    ] = None,
    version_file: Annotated[
        Path | None,
        typer.Option(help="Replay through this file (an edited copy) instead of JOURNEY's."),
    ] = None,
    limit_customers: Annotated[
        int | None, typer.Option(help="Only the first N customers to have the entry event.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    timeout: RealTimeout = 120.0,
    catalog: Annotated[
        list[str] | None,
        typer.Option(
            "--catalog",
            help="NAME=FILE: a catalog for catalog() and viewed_products(), from a .csv "
            "or .jsonl file (repeat for several); other catalogs are the database's.",
        ),
    ] = None,
) -> None:
    """Replay a period's recorded events through a journey version on a time-skipping
    server: who would enter, messages per channel, deferrals, conversions. Nothing is sent."""

    from journeyman.insight import backtest as bt
    from journeyman.storage.db import Database

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    if version_file is not None and not version_file.is_file():
        _fail(f"{version_file}: no such file")
    path = version_file or path
    given = _catalog_files(catalog)
    _uses_temporal()
    now = datetime.now(UTC)
    source = Database(settings.database_url)
    try:
        _migrated(source)
        report = asyncio.run(
            bt.backtest(
                path,
                settings=settings,
                source=source,
                since=bt.parse_moment(since, now),
                until=bt.parse_moment(until, now) if until else now,
                limit_customers=limit_customers,
                max_real=timedelta(seconds=timeout),
                catalogs=given,
            )
        )
    except bt.BacktestError as exc:
        _fail(str(exc))
    finally:
        source.dispose()
    _print_report(report, as_json)


@app.command()
@reports_problems
def diff(
    old: Annotated[
        str, typer.Argument(help="A journey file, a journey id, or JOURNEY@VERSION (registered).")
    ],
    new: Annotated[str, typer.Argument(help="The same forms: the version about to ship.")],
    as_json: Annotated[bool, typer.Option("--json", help="The differences as JSON.")] = False,
) -> None:
    """What changes between two versions of a journey: steps added, removed and changed,
    and how many live runs of OLD wait at steps NEW removes."""
    from journeyman.insight import diff as jdiff
    from journeyman.storage.db import Database

    settings = get_settings()
    _uses_temporal()
    db = Database(settings.database_url)
    try:
        _migrated(db)
        dirs = {"journeys_dir": settings.journeys_dir, "templates_dir": settings.templates_dir}
        old_plan, old_source = jdiff.load_version(old, db=db, **dirs)
        new_plan, new_source = jdiff.load_version(new, db=db, **dirs)
        result = jdiff.diff_plans(old_plan, new_plan)
        result.old_source, result.new_source = old_source, new_source
        result.templates = jdiff.template_changes(
            jdiff.load_templates(old, db=db, **dirs), jdiff.load_templates(new, db=db, **dirs)
        )

        async def steps(journey_id: str, version: str) -> dict[str, int] | None:
            return await _running_steps(settings, journey_id, version)

        removed = [step for step, _ in result.removed]
        result.live = asyncio.run(jdiff.live_runs(db, old_plan, removed, steps))
    except jdiff.DiffError as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    _print_report(result, as_json)


def _print_report(report: BacktestReport | JourneyDiff, as_json: bool) -> None:
    """A report as indented JSON (`--json`), or as the lines a marketer reads."""
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in report.lines():
        typer.echo(line)
