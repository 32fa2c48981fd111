"""The `journeyman` command: the names and options in ../shared/product/interfaces.md.

Each command reads the one `Settings` object (environment and `.env`) and wires what it
needs; the work itself lives in the modules it calls (`journeyman.dsl`, `simulate`,
`devserver`, `rendering`, the worker and the API). Problems the user can fix are printed
as one clear line on stderr with exit status 1, never as a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from journeyman import whatsapp
from journeyman.dsl import JourneyError, Problem, compile_file, validate
from journeyman.dsl.catalog_check import catalog_problems
from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.dsl.overlap import overlap_warnings
from journeyman.dsl.schedule import describe_every
from journeyman.settings import Settings, get_settings

if TYPE_CHECKING:
    from journeyman.dsl import Compiled
    from journeyman.rendering import SmsEstimate
    from journeyman.stats import JourneyStats


class _Journeyman(typer.Typer):
    """The app run as a console script: commands that used Temporal end the process with
    `os._exit` once their output is flushed. The SDK's Rust threads can outlive the event
    loop and abort the interpreter's shutdown ("PyGILState_Release ... must be current",
    temporalio/sdk-python#300), turning a clean exit into status 134."""

    hard_exit = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            super().__call__(*args, **kwargs)
        except SystemExit as exc:
            if not _Journeyman.hard_exit:
                raise
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _uses_temporal() -> None:
    _Journeyman.hard_exit = True


def _next_to_dev(ctx: typer.Context) -> None:
    # Every command but `dev` itself finds what a `journeyman dev` of this folder keeps
    # (payload key, Temporal address) when the environment does not say otherwise.
    if ctx.invoked_subcommand != "dev":
        from journeyman import devstate

        before = devstate.apply()
        ctx.call_on_close(lambda: devstate.restore(before))


app = _Journeyman(
    name="journeyman",
    help="Marketing journeys as YAML, run as durable Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    callback=_next_to_dev,
)

CHANNELS = tuple(CHANNEL_FILES)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _problems(problems: list[Problem]) -> None:
    for problem in problems:
        typer.echo(str(problem), err=True)


