"""Journeys for operators: definitions, versions, and how many customers are in them."""

from __future__ import annotations

import asyncio
from collections import Counter

from anyio import from_thread
from fastapi import APIRouter, Depends
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.service import RPCError

from journeyman.api import queries
from journeyman.api.deps import RouterDep, SessionDep, SettingsDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.schemas import (
    AudienceCheckView,
    AudienceView,
    JourneySummary,
    JourneyView,
    VersionView,
)
from journeyman.api.views import view_of
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.insight.diff import as_written
from journeyman.insight.stats import JourneyStats, UnknownJourney, journey_stats, running_steps
from journeyman.names import schedule_id
from journeyman.optimization.holdout import GlobalHoldout, HoldoutSettingsError
from journeyman.settings import Settings

# How long the journey page waits for Temporal's visibility before showing the step
# counts as unavailable.
VISIBILITY_TIMEOUT_SECONDS = 5.0
# A segment journey's latest checks shown with it.
AUDIENCE_CHECKS = 10

router = APIRouter(prefix="/v1/journeys", tags=["journeys"], dependencies=[Depends(require_admin)])


@router.get("", response_model=list[JourneySummary])
def list_journeys(session: SessionDep, journeys: RouterDep) -> list[JourneySummary]:
    """Every journey in force, and those with runs of an older version still going."""
    counts = queries.run_counts(session)
    ids = sorted({*journeys.catalog.compiled, *queries.registered_journey_ids(session)})
    return [_summary(session, journeys.catalog, journey_id, counts) for journey_id in ids]


@router.get("/{journey_id}", response_model=JourneyView, responses={404: {}})
def read_journey(
    journey_id: str, session: SessionDep, journeys: RouterDep, settings: SettingsDep
) -> JourneyView:
    """The definition in force, every version registered, live counts and outcomes."""
    catalog = journeys.catalog
    versions = queries.journey_versions(session, journey_id)
    if journey_id not in catalog.compiled and not versions:
        raise ApiError(
            404,
            f"no journey {journey_id!r}",
            [{"field": "journey_id", "message": "unknown", "type": "not_found"}],
        )
    summary = _summary(session, catalog, journey_id, queries.run_counts(session, journey_id))
    running_by_version = queries.running_by_version(session, journey_id)
    outcomes = queries.finished_outcomes(session, journey_id)
    plan = drawn_plan(session, catalog, journey_id)
    steps = from_thread.run(_running_steps, journeys.client, journey_id)
    return JourneyView(
        **summary.model_dump(),
        definition=as_written(plan.journey.model_dump(mode="json")),
        versions=[
            VersionView(
                version=v.version,
                created_at=v.created_at,
                current=v.version == summary.current_version,
                running=running_by_version.get(v.version, 0),
            )
            for v in versions
        ],
        outcomes={str(k or "unknown"): n for k, n in outcomes.items()},
        stats=_stats(session, journey_id, steps, _global_holdout(settings)),
        audience=_audience(session, plan, journeys.task_queue),
    )


def _audience(session: Session, plan: Plan, task_queue: str) -> AudienceView | None:
    entry = plan.journey.entry
    if entry.segment is None:
        return None
    ticks = queries.audience_checks(session, plan.journey.id, AUDIENCE_CHECKS)
    return AudienceView(
        segment=entry.segment.text,
        every=entry.every,
        once_at=entry.once_at,
        schedule_id=schedule_id(plan.journey.id, task_queue),
        checks=[
            view_of(
                AudienceCheckView,
                t,
                skipped=dict(t.skipped or {}),
                error_samples=list(t.error_samples or []),
            )
            for t in ticks
        ],
    )


def _global_holdout(settings: Settings) -> GlobalHoldout:
    """The installation's global holdout, as the worker applies it; without a key the
    worker cannot hold anyone out, and neither do the stats."""
    try:
        return GlobalHoldout.from_settings(settings)
    except HoldoutSettingsError:
        return GlobalHoldout()


def _stats(
    session: Session, journey_id: str, steps: dict[str, int] | None, holdout: GlobalHoldout
) -> JourneyStats | None:
    try:
        return journey_stats(session, journey_id, now_at_step=steps, global_holdout=holdout)
    except UnknownJourney:  # in the journeys folder, not registered yet
        return None


async def _running_steps(client: Client, journey_id: str) -> dict[str, int] | None:
    """Running runs by step, or None when Temporal's visibility does not answer in time
    (or at all: the API's client connects lazily, and one that cannot connect raises
    `RuntimeError("Failed client connect: ...")`)."""
    try:
        return await asyncio.wait_for(
            running_steps(client, journey_id), timeout=VISIBILITY_TIMEOUT_SECONDS
        )
    except (RPCError, TimeoutError, RuntimeError):
        return None


def _summary(
    session: Session, catalog: Catalog, journey_id: str, counts: Counter[tuple[str, str]]
) -> JourneySummary:
    compiled = catalog.compiled.get(journey_id)
    plan = compiled.plan if compiled is not None else queries.latest_plan(session, journey_id)
    journey = plan.journey if plan is not None else None
    return JourneySummary(
        id=journey_id,
        name=journey.name if journey else None,
        description=journey.description if journey else None,
        current_version=compiled.plan.version if compiled is not None else None,
        entry_event=journey.entry.event if journey else None,
        running=counts[(journey_id, "running")],
        entered=sum(n for (j, _), n in counts.items() if j == journey_id),
    )


def drawn_plan(session: Session, catalog: Catalog, journey_id: str) -> Plan:
    """The version in force; when its file is gone, the last one registered."""
    compiled = catalog.compiled.get(journey_id)
    if compiled is not None:
        return compiled.plan
    plan = queries.latest_plan(session, journey_id)
    assert plan is not None, "a journey with neither a file nor a version is a 404"
    return plan
