"""Looking at a running service: `outbox`, `runs`, `stats`, `preview`, `send-event`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from journeyman.cli.common import (
    CHANNELS,
    _catalog_files,
    _count,
    _fail,
    _migrated,
    _preview_lookups,
    _running_steps,
    _table,
    _uses_temporal,
    app,
)
from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.settings import Settings, get_settings

if TYPE_CHECKING:
    from journeyman.optimization.holdout import GlobalHoldout

# -- operating ------------------------------------------------------------------------


@app.command()
def outbox(
    customer: Annotated[str | None, typer.Option(help="Only this customer's messages.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the newest.")] = 50,
) -> None:
    """Messages held in the outbox (channels with no provider configured), newest last."""
    from sqlalchemy import select

    from journeyman.insight.timeline import message_summary
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
    from journeyman.platform.temporal import visibility_literal
    from workflows.patches import without_query

    clauses = [f"WorkflowType = {visibility_literal(JOURNEY_WORKFLOW)}"]
    if journey:
        clauses.append(f"{JOURNEY_ID.name} = {visibility_literal(journey)}")
    if customer:
        clauses.append(f"{CUSTOMER_ID.name} = {visibility_literal(customer)}")
    if without_patch:
        clauses.append(without_query(without_patch))
    return " AND ".join(clauses)


async def _list_runs(settings: Settings, query: str, limit: int) -> list[list[str]]:
    from journeyman.names import JOURNEY_STEP
    from journeyman.platform.temporal import connect

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
    from journeyman.insight.stats import UnknownJourney, journey_stats
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
            report = journey_stats(
                session,
                journey,
                version=version,
                now_at_step=steps,
                global_holdout=_global_holdout(settings),
            )
    except UnknownJourney as exc:
        _fail(f"{exc}: is the id right, and has the API or worker run with it?")
    finally:
        db.dispose()
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    from journeyman.optimization.splits import split_lines

    for line in [*report.lines(), *split_lines(report.splits)]:
        typer.echo(line.rstrip())


def _global_holdout(settings: Settings) -> GlobalHoldout:
    """The installation's global holdout (journeyman/optimization/holdout.py), keyed as
    the worker keys it: `dev` keeps its admin token next to the state."""
    from pydantic import SecretStr

    from journeyman.optimization.holdout import GlobalHoldout, HoldoutSettingsError
    from journeyman.settings import STATE_DIR

    kept = STATE_DIR / "admin_token"  # what `dev` keys the holdout with, next to it
    if settings.secret_key is None and settings.admin_token is None and kept.is_file():
        token = SecretStr(kept.read_text().strip())
        settings = settings.model_copy(update={"admin_token": token})
    try:
        return GlobalHoldout.from_settings(settings)
    except HoldoutSettingsError as exc:
        _fail(str(exc))


def _global_stats(as_json: bool) -> None:
    """`journeyman stats --global`: journeyman/optimization/holdout.py."""
    from journeyman.optimization.holdout import global_lift, global_lines
    from journeyman.storage.db import Database

    settings = get_settings()
    holdout = _global_holdout(settings)
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
    from journeyman.insight import scenario
    from journeyman.messaging.rendering import Renderer, RenderError

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
        customer = scenario.load_profile(profile)
        names = preview_names(
            customer,
            _load_event(event) if event else None,
            settings.default_timezone,
            settings.public_base_url,
        )
    except scenario.SimulationError as exc:
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
    from journeyman.insight.scenario import SimulationError, read_json

    data = read_json(path)
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
    from journeyman.contracts import CustomerEvent
    from journeyman.customers.clock import zone
    from journeyman.customers.profiles import clock_names
    from journeyman.storage.models import profile_of

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
    goes outside it, if the template has one (journeyman/messaging/whatsapp.py)."""
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
    from journeyman.platform.devserver import SERVER_KEY_FILE, WRITE_KEY_FILE

    if settings.server_key_list:
        return settings.server_key_list[0]
    if SERVER_KEY_FILE.is_file() and (kept := SERVER_KEY_FILE.read_text().strip()):
        return kept
    if settings.write_key_list:
        return settings.write_key_list[0]
    if WRITE_KEY_FILE.is_file():
        return WRITE_KEY_FILE.read_text().strip() or None
    return None