# -- servers --------------------------------------------------------------------------


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="HTTP API port.")] = 8000,
    temporal_port: Annotated[int, typer.Option(help="Temporal dev server gRPC port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    host: Annotated[str, typer.Option(help="Address the HTTP API listens on.")] = "127.0.0.1",
) -> None:
    """Everything on one machine: Temporal dev server, worker and HTTP API. Ctrl-C stops it."""
    from journeyman.devserver import main

    _uses_temporal()
    _logging()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    code = main(get_settings(), port=port, temporal_port=temporal_port, ui_port=ui_port, host=host)
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """The Temporal worker alone (`python worker.py` does the same)."""
    import worker as worker_module

    _uses_temporal()
    _logging()
    try:
        asyncio.run(worker_module.main())
    except KeyboardInterrupt:
        typer.echo("worker stopped", err=True)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    except RuntimeError as exc:  # the SDK's connection errors
        _fail(f"worker: {exc}")
    except ValueError as exc:  # settings: a half-configured provider, no signing key
        _fail(f"worker: {exc}")


@app.command()
def api(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
) -> None:
    """The HTTP API alone (event intake, customers, journeys, outbox)."""
    try:
        from journeyman.api.server import serve
    except ImportError as exc:
        _fail(f"the HTTP API is not available in this installation: {exc}")
    _uses_temporal()
    _logging()
    try:
        asyncio.run(serve(get_settings(), host, port))
    except KeyboardInterrupt:
        typer.echo("API stopped", err=True)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    except RuntimeError as exc:  # the SDK's connection errors
        _fail(f"api: {exc}")
    except ValueError as exc:  # settings: no payload key and no JOURNEYMAN_PAYLOAD_PLAINTEXT
        _fail(f"api: {exc}")


def _logging() -> None:
    from journeyman import logs

    logs.configure(get_settings().log_format)


# -- journeys -------------------------------------------------------------------------


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
    from journeyman.journey_secrets import is_set

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
    from journeyman.rendering import Renderer, RenderError

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
    from journeyman.rendering import GSM7, segment_size

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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


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
def graph(
    journey: Annotated[
        str, typer.Argument(help="A journey file, or a journey id in JOURNEYS_DIR.")
    ],
) -> None:
    """The journey as a Mermaid flowchart on stdout."""
    from journeyman.dsl.graph import mermaid

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    try:
        compiled = compile_file(path, settings.templates_dir)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    typer.echo(mermaid(compiled.plan))


@app.command()
def schema() -> None:
    """The journey JSON Schema on stdout (for editors: `# yaml-language-server: $schema=`)."""
    from journeyman.dsl.schema import schema_text

    typer.echo(schema_text(), nl=False)


@app.command()
def simulate(
    journey: Annotated[
        str, typer.Argument(help="A journey file, or a journey id in JOURNEYS_DIR.")
    ],
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
    timeout: Annotated[
        float, typer.Option(help="Cut runs still going after this many real seconds.")
    ] = 120.0,
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
    from datetime import timedelta

    from journeyman import simulate as sim

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    _uses_temporal()
    try:
        compiled = compile_file(path, settings.templates_dir)
        segment = compiled.plan.journey.entry.segment is not None
        customer = sim.load_profile(profile)
        if events is None and not segment:
            _fail("--events is required: a JSON lines file whose first line is the trigger")
        scripted = sim.load_events(events, segment=segment) if events is not None else []
        given = _catalog_files(catalog)
        result = asyncio.run(
            sim.simulate(
                path,
                customer,
                scripted,
                settings=settings,
                max_virtual=timedelta(days=max_days),
                max_real=timedelta(seconds=timeout),
                start=start,
                catalogs=given,
            )
        )
    except sim.SimulationError as exc:
        _fail(str(exc))
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    if not result.entered:
        for reason in result.not_entered:
            typer.echo(f"not entered: {reason}", err=True)
        raise typer.Exit(1)
    if as_json:
        for entry in result.entries:
            typer.echo(json.dumps(entry.as_json(verbose)))
        typer.echo(_footer(result), err=True)
        return
    typer.echo(
        f"journey {result.journey_id} ({result.journey_name}) version {result.version}, "
        f"customer {result.customer_id}, "
        + ("segment checked" if segment else "trigger")
        + f" at {_local(result.started_at, customer)}"
    )
    labels = _run_labels([e.run for e in result.entries])
    label_width = max((len(label) + 1 for label in labels.values()), default=0)
    step_width = max((len(e.step) for e in result.entries), default=4)
    for entry in result.entries:
        run = f"{labels.get(entry.run, ''):<{label_width}}"
        typer.echo(
            f"  {sim.format_offset(entry.offset):<9} {run}{entry.step:<{step_width}}  "
            f"{entry.describe()}"
        )
        indent = " " * (9 + 1 + label_width + step_width + 4)
        if entry.to is not None:
            typer.echo(f"  {indent}to {entry.to}: {entry.summary}")
        if verbose:
            for line in _verbose_lines(entry):
                typer.echo(f"  {indent}  {line}".rstrip())
    for offset, name in result.unheard:
        typer.echo(
            f"  {sim.format_offset(offset):<9} {name} reached no run "
            "(none was running and listening for it)"
        )
    typer.echo(_footer(result))


def _verbose_lines(entry: Any) -> list[str]:
    """What `--verbose` adds under an entry: a message's text, a webhook's request."""
    lines: list[str] = []
    if entry.body is not None:
        lines.extend(["| " + line for line in entry.body.splitlines() or [""]])
    call = entry.request
    if call is not None:
        lines.append(f"{call.method} {call.url}")
        lines.extend(f"{name}: {value}" for name, value in call.headers.items())
        if call.body:
            lines.append(call.body)
    return lines


def _run_labels(runs: list[str]) -> dict[str, str]:
    """Short names for runs when there are several: the entry key (`o1` of
    `order_ready_for_pickup/c1/o1`), else their order of entry."""
    distinct = list(dict.fromkeys(runs))
    if len(distinct) < 2:
        return {}
    keys = [run.split("/", 2)[2] if run.count("/") >= 2 else "" for run in distinct]
    if all(keys) and len(set(keys)) == len(keys):
        return {run: f"[{key}]" for run, key in zip(distinct, keys, strict=True)}
    return {run: f"[run {n}]" for n, run in enumerate(distinct, start=1)}


def _local(instant: Any, profile: dict[str, Any]) -> str:
    """The trigger's instant on the customer's clock: `2026-11-23 10:00 Europe/Paris`."""
    from journeyman.clock import zone

    if instant is None:
        return "now"
    tz = zone(profile.get("timezone"), get_settings().default_timezone)
    return f"{instant.astimezone(tz):%Y-%m-%d %H:%M} {tz}"


def _footer(result: Any) -> str:
    from journeyman.simulate import format_offset

    virtual = format_offset(result.virtual).removeprefix("+")
    labels = _run_labels(list(result.outcomes))
    outcome = (
        ", ".join(f"{labels[run]} {o}" for run, o in result.outcomes.items())
        if labels
        else result.outcome
    )
    text = (
        f"outcome: {outcome} after {virtual} of virtual time, "
        f"{_count(result.messages, 'message')} sent, {result.real_seconds:.1f} s real"
    )
    return text + (f" ({result.note})" if result.note else "")


@app.command()
def backtest(
    journey: Annotated[
        str, typer.Argument(help="A journey file, or a journey id in JOURNEYS_DIR.")
    ],
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
    timeout: Annotated[
        float, typer.Option(help="Cut runs still going after this many real seconds.")
    ] = 120.0,
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
    from datetime import timedelta

    from journeyman import backtest as bt
    from journeyman.storage.db import Database

    settings = get_settings()
    path = resolve_journey(journey, settings.journeys_dir)
    if version_file is not None:
        if not version_file.is_file():
            _fail(f"{version_file}: no such file")
        path = version_file
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
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    finally:
        source.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    for line in report.lines():
        typer.echo(line)


@app.command()
def diff(
    old: Annotated[
        str, typer.Argument(help="A journey file, a journey id, or JOURNEY@VERSION (registered).")
    ],
    new: Annotated[str, typer.Argument(help="The same forms: the version about to ship.")],
    as_json: Annotated[bool, typer.Option("--json", help="The differences as JSON.")] = False,
) -> None:
    """What changes between two versions of a journey: steps added, removed and changed,
    and how many live runs of OLD wait at steps NEW removes."""
    from journeyman import diff as jdiff
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
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    if as_json:
        typer.echo(json.dumps(result.as_json(), indent=2))
        return
    for line in result.lines():
        typer.echo(line)


# -- operating ------------------------------------------------------------------------


@app.command()
def outbox(
    customer: Annotated[str | None, typer.Option(help="Only this customer's messages.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the newest.")] = 50,
) -> None:
    """Messages held in the outbox (channels with no provider configured), newest last."""
    from sqlalchemy import select

    from journeyman.simulate import message_summary
    from journeyman.storage.db import Database
    from journeyman.storage.models import OutboxMessage

    db = Database(get_settings().database_url)
    try:
        _migrated(db)
        with db.session() as session:
            query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
            if customer:
                query = query.where(OutboxMessage.customer_id == customer)
            messages = list(reversed(session.scalars(query).all()))
            rows = [
                [
                    m.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                    m.customer_id,
                    m.channel,
                    m.to,
                    message_summary(m),
                ]
                for m in messages
            ]
    finally:
        db.dispose()
    if not rows:
        typer.echo("the outbox is empty" + (f" for customer {customer}" if customer else ""))
        return
    _table(["time (UTC)", "customer", "channel", "to", "subject / text"], rows)


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [f"{c!s:<{w}}" for c, w in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, str(row[-1])]).rstrip())


@app.command()
def runs(
    journey: Annotated[str | None, typer.Option(help="Only runs of this journey id.")] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's runs.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    without_patch: Annotated[
        str | None,
        typer.Option(
            help="Only open runs that have not taken this interpreter patch "
            "(docs/versioning.md): the runs that retiring it would break."
        ),
    ] = None,
) -> None:
    """Journey runs with their current step, from Temporal's visibility."""
    from workflows.patches import BY_ID

    if without_patch is not None and without_patch not in BY_ID:
        _fail(f"unknown patch {without_patch!r}; the patches are: {', '.join(BY_ID)}")
    _uses_temporal()
    query = runs_query(journey, customer, without_patch)
    rows = asyncio.run(_list_runs(get_settings(), query, limit))
    if not rows:
        typer.echo("no runs found")
        return
    _table(["workflow id", "status", "step", "started (UTC)"], rows)


