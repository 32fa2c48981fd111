"""Runs the Journeyman Temporal worker: `python worker.py` or `journeyman worker`.

SIGTERM and SIGINT stop polling and give running activities JOURNEYMAN_SHUTDOWN_GRACE
seconds to finish (a message being sent is completed and recorded) before exiting.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from journeyman import logs, metrics
from journeyman.codec import PlaintextRefused, require_payload_key
from journeyman.routing import Catalog
from journeyman.runtime import build_worker, journey_activities, sync_schedules, worker_options
from journeyman.settings import get_settings
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.temporal import connect, metrics_runtime

log = logging.getLogger(__name__)


async def main() -> None:
    settings = get_settings()
    require_payload_key(settings, "worker")
    db = Database(settings.database_url)
    migrate.upgrade(db)
    catalog = Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)
    catalog.register(db)
    client = await connect(settings, runtime=metrics_runtime(settings))
    await sync_schedules(client, catalog, settings)
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
    try:
        await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            log.info("stopping: running activities get %s s to finish", settings.shutdown_grace)
            await worker.shutdown()
        await running
    finally:
        stopping.cancel()
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
