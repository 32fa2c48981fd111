"""The HTTP API: event intake (Segment format), operators' reads, health, OpenAPI docs.

`create_app` wires what it is given (settings, database, router, dispatcher) and reads
nothing from the environment. The app's lifespan runs the dispatcher, which hands
stored events to Temporal; requests never wait for Temporal.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import FastAPI

from journeyman.api import errors
from journeyman.api.auth import webhook_keys
from journeyman.api.bodylimit import BodyLimit
from journeyman.api.deps import Services
from journeyman.api.routes import (
    catalogs,
    codec,
    confirm,
    customers,
    events,
    health,
    inbox,
    journeys,
    metrics,
    outbox,
    pages,
    provider_webhooks,
    releases,
    runs,
    unsubscribe,
)
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.routing import Router
from journeyman.settings import Settings
from journeyman.storage.db import Database

DESCRIPTION = """
Send customer events in the Segment HTTP Tracking API format (`/v1/track`,
`/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`, `/v1/alias`, `/v1/batch`) with a
write key as the HTTP Basic user name (a client key, public, in apps; or a server key,
secret, from your servers), or as Standard Webhooks signed requests. Read customers,
journeys and the outbox with the admin token (`Authorization: Bearer <token>`). Errors are JSON:
`{"error": "...", "detail": [{"field": ..., "message": ..., "type": ...}]}`.
"""


# Each module's `router`, in the order the routes are matched (and documented).
ROUTES = (
    events,
    customers,
    journeys,
    outbox,
    health,
    metrics,
    unsubscribe,
    confirm,
    codec,
    provider_webhooks,
    pages,
    runs,
    releases,
    inbox,
    catalogs,
)


def create_app(
    settings: Settings,
    db: Database,
    router: Router,
    *,
    dispatcher: Dispatcher | None = None,
    run_dispatcher: bool = True,
) -> FastAPI:
    """The API over `db`, routing through `router`.

    The lifespan runs `dispatcher` (one over `db` and `router` unless given, routing up
    to `settings.dispatch_concurrency` customers at once) as a background task;
    `run_dispatcher=False` leaves driving it to the caller.
    """
    if settings.webhook_secret is not None:
        webhook_keys(settings.webhook_secret.get_secret_value())  # a bad secret fails here
    services = Services(
        settings=settings,
        db=db,
        router=router,
        dispatcher=dispatcher or Dispatcher(db, router, concurrency=settings.dispatch_concurrency),
    )
    app = FastAPI(
        title="Journeyman",
        summary="Marketing journeys on Temporal",
        description=DESCRIPTION,
        version="1",
        lifespan=_lifespan(services.dispatcher) if run_dispatcher else None,
    )
    app.state.services = services
    errors.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for module in ROUTES:
        app.include_router(module.router)
    app.include_router(inbox.script_router)
    return app


def _lifespan(dispatcher: Dispatcher) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The app's lifespan: `dispatcher` runs as a background task while the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(dispatcher.run(), name="journeyman-dispatcher")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return lifespan