def runs_query(journey: str | None, customer: str | None, without_patch: str | None = None) -> str:
    """The visibility query for journey runs, filtered on our search attributes (and on
    the patches a run took, `workflows/patches.py`)."""
    from journeyman.names import CUSTOMER_ID, JOURNEY_ID, JOURNEY_WORKFLOW
    from workflows.patches import without_query

    clauses = [f"WorkflowType = {_quote(JOURNEY_WORKFLOW)}"]
    if journey:
        clauses.append(f"{JOURNEY_ID.name} = {_quote(journey)}")
    if customer:
        clauses.append(f"{CUSTOMER_ID.name} = {_quote(customer)}")
    if without_patch:
        clauses.append(without_query(without_patch))
    return " AND ".join(clauses)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


async def _list_runs(settings: Settings, query: str, limit: int) -> list[list[str]]:
    from journeyman.names import JOURNEY_STEP
    from journeyman.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=10)
    except (RuntimeError, TimeoutError) as exc:
        address = settings.temporal_address or "localhost:7233"
        _fail(f"cannot reach Temporal at {address} ({exc}); is `journeyman dev` running?")
    rows: list[list[str]] = []
    async for execution in client.list_workflows(query, limit=limit):
        step = execution.typed_search_attributes.get(JOURNEY_STEP)
        status = execution.status.name.lower() if execution.status is not None else "?"
        rows.append(
            [
                execution.id,
                status,
                step or "",
                execution.start_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            ]
        )
    return rows


