"""A benchmark worker, in a process of its own so that its memory and CPU are its own.

    python -m bench.worker journeyman|handwritten --ready FILE

Settings come from the environment as for `journeyman worker` (TEMPORAL_ADDRESS,
DATABASE_URL, JOURNEYMAN_TASK_QUEUE, JOURNEYMAN_ACTIVITY_THREADS, ...). `journeyman`
builds the product's worker (`journeyman.wiring.build_worker` with `worker_options`);
`handwritten` builds one with the same options, activities, interceptors and sandbox
(its workflow module passed through, as the product's are) whose
workflows are the hand-written baselines. `FILE` is written once the worker has
connected and is about to poll; SIGTERM stops it as it stops `journeyman worker`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.journey import JourneyActivities
from bench.handwritten import HandWrittenJourney, HandWrittenSend, HandWrittenWait
from journeyman.platform.logs import ActivityLogContext
from journeyman.platform.temporal import connect
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.wiring import (
    ACTIVITY_THREADS,
    MAX_CACHED_WORKFLOWS,
    build_worker,
    journey_activities,
    worker_options,
)


def handwritten_worker(
    client: Client,
    task_queue: str,
    activities: JourneyActivities,
    *,
    activity_threads: int = ACTIVITY_THREADS,
    max_cached_workflows: int = MAX_CACHED_WORKFLOWS,
    shutdown_grace: timedelta = timedelta(),
) -> Worker:
    """`build_worker` with the baselines as workflows: every other option the same."""
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[HandWrittenJourney, HandWrittenWait, HandWrittenSend],
        activities=[
            activities.evaluate,
            activities.next_local_time,
            activities.finish_run,
            activities.record_steps,
            activities.update_profile,
            activities.call_webhook,
            activities.send,
        ],
        activity_executor=ThreadPoolExecutor(activity_threads),
        max_concurrent_activities=activity_threads,
        max_cached_workflows=max_cached_workflows,
        graceful_shutdown_timeout=shutdown_grace,
        interceptors=[ActivityLogContext()],
        # The product's worker passes its workflow modules through the sandbox
        # (`journeyman.wiring.workflow_runner`): the baselines' module is passed through
        # the same way, so the sandbox costs both sides alike.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_modules("bench.handwritten")
        ),
    )


async def main(kind: str, ready: Path) -> None:
    settings = get_settings()
    db = Database(settings.database_url)
    client = await connect(settings)
    activities = journey_activities(db, settings)
    options: dict[str, Any] = worker_options(settings)
    build = build_worker if kind == "journeyman" else handwritten_worker
    worker = build(client, settings.task_queue, activities, **options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(worker.run())
    ready.write_text("ready\n")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([running, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not running.done():
        await worker.shutdown()
    await running
    stopping.cancel()
    activities.close()
    db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("kind", choices=["journeyman", "handwritten"])
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(main(args.kind, args.ready))
