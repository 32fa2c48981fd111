"""Wiring shared by `journeyman dev`, `journeyman worker`, `simulate` and the tests."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.audience import AudienceActivities
from activities.journey import JourneyActivities
from activities.optimize import OptimizeActivities
from journeyman.audiences import schedules
from journeyman.events.routing import Catalog
from journeyman.messaging.channels import Channels
from journeyman.messaging.providers import Provider
from journeyman.messaging.ratelimit import rate_limits
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.platform.codec import PayloadConverter
from journeyman.platform.logs import ActivityLogContext
from journeyman.settings import Settings
from journeyman.storage.db import Database
from workflows.audience import AudienceWorkflow
from workflows.journey import JourneyWorkflow

log = logging.getLogger(__name__)

ACTIVITY_THREADS = 32
MAX_CACHED_WORKFLOWS = 1000  # the SDK's default

# The workflows' own modules, passed through the sandbox like the interpreter's modules
# they import: by default the sandbox executes a workflow's module again for every new
# run (every import, `@workflow.defn` inspecting the class and each of its handlers),
# to give the run a fresh copy of the module's globals. Ours hold none (a run's state is
# on its workflow instance), so a run uses the module the worker imported once. Runs
# stay sandboxed: their code still runs inside the sandbox, with its restrictions.
WORKFLOW_MODULES = ("workflows.journey", "workflows.audience")


def workflow_runner() -> SandboxedWorkflowRunner:
    """The SDK's sandbox with `WORKFLOW_MODULES` passed through."""
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*WORKFLOW_MODULES)
    )


def journey_activities(
    db: Database,
    settings: Settings,
    providers: dict[str, Provider] | None = None,
    signing_key: bytes | None = None,
) -> JourneyActivities:
    """The activities with their channels. `providers` None: those the settings
    configure (the outbox for the rest); either way the settings' rate limits pace them
    by provider name. `signing_key` None: the settings' key, which must exist
    (unsubscribe links are signed with it).

    Raises:
        ValueError: a provider is half-configured, or a setting is unusable.
    """
    if providers is None:
        from activities.provider_config import build_providers

        providers = build_providers(settings)
    channels = Channels(
        providers=providers,
        default_quiet_hours=settings.default_quiet_hours,
        default_timezone=settings.default_timezone,
        default_frequency_cap=settings.default_frequency_cap,
        public_base_url=settings.public_base_url,
        signing_key=signing_key or settings.signing_key(),
        rate_limits=rate_limits(settings),
        confirm_contacts=settings.client_contacts == "confirm",
    )
    from journeyman.privacy.links import allowed_domains

    domains = allowed_domains(settings.public_base_url, settings.email_from, settings.link_domains)
    activities = JourneyActivities(
        db, channels, default_timezone=settings.default_timezone, link_domains=domains
    )
    activities.global_holdout = GlobalHoldout.from_settings(settings, signing_key)
    return activities


def build_worker(
    client: Client,
    task_queue: str,
    activities: JourneyActivities,
    executor: ThreadPoolExecutor | None = None,
    *,
    activity_threads: int = ACTIVITY_THREADS,
    max_cached_workflows: int = MAX_CACHED_WORKFLOWS,
    shutdown_grace: timedelta = timedelta(),
) -> Worker:
    """The worker of the journey and audience workflows and their activities.
    `shutdown_grace`: how long `Worker.shutdown` lets running activities finish before
    cancelling them (JOURNEYMAN_SHUTDOWN_GRACE; `worker_options` reads the settings).

    The client must carry the product's data converter (`journeyman.platform.temporal.
    connect` gives it one): with the workflow modules passed through the sandbox, only its
    shared adapters, built outside the sandbox, can decode a run's input; another
    converter would fail every run's first task, so it is refused here."""
    converter = client.data_converter.payload_converter_class
    if not issubclass(converter, PayloadConverter):
        raise ValueError(
            f"the worker's client converts payloads with {converter.__qualname__}; "
            "connect with journeyman.platform.temporal.connect (or give the client "
            "journeyman.platform.codec.data_converter(settings))"
        )
    audience = AudienceActivities(
        activities.db, activities.default_timezone, erasure_key=activities.erasure_key
    )
    optimize = OptimizeActivities(
        activities.db, activities.default_timezone, activities.global_holdout
    )
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[JourneyWorkflow, AudienceWorkflow],
        activities=[
            audience.enter,
            activities.evaluate,
            activities.next_local_time,
            activities.finish_run,
            activities.record_steps,
            activities.update_profile,
            activities.call_webhook,
            activities.send,
            optimize.best_send_time,
            optimize.split_counts,
        ],
        activity_executor=executor or ThreadPoolExecutor(activity_threads),
        max_concurrent_activities=activity_threads,
        max_cached_workflows=max_cached_workflows,
        graceful_shutdown_timeout=shutdown_grace,
        interceptors=[ActivityLogContext()],
        workflow_runner=workflow_runner(),
    )


def worker_options(settings: Settings) -> dict[str, Any]:
    """`build_worker`'s keyword arguments from the settings, for production workers."""
    return {
        "activity_threads": settings.activity_threads,
        "max_cached_workflows": settings.max_cached_workflows,
        "shutdown_grace": timedelta(seconds=settings.shutdown_grace),
    }


async def sync_schedules(
    client: Client, catalog: Catalog, settings: Settings
) -> schedules.SyncReport | None:
    """The segment journeys' Temporal Schedules, made to match the journey files, as a
    worker starts. A failure is logged, not fatal: event journeys run either way."""
    try:
        report = await schedules.sync(
            client,
            catalog.plans,
            task_queue=settings.task_queue,
            timezone=settings.default_timezone,
        )
    except RPCError as exc:
        log.error("segment schedules not synced, segment journeys will not run: %s", exc)
        return None
    for line in report.lines():
        log.info(line)
    return report
