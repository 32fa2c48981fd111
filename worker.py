"""Runs the Journeyman Temporal worker: `python worker.py` or `journeyman worker`.

SIGTERM and SIGINT stop polling and give running activities JOURNEYMAN_SHUTDOWN_GRACE
seconds to finish (a message being sent is completed and recorded) before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from journeyman.events.routing import Catalog
from journeyman.operations import releases
from journeyman.platform import logs, metrics
from journeyman.platform.codec import PlaintextRefused, require_payload_key
from journeyman.platform.temporal import connect, metrics_runtime
from journeyman.settings import get_settings
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.wiring import build_worker, journey_activities, sync_schedules, worker_options

log = logging.getLogger(__name__)


async def main() -> None:
    settings = get_settings()
    require_payload_key(settings, "worker")
    db = Database(settings.database_url)
    migrate.upgrade(db)
    # The live release, not the files: only an empty database gets the files published.
    catalog = releases.start_catalog(
        db, settings.journeys_dir, settings.templates_dir, f"{releases.FIRST_START} (worker)"
    )
    client = await connect(settings, runtime=metrics_runtime(settings))
    await sync_schedules(client, catalog, settings)

    async def follow(live: Catalog) -> None:
        await sync_schedules(client, live, settings)

    follower = releases.Follower(db, follow)
    if settings.worker_metrics_port is not None:
        metrics.serve_worker_metrics(settings.worker_metrics_port, settings.metrics_host)
    activities = journey_activities(db, settings)
    worker = build_worker(client, settings.task_queue, activities, **worker_options(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("worker polling task queue %s", settings.task_queue)
    running = asyncio.create_task(worker.run())
    stopping = asyncio.create_task(stop.wait())
    following = asyncio.create_task(follower.run(), name="journeyman-releases")
    try:
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            log.info("stopping: running activities get %s s to finish", settings.shutdown_grace)
            await worker.shutdown()
        await running
    finally:
        stopping.cancel()
        following.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        activities.close()
        db.dispose()
    log.info("worker stopped")


if __name__ == "__main__":
    logs.configure(get_settings().log_format)
    try:
        asyncio.run(main())
    except PlaintextRefused as exc:
        raise SystemExit(f"worker: {exc}") from None
