"""Runs the Journeyman Temporal worker: `python worker.py` or `journeyman worker`."""

from __future__ import annotations

import asyncio
import logging

from journeyman.routing import Catalog
from journeyman.runtime import build_worker, journey_activities
from journeyman.settings import get_settings
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.temporal import connect


async def main() -> None:
    settings = get_settings()
    db = Database(settings.database_url)
    migrate.upgrade(db)
    Catalog.from_dirs(settings.journeys_dir, settings.templates_dir).register(db)
    client = await connect(settings)
    activities = journey_activities(db, settings)
    worker = build_worker(client, settings.task_queue, activities)
    logging.getLogger(__name__).info("worker polling task queue %s", settings.task_queue)
    try:
        await worker.run()
    finally:
        activities.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main())