@app.command()
def stats(
    journey: Annotated[str | None, typer.Argument(help="The journey id.")] = None,
    version: Annotated[str | None, typer.Option(help="Only this version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    all_marketing: Annotated[
        bool,
        typer.Option(
            "--global",
            help="All marketing against the global holdout (JOURNEYMAN_GLOBAL_HOLDOUT), "
            "per goal event, instead of one journey.",
        ),
    ] = False,
) -> None:
    """How a journey performs: entries, steps, messages, conversions, holdout lift."""
    from journeyman.stats import UnknownJourney, journey_stats
    from journeyman.storage.db import Database

    if all_marketing:
        if journey is not None or version is not None:
            _fail("--global reports all marketing: give no journey or version with it")
        _global_stats(as_json)
        return
    if journey is None:
        _fail("give a journey id (journeyman stats JOURNEY), or --global for all marketing")
    settings = get_settings()
    _uses_temporal()
    steps = asyncio.run(_running_steps(settings, journey, version))
    db = Database(settings.database_url)
    try:
        _migrated(db)
        with db.session() as session:
            report = journey_stats(session, journey, version=version, now_at_step=steps)
    except UnknownJourney as exc:
        _fail(f"{exc}: is the id right, and has the API or worker run with it?")
    finally:
        db.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    from journeyman.splits import split_lines

    for line in [*stats_lines(report), *split_lines(report.splits)]:
        typer.echo(line.rstrip())


def _global_stats(as_json: bool) -> None:
    """`journeyman stats --global`: journeyman/holdout.py."""
    from pydantic import SecretStr

    from journeyman.holdout import GlobalHoldout, HoldoutSettingsError, global_lift, global_lines
    from journeyman.settings import STATE_DIR
    from journeyman.storage.db import Database

    settings = get_settings()
    kept = STATE_DIR / "admin_token"  # what `dev` keys the holdout with, next to it
    if settings.secret_key is None and settings.admin_token is None and kept.is_file():
        token = SecretStr(kept.read_text().strip())
        settings = settings.model_copy(update={"admin_token": token})
    try:
        holdout = GlobalHoldout.from_settings(settings)
    except HoldoutSettingsError as exc:
        _fail(str(exc))
    db = Database(settings.database_url)
    try:
        _migrated(db)
        with db.session() as session:
            report = global_lift(session, holdout)
    finally:
        db.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    for line in global_lines(report):
        typer.echo(line.rstrip())


async def _running_steps(
    settings: Settings, journey: str, version: str | None
) -> dict[str, int] | None:
    """Running runs by step from Temporal's visibility; None when it cannot be asked."""
    from temporalio.service import RPCError

    from journeyman.stats import running_steps
    from journeyman.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        return await asyncio.wait_for(running_steps(client, journey, version), timeout=20)
    except (RuntimeError, TimeoutError, RPCError):
        return None


def stats_lines(report: JourneyStats) -> list[str]:
    """The `journeyman stats` report: what a marketer reads, aligned and in percentages."""
    overall = report.overall
    scope = f"version {overall.version}" if overall.version else "all versions"
    title = f"{report.journey_id}" + (f" — {report.name}" if report.name else "")
    lines = [f"{title} ({scope})", ""]
    groups = f"treatment {overall.treatment:,}"
    if overall.control or report.holdout:
        groups += f", control {overall.control:,}"
    if report.holdout:
        groups += f" (holdout {report.holdout:.0%})"
    finished = sum(overall.finished.values())
    lines += _rows(
        [
            ["entered", f"{overall.entered:,}", groups],
            ["running now", f"{overall.running:,}", ""],
            [
                "finished",
                f"{finished:,}",
                ", ".join(
                    f"{outcome} {n:,} ({_pct(n, finished)})"
                    for outcome, n in overall.finished.items()
                ),
            ],
        ]
    )
    if overall.entry_errors:
        lines += [
            "",
            f"not entered: {overall.entry_errors:,} "
            f"{'event' if overall.entry_errors == 1 else 'events'} whose entry condition or "
            "key failed to evaluate; the latest:",
        ]
        lines += _rows(
            [
                [f"  {e.at:%Y-%m-%d %H:%M}", e.customer_id, e.error]
                for e in report.recent_entry_errors
            ]
        )
    if overall.journey_off:
        lines += [
            "",
            f"journey off: {overall.journey_off:,} "
            f"{'entry' if overall.journey_off == 1 else 'entries'} passed by while switched off",
        ]
    if overall.errors_by_step:
        lines += [
            "",
            "expressions that failed in runs (each run went to on_error or ended in error)",
        ]
        lines += _rows([["  " + step, f"{n:,}"] for step, n in overall.errors_by_step.items()])
    lines.append("")
    if overall.now_at_step is None:
        lines.append("now at each step: unavailable (Temporal cannot be reached)")
    else:
        lines.append("now at each step (running runs, from Temporal)")
        lines += _rows([["  " + step, f"{n:,}"] for step, n in overall.now_at_step.items()])
    lines += ["", "messages"]
    total = overall.total
    if not total.messages:
        lines.append("  none yet")
    else:
        header = ["  channel", "sent", "delivered", "opened", "clicked", "bounced/failed"]
        header += ["complained", "unknown", "skipped", "pending"]
        rows = [header]
        for m in [*overall.messages, total]:
            rows.append(
                [
                    "  " + m.channel,
                    f"{m.sent:,}",
                    *(
                        _share(n, m.sent)
                        for n in (m.delivered, m.opened, m.clicked, m.failed, m.complained)
                    ),
                    f"{m.unknown:,}",
                    f"{m.skipped:,}",
                    f"{m.pending:,}",
                ]
            )
        lines += _rows(rows, right=True)
        if total.skipped_reasons:
            lines += ["", "skipped, by reason"]
            lines += _rows(
                [["  " + reason, f"{n:,}"] for reason, n in total.skipped_reasons.items()]
            )
    conversions = overall.conversions
    lines += [
        "",
        f"conversions: {conversions.converted:,} of {conversions.entered:,} entered "
        f"({_pct(conversions.converted, conversions.entered)})"
        + (" in the treatment group" if overall.control else ""),
    ]
    if conversions.after_end:
        lines.append(f"  of them after the run ended (goal.within): {conversions.after_end:,}")
    if conversions.converted:
        lines.append(
            "  last message before converting, by channel: " + _tally(conversions.by_channel)
        )
        lines.append("  last message before converting, by step:    " + _tally(conversions.by_step))
    if overall.lift is not None:
        lift = overall.lift
        lines += [
            "",
            "holdout lift: "
            f"treatment {_pct(lift.treatment_converted, lift.treatment_entered)} "
            f"({lift.treatment_converted:,}/{lift.treatment_entered:,}) vs control "
            f"{_pct(lift.control_converted, lift.control_entered)} "
            f"({lift.control_converted:,}/{lift.control_entered:,})",
            "  "
            + lift.verdict
            + (f"; relative lift {lift.relative:+.0%}" if lift.relative is not None else ""),
        ]
    if len(report.versions) > 1 and overall.version is None:
        lines += ["", "by version"]
        rows = [["  version", "entered", "running", "converted", "rate"]]
        for v in report.versions:
            c = v.conversions
            rows.append(
                [
                    f"  {v.version}",
                    f"{v.entered:,}",
                    f"{v.running:,}",
                    f"{c.converted:,}",
                    _pct(c.converted, c.entered),
                ]
            )
        lines += _rows(rows, right=True)
    return lines


def _rows(rows: list[list[str]], right: bool = False) -> list[str]:
    """Rows as aligned text: the first column left, the others right-aligned numbers
    (`right`) or, without it, all but the last column padded."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        for i, cell in enumerate(row[1:], start=1):
            last = i == len(row) - 1 and not right
            cells.append(cell if last else cell.rjust(widths[i]))
        lines.append("  ".join(cells).rstrip())
    return lines


def _pct(n: int, of: int) -> str:
    return f"{n / of:.1%}" if of else "-"


def _share(n: int, of: int) -> str:
    return f"{n:,} ({_pct(n, of)})" if of else f"{n:,}"


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {n:,}" for key, n in counts.items())


@app.command()
def preview(
    template: Annotated[str, typer.Argument(help="A template folder name in TEMPLATES_DIR.")],
    profile: Annotated[Path, typer.Option(help="The customer: one flat JSON object with an id.")],
    event: Annotated[
        Path | None, typer.Option(help="The trigger event (Segment track JSON).")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="email, sms, push, whatsapp or inbox (default: every one it has)."),
    ] = None,
    html: Annotated[bool, typer.Option(help="Print an email's HTML instead of its text.")] = False,
    catalog: Annotated[
        list[str] | None,
        typer.Option(
            "--catalog",
            help="NAME=FILE: a catalog for catalog() (.csv or .jsonl); viewed_products() "
            "shows its first items.",
        ),
    ] = None,
) -> None:
    """Render a template as the customer would get it."""
    from journeyman import simulate as sim
    from journeyman.rendering import Renderer, RenderError

    settings = get_settings()
    folder = settings.templates_dir / template
    if not folder.is_dir():
        _fail(f"no template {template!r} (expected folder {folder})")
    if channel is not None and channel not in CHANNELS:
        _fail(f"unknown channel {channel!r}: use " + ", ".join(CHANNELS))
    channels = [channel] if channel else [c for c in CHANNELS if _has_channel(folder, c)]
    if not channels:
        _fail(f"template {template!r} has none of " + ", ".join(CHANNEL_FILES.values()))
    try:
        customer = sim.load_profile(profile)
        names = preview_names(
            customer,
            _load_event(event) if event else None,
            settings.default_timezone,
            settings.public_base_url,
        )
    except sim.SimulationError as exc:
        _fail(str(exc))
    names.update(_preview_lookups(_catalog_files(catalog)))
    renderer = Renderer.from_dir(settings.templates_dir)
    failed = False
    for name in channels:
        try:
            message = renderer.render(template, name, names, customer.get("locale"))
        except RenderError as exc:
            typer.echo(f"== {name}: cannot render: {exc}", err=True)
            failed = True
            continue
        _show_message(message, html)
    if failed:
        raise typer.Exit(1)


def _has_channel(folder: Path, channel: str) -> bool:
    filename = CHANNEL_FILES[channel]
    stem, _, suffix = filename.rpartition(".")
    return (folder / filename).is_file() or any(folder.glob(f"{stem}.*.{suffix}"))


def _load_event(path: Path) -> dict[str, Any]:
    from journeyman.simulate import SimulationError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SimulationError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise SimulationError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("properties", {}), dict):
        raise SimulationError(
            f'{path}: expected a track event: {{"event": ..., "properties": {{...}}}}'
        )
    return data


def preview_names(
    profile: dict[str, Any],
    event: dict[str, Any] | None,
    default_timezone: str = "UTC",
    public_base_url: str = "http://localhost:8000",
) -> dict[str, Any]:
    """What a template sees in a preview: this profile, the event as event and trigger,
    an empty history, the customer's clock, and an unsubscribe link (to no one: a
    preview has no signed customer) so that a layout's footer shows as it will."""
    from journeyman.clock import zone
    from journeyman.profiles import clock_names
    from journeyman.storage.models import profile_of
    from journeyman.types import CustomerEvent

    now = datetime.now(UTC)
    trigger = CustomerEvent(
        message_id=str((event or {}).get("messageId") or "preview"),
        name=str((event or {}).get("event") or "preview"),
        properties=dict((event or {}).get("properties") or {}),
        timestamp=now,
    )
    full_profile = {
        **profile_of(str(profile.get("id", "preview")), None, None, None, None, None, None),
        **profile,
    }
    timezone = full_profile.get("timezone")
    return {
        "profile": full_profile,
        "event": trigger.as_names(),
        "trigger": trigger.as_names(),
        "journey": {"id": "preview", "name": "Preview", "version": "preview", "entered_at": now},
        "now": now,
        "last": lambda name: None,
        "count": lambda name, within=None: 0,
        "recent": lambda name, within=None, limit=10: [],
        # No catalog here: a template guards a lookup with `{% if item %}`.
        "catalog": lambda name, ident: None,
        "viewed_products": lambda limit=3, catalog="products", within=None: [],
        **clock_names(now, zone(timezone if isinstance(timezone, str) else None, default_timezone)),
        "unsubscribe_url": f"{public_base_url.rstrip('/')}/unsubscribe/preview",
    }


