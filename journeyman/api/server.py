"""Running the API: what `journeyman api` and `journeyman dev` call."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Sequence
from typing import Any

import uvicorn

from journeyman.api.app import create_app
from journeyman.api.routes.codec import allow_ui
from journeyman.events.routing import Catalog, Router
from journeyman.operations import releases
from journeyman.platform.codec import require_payload_key
from journeyman.platform.temporal import connect
from journeyman.privacy.pseudonyms import settings_key
from journeyman.settings import Settings
from journeyman.storage import migrate
from journeyman.storage.db import Database

GRACEFUL_SHUTDOWN_SECONDS = 10
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


def server_config(app: Any, host: str, port: int) -> uvicorn.Config:
    """uvicorn's settings. Its own log set-up is left out (`log_config=None`): its
    loggers then go to the root logger, which `journeyman.platform.logs.configure` set up, so
    that with JOURNEYMAN_LOG_FORMAT=json a failed request's traceback is a JSON line like
    every other, not uvicorn's colored text. Handlers a uvicorn configured earlier in the
    process left on its loggers are taken off for the same reason."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


async def serve(
    settings: Settings,
    host: str,
    port: int,
    ui_origins: Sequence[str] = (),
    temporal_ui_url: str | None = None,
) -> None:
    """Serve the API and run the dispatcher until cancelled (or until uvicorn is told to
    stop by a signal). The router serves the live release from the database and follows
    every new one (journeyman/operations/releases.py); only an empty database gets these files
    published (and only there does a journey file with errors stop the start).
    `ui_origins`: the local Temporal UI of `journeyman dev`,
    allowed to decode payloads through `/codec` without the admin token."""
    require_payload_key(settings, "API")
    # Lazy: the API accepts (stores) events even while Temporal is down.
    client = await connect(settings, lazy=True)
    db = Database(settings.database_url)
    migrate.upgrade(db)
    try:
        catalog = releases.start_catalog(
            db, settings.journeys_dir, settings.templates_dir, f"{releases.FIRST_START} (api)"
        )
        router = Router(
            client,
            db,
            catalog,
            settings.task_queue,
            default_timezone=settings.default_timezone,
            erasure_key=settings_key(settings),
        )
        app = create_app(settings, db, router)
        if temporal_ui_url:  # where the journey pages link to
            app.state.temporal_ui_url = temporal_ui_url
        if ui_origins:  # the dev server's UI cannot send the admin token
            allow_ui(app, ui_origins, open_on_loopback=True)
        server = uvicorn.Server(server_config(app, host, port))

        async def follow(live: Catalog) -> None:
            router.catalog = live  # the dispatcher routes through this router

        async with releases.Follower(db, follow).running():
            _freeze_startup_objects()
            serving = asyncio.create_task(server.serve(), name="journeyman-api")
            try:
                await asyncio.shield(serving)
            except asyncio.CancelledError:
                # Let uvicorn finish its shutdown, which stops the dispatcher (lifespan).
                server.should_exit = True
                await serving
                raise
    finally:
        db.dispose()


def _freeze_startup_objects() -> None:
    """Leave what the start built (modules, the app, the catalog: most of the heap) out
    of the garbage collector's full collections, which otherwise walk all of it again
    every so often while requests wait: 100-250 ms each in the API under intake load,
    about 0.5 s of CPU in 15 s (issue 19; the bare endpoint's heap is a fraction of it).
    Garbage made before is collected first; objects frozen are never freed, which is
    what the start's are for the life of the process."""
    gc.collect()
    gc.freeze()