def _show_message(message: Any, html: bool) -> None:
    locale = f", locale {message.locale}" if message.locale else ""
    typer.echo(f"== {message.channel} ({message.source}{locale})")
    if message.channel == "email":
        typer.echo(f"Subject:   {message.subject}")
        if message.preheader:
            typer.echo(f"Preheader: {message.preheader}")
        typer.echo("")
        typer.echo(message.html if html else message.text)
    elif message.channel == "whatsapp":
        _show_whatsapp(message)
    elif message.channel == "sms":
        segments = _count(message.sms_segments or 0, "segment")
        typer.echo(f"{segments}, {message.sms_encoding}, {len(message.text or '')} characters")
        typer.echo("")
        typer.echo(message.text)
    else:
        typer.echo(f"Title: {message.title}")
        typer.echo(f"Body:  {message.body}")
        if message.data:
            typer.echo(f"Data:  {json.dumps(dict(message.data))}")
    typer.echo("")


def _show_whatsapp(message: Any) -> None:
    """The free-form text (within the 24-hour window) and the approved template that
    goes outside it, if the template has one (journeyman/whatsapp.py)."""
    data = dict(message.data or {})
    typer.echo("Within 24 hours of the customer's last message (free-form):")
    typer.echo(message.text)
    typer.echo("")
    if data.get("content_sid"):
        typer.echo(f"Outside that window: approved template {data['content_sid']}")
        typer.echo(f"Variables: {data.get('content_variables', '{}')}")
    else:
        typer.echo("Outside that window: no whatsapp.yaml, the send falls to the next channel")


@app.command("send-event")
def send_event(
    file: Annotated[Path, typer.Argument(help="A Segment event, a list of them, or a batch.")],
    url: Annotated[str, typer.Option(help="The running API.")] = "http://localhost:8000",
    write_key: Annotated[
        str | None,
        typer.Option(
            help="Default: a server key (first of JOURNEYMAN_SERVER_KEYS, else "
            ".journeyman/server_key), else a write key (JOURNEYMAN_WRITE_KEYS, "
            ".journeyman/write_key)."
        ),
    ] = None,
) -> None:
    """Post Segment-style events to the running API, for trying journeys by hand (with a
    server key: as the operator's own server would)."""
    import httpx

    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"{file}: cannot read: {exc.strerror or exc}")
    except json.JSONDecodeError as exc:
        _fail(f"{file}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}")
    route, body = event_request(payload)
    key = write_key or _write_key(get_settings())
    if key is None:
        _fail(
            "no write key: pass --write-key, set JOURNEYMAN_WRITE_KEYS, "
            "or start `journeyman dev`, which makes one"
        )
    target = url.rstrip("/") + route
    try:
        response = httpx.post(target, json=body, auth=(key, ""), timeout=30)
    except httpx.HTTPError as exc:
        _fail(f"cannot post to {target}: {exc}")
    typer.echo(f"{response.status_code} {response.reason_phrase} from POST {target}")
    if response.content:
        typer.echo(response.text)
    if response.status_code >= 400:
        raise typer.Exit(1)


def event_request(payload: Any) -> tuple[str, Any]:
    """The route and body for a payload: a list or a batch goes to /v1/batch, one event to
    the route of its type (track by default)."""
    if isinstance(payload, list):
        return "/v1/batch", {"batch": payload}
    if isinstance(payload, dict) and "batch" in payload:
        return "/v1/batch", payload
    kind = payload.get("type", "track") if isinstance(payload, dict) else "track"
    if kind not in ("track", "identify", "alias", "page", "screen", "group"):
        _fail(
            f"event type {kind!r} is not accepted: "
            "use track, identify, alias, page, screen or group"
        )
    return f"/v1/{kind}", payload


def _write_key(settings: Settings) -> str | None:
    from journeyman.devserver import SERVER_KEY_FILE, WRITE_KEY_FILE

    if settings.server_key_list:
        return settings.server_key_list[0]
    if SERVER_KEY_FILE.is_file() and (kept := SERVER_KEY_FILE.read_text().strip()):
        return kept
    if settings.write_key_list:
        return settings.write_key_list[0]
    if WRITE_KEY_FILE.is_file():
        return WRITE_KEY_FILE.read_text().strip() or None
    return None


# -- operator controls ----------------------------------------------------------------

run_app = typer.Typer(
    help="Steer one journey run: show it, skip its wait, move it, end it.",
    no_args_is_help=True,
)
app.add_typer(run_app, name="run")

WhoOption = Annotated[str, typer.Option(help="Who does this (recorded with the action).")]
WhyOption = Annotated[str, typer.Option(help="Why (recorded with the action).")]
WorkflowIdArgument = Annotated[
    str, typer.Argument(help="The run's workflow id, as `journeyman runs` lists it.")
]


split_app = typer.Typer(
    help="Operate an optimized split (`split.optimize`): stop a case.", no_args_is_help=True
)
app.add_typer(split_app, name="split")


@split_app.command("stop")
def split_stop(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    step: Annotated[str, typer.Argument(help="The split step's id.")],
    case: Annotated[str, typer.Argument(help="The case to stop: its goto.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Stop a case of a split: from its next choice on, nobody new takes it."""
    from journeyman.splits import SplitError, stop_case
    from journeyman.storage.db import Database

    settings = get_settings()
    db = Database(settings.database_url)
    try:
        _migrated(db)
        stop_case(db, journey, step, case, who, why)
    except SplitError as exc:
        _fail(str(exc))
    finally:
        db.dispose()
    typer.echo(f"stopped case {case} of split {step} in {journey}: new customers take the others")


@run_app.command("show")
def run_show(workflow_id: WorkflowIdArgument) -> None:
    """The run's status, current step and path so far."""
    from journeyman import controls

    _uses_temporal()

    async def show() -> controls.RunView:
        client = await _operator_client(get_settings())
        return await controls.show_run(client, workflow_id)

    view = _control(show)
    for line in run_lines(view):
        typer.echo(line.rstrip())


@run_app.command("skip-wait")
def run_skip_wait(workflow_id: WorkflowIdArgument, who: WhoOption, why: WhyOption) -> None:
    """End the run's current wait now, as if its timer fired (a wait_for: as its timeout)."""
    _run_control(workflow_id, "skip-wait", who, why)


@run_app.command("move")
def run_move(
    workflow_id: WorkflowIdArgument,
    to: Annotated[str, typer.Option(help="The id of the step to go to.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Go to step TO once the current step is interrupted (a wait) or done."""
    _run_control(workflow_id, "move", who, why, to)


@run_app.command("end")
def run_end(workflow_id: WorkflowIdArgument, who: WhoOption, why: WhyOption) -> None:
    """Finish the run now, with outcome `ended_by_operator`."""
    _run_control(workflow_id, "end", who, why)


@app.command()
def pause(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Pause a journey: new entries are held, sends are held; runs keep their place."""
    from journeyman import controls
    from journeyman.routing import Catalog
    from journeyman.storage.db import Database

    settings = get_settings()
    try:
        known = set(Catalog.from_dirs(settings.journeys_dir, settings.templates_dir).compiled)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    db = Database(settings.database_url)
    try:
        _migrated(db)
        known |= set(_served(db, Catalog([])).compiled)  # live, whatever the files say
        controls.pause(db, known, journey, who, why)
    except controls.ControlError as exc:
        _fail(exc.message)
    finally:
        db.dispose()
    typer.echo(
        f"paused {journey}: new entries and sends are held until `journeyman resume {journey}`"
    )


@app.command()
def resume(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Resume a paused journey: held entries enter (if they still apply), held sends go."""
    from journeyman import controls
    from journeyman.routing import Catalog, Router
    from journeyman.storage.db import Database

    settings = get_settings()
    _uses_temporal()
    try:
        catalog = Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None
    db = Database(settings.database_url)
    try:
        _migrated(db)
        catalog.register(db)
        catalog = _served(db, catalog)

        async def go() -> controls.ResumeReport:
            client = await _operator_client(settings)
            router = Router(
                client, db, catalog, settings.task_queue, default_timezone=settings.default_timezone
            )
            return await controls.resume(router, journey, who, why)

        report = _control(go)
    finally:
        db.dispose()
    typer.echo(f"resumed {journey}: {report.summary()}")
    for skipped in report.skipped:
        typer.echo(f"  held entry not entered: {skipped.removeprefix(journey + ': ')}")


# -- publishing and audiences ----------------------------------------------------------


def _catalog(settings: Settings) -> Any:
    from journeyman.routing import Catalog

    try:
        return Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)
    except JourneyError as exc:
        _problems(exc.problems)
        raise typer.Exit(1) from None


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
    from journeyman import releases
    from journeyman.dsl.compiler import compile_dir
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

    from journeyman import schedules
    from journeyman.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=10)
        report = await schedules.sync(
            client, plans, task_queue=settings.task_queue, timezone=settings.default_timezone
        )
    except (RuntimeError, TimeoutError, RPCError) as exc:
        return [f"note: segment schedules not synced now ({exc}); the workers sync them"]
    except Exception as exc:
        from journeyman import devstate

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
    from journeyman import releases
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
    from journeyman import releases
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


def _served(db: Any, files: Any) -> Any:
    """What the service serves: the live release, or the files where nothing was ever
    published (the first start publishes them)."""
    from journeyman import releases

    return releases.live_catalog(db) if releases.latest_id(db) else files


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
    from journeyman import audience
    from journeyman.storage.db import Database

    if dry_run and now:
        _fail("choose --dry-run (send nothing) or --now (enter them now), not both")
    settings = get_settings()
    catalog = _catalog(settings)
    compiled = catalog.compiled.get(journey)
    if compiled is None:
        _fail(f"no journey {journey!r} in {settings.journeys_dir}")
    plan = compiled.plan
    if plan.journey.entry.segment is None:
        _fail(
            f"{journey} is entered on the event {plan.journey.entry.event}, not by a segment: "
            "broadcast works on journeys with entry: {segment, every} or {segment, once_at}"
        )
    db = Database(settings.database_url)
    try:
        _migrated(db)
        catalog.register(db)
        if dry_run:
            report = audience.dry_run(
                db, plan, datetime.now(UTC), default_timezone=settings.default_timezone
            )
            if as_json:
                typer.echo(json.dumps(_dry_run_json(report), indent=2))
            else:
                for line in dry_run_lines(report):
                    typer.echo(line)
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
        ticks = audience.latest_ticks(db, journey)
    finally:
        db.dispose()
    description = asyncio.run(_schedule_description(settings, journey))
    for line in audience_status_lines(plan, description, ticks):
        typer.echo(line)


async def _broadcast_now(settings: Settings, plan: Any) -> Any:
    from journeyman import schedules

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

    from journeyman import schedules
    from journeyman.temporal import connect

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


def _run_control(workflow_id: str, action: str, who: str, why: str, to: str | None = None) -> None:
    from journeyman import controls
    from journeyman.storage.db import Database
    from journeyman.types import OperatorRequest

    settings = get_settings()
    _uses_temporal()
    db = Database(settings.database_url)
    try:
        _migrated(db)

        async def go() -> str:
            client = await _operator_client(settings)
            request = OperatorRequest(who=who, why=why, to=to)
            return await controls.control_run(client, db, workflow_id, action, request)

        detail = _control(go)
    finally:
        db.dispose()
    typer.echo(f"{workflow_id}: {detail}")


def _control(call: Any) -> Any:
    """Run an operator control (a coroutine function); a refusal is one line on stderr
    and exit status 1."""
    from temporalio.service import RPCError

    from journeyman import devstate
    from journeyman.controls import ControlError

    try:
        return asyncio.run(call())
    except ControlError as exc:
        _fail(exc.message)
    except RPCError as exc:
        _fail(f"Temporal answered: {exc.message}")
    except Exception as exc:
        if devstate.is_undecodable(exc):
            _fail(devstate.missing_key_message())
        raise


async def _operator_client(settings: Settings) -> Any:
    from journeyman.temporal import connect

    try:
        return await asyncio.wait_for(connect(settings), timeout=10)
    except (RuntimeError, TimeoutError) as exc:
        address = settings.temporal_address or "localhost:7233"
        _fail(f"cannot reach Temporal at {address} ({exc}); is `journeyman dev` running?")


def run_lines(view: Any) -> list[str]:
    """`journeyman run show`: where the run is and the path that led there."""
    state = view.state
    at = state.current_step or "-"
    if state.waiting_for:
        at += f" (waiting for {state.waiting_for})"
    lines = [
        f"{view.workflow_id}  {view.status}",
        f"journey {state.journey_id} version {state.version}, customer {state.customer_id}"
        + (" (holdout)" if state.holdout else ""),
        f"current step: {at}",
        "",
        "path (UTC)",
    ]
    rows = [
        [
            "  " + entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            entry.step,
            entry.action,
            entry.detail,
        ]
        for entry in state.path
    ]
    if not rows:
        return [*lines, "  (empty)"]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return lines + [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]) for r in rows
    ]


# -- database -------------------------------------------------------------------------


def _migrated(db: Any) -> None:
    """Bring the configured database to the current schema, or stop saying why."""
    from journeyman.storage import migrate

    try:
        migrate.upgrade(db)
    except migrate.MigrationError as exc:
        _fail(str(exc))


db_app = typer.Typer(help="The database schema: migrations with Alembic.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate DATABASE_URL to the newest schema (dev, the worker and the API do it at
    start-up; run it by hand before rolling out several workers at once)."""
    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        before = migrate.current(db)
        _migrated(db)
        after = migrate.current(db)
    finally:
        db.dispose()
    if before == after:
        typer.echo(f"database already at {after}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current() -> None:
    """The schema revision DATABASE_URL is at, and the newest one."""
    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        typer.echo(f"current {migrate.current(db) or 'none'}, newest {migrate.head()}")
    finally:
        db.dispose()


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("-m", "--message", help="What changed.")],
) -> None:
    """For developers: write the next migration from the models (review it!) against a
    scratch SQLite database at the current head."""
    import tempfile

    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/scratch.db")
        try:
            migrate.upgrade(db)
            migrate.revision(db, message)
        finally:
            db.dispose()


# -- parked events ----------------------------------------------------------------------

events_app = typer.Typer(
    help="Events the dispatcher could not hand to Temporal: list them, try them again.",
    no_args_is_help=True,
)
app.add_typer(events_app, name="events")


@events_app.command("failed")
def events_failed(
    limit: Annotated[int, typer.Option(help="At most this many, the oldest.")] = 100,
) -> None:
    """Parked events (10 failed hand-overs), oldest first, with their last error."""
    from journeyman import parked
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        _migrated(db)
        with db.session() as session:
            events = parked.listing(session, limit)
            total = parked.count(session)
    finally:
        db.dispose()
    if not events:
        typer.echo("no parked events")
        return
    _table(
        ["id", "parked (UTC)", "customer", "event", "message id", "attempts", "last error"],
        [
            [
                str(e.id),
                e.parked_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
                e.customer_id,
                e.name or e.type,
                e.message_id,
                str(e.attempts),
                (e.last_error or "").splitlines()[0] if e.last_error else "",
            ]
            for e in events
        ],
    )
    if total > len(events):
        typer.echo(f"... and {total - len(events)} more (--limit)")
    typer.echo("`journeyman events retry ID ...` hands them over again (no ID: all of them)")


@events_app.command("retry")
def events_retry(
    ids: Annotated[
        list[str] | None,
        typer.Argument(help="Event ids or message ids, as `events failed` lists them; none: all."),
    ] = None,
) -> None:
    """Hand parked events over again: the running dispatcher takes them on its next pass."""
    from journeyman import parked
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        _migrated(db)
        result = parked.retry(db, ids or [])
    finally:
        db.dispose()
    retried = " ".join(str(i) for i in result.retried)
    missing = "not parked events (unknown, or not parked): " + " ".join(result.not_parked)
    if not result.retried:
        if result.not_parked:
            _fail(missing)
        typer.echo("no parked events")
        return
    typer.echo(f"{_count(len(result.retried), 'event')} pending again: {retried}")
    if result.not_parked:
        # Those retried took effect: the command succeeds, and says what it left.
        typer.echo(missing, err=True)


# -- catalogs ---------------------------------------------------------------------------

catalog_app = typer.Typer(
    help="Catalogs (products, stores...) that journeys read at send time.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")


def _catalog_files(specs: list[str] | None) -> dict[str, Any]:
    """simulate and backtest `--catalog NAME=FILE`: the catalogs, or stop saying why."""
    from journeyman import catalogs

    try:
        return catalogs.read_catalog_files(specs or [])
    except catalogs.CatalogError as exc:
        _fail(str(exc))


def _preview_lookups(given: dict[str, Any]) -> dict[str, Any]:
    """`catalog()` over the files of `--catalog`; `viewed_products()` their first items."""
    items = {name: {item.id: item.data for item in found} for name, found in given.items()}

    def catalog(name: Any, ident: Any) -> Any:
        return items.get(name, {}).get(str(ident))

    def viewed_products(limit: Any = 3, catalog: Any = "products", within: Any = None) -> Any:
        now = datetime.now(UTC)
        return [
            {**item, "viewed_at": now} for item in list(items.get(catalog, {}).values())[:limit]
        ]

    return {"catalog": catalog, "viewed_products": viewed_products}


@catalog_app.command("import")
def catalog_import(
    catalog: Annotated[str, typer.Argument(help="The catalog's name, e.g. products.")],
    file: Annotated[
        Path,
        typer.Argument(help="A .csv (a header row names the fields, one is id) or .jsonl file."),
    ],
) -> None:
    """Insert or replace the file's items in DATABASE_URL, all in one transaction: a
    file with a bad line (named file:line) changes nothing."""
    from journeyman import catalogs
    from journeyman.storage.db import Database

    try:
        catalogs.check_name(catalog)
        items = catalogs.read_file(file)
    except catalogs.CatalogError as exc:
        _fail(str(exc))
    db = Database(get_settings().database_url)
    try:
        _migrated(db)
        with db.session() as session:
            catalogs.load(session, {catalog: items})
    finally:
        db.dispose()
    typer.echo(f"{_count(len(items), 'item')} upserted into catalog {catalog}")
