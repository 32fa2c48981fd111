"""Journeys for operators: definitions, versions, and how many customers are in them."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from anyio import from_thread
from fastapi import APIRouter, Depends
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from temporalio.client import Client
from temporalio.service import RPCError

from journeyman.api.deps import RouterDep, SessionDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.schemas import (
    AudienceCheckView,
    AudienceView,
    JourneySummary,
    JourneyView,
    VersionView,
)
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.insight.stats import JourneyStats, UnknownJourney, journey_stats, running_steps
from journeyman.names import schedule_id
from journeyman.storage.models import AudienceTick, JourneyRun, JourneyVersion

# How long the journey page waits for Temporal's visibility before showing the step
# counts as unavailable.
VISIBILITY_TIMEOUT_SECONDS = 5.0
# A segment journey's latest checks shown with it.
AUDIENCE_CHECKS = 10

router = APIRouter(prefix="/v1/journeys", tags=["journeys"], dependencies=[Depends(require_admin)])


@router.get("", response_model=list[JourneySummary])
def list_journeys(session: SessionDep, journeys: RouterDep) -> list[JourneySummary]:
    """Every journey in force, and those with runs of an older version still going."""
    counts = _counts(session)
    ids = sorted({*journeys.catalog.compiled, *_registered_ids(session)})
    return [_summary(session, journeys.catalog, journey_id, counts) for journey_id in ids]


@router.get("/{journey_id}", response_model=JourneyView, responses={404: {}})
def read_journey(journey_id: str, session: SessionDep, journeys: RouterDep) -> JourneyView:
    """The definition in force, every version registered, live counts and outcomes."""
    catalog = journeys.catalog
    versions = list(
        session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.created_at)
        )
    )
    if journey_id not in catalog.compiled and not versions:
        raise ApiError(
            404,
            f"no journey {journey_id!r}",
            [{"field": "journey_id", "message": "unknown", "type": "not_found"}],
        )
    summary = _summary(session, catalog, journey_id, _counts(session, journey_id))
    running_by_version: dict[str, int] = dict(
        session.execute(
            select(JourneyRun.version, func.count())
            .where(JourneyRun.journey_id == journey_id, JourneyRun.status == "running")
            .group_by(JourneyRun.version)
        ).all()
    )
    outcomes: dict[str | None, int] = dict(
        session.execute(
            select(JourneyRun.outcome, func.count())
            .where(JourneyRun.journey_id == journey_id, JourneyRun.status != "running")
            .group_by(JourneyRun.outcome)
        ).all()
    )
    plan = _plan(catalog, journey_id, versions)
    steps = from_thread.run(_running_steps, journeys.client, journey_id)
    return JourneyView(
        **summary.model_dump(),
        definition=_readable(plan.journey.model_dump(mode="json")),
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
        stats=_stats(session, journey_id, steps),
        audience=_audience(session, plan, journeys.task_queue),
    )


def _audience(session: Session, plan: Plan, task_queue: str) -> AudienceView | None:
    entry = plan.journey.entry
    if entry.segment is None:
        return None
    ticks = session.scalars(
        select(AudienceTick)
        .where(AudienceTick.journey_id == plan.journey.id)
        .order_by(AudienceTick.at.desc(), AudienceTick.started_at.desc())
        .limit(AUDIENCE_CHECKS)
    )
    return AudienceView(
        segment=entry.segment.text,
        every=entry.every,
        once_at=entry.once_at,
        schedule_id=schedule_id(plan.journey.id, task_queue),
        checks=[
            AudienceCheckView(
                tick_id=t.tick_id,
                kind=t.kind,
                at=t.at,
                status=t.status,
                evaluated=t.evaluated,
                matched=t.matched,
                entered=t.entered,
                errors=t.errors,
                skipped=dict(t.skipped or {}),
                error_samples=list(t.error_samples or []),
            )
            for t in ticks
        ],
    )


def _stats(session: Session, journey_id: str, steps: dict[str, int] | None) -> JourneyStats | None:
    try:
        return journey_stats(session, journey_id, now_at_step=steps)
    except UnknownJourney:  # in the journeys folder, not registered yet
        return None


async def _running_steps(client: Client, journey_id: str) -> dict[str, int] | None:
    """Running runs by step, or None when Temporal's visibility does not answer in time."""
    try:
        return await asyncio.wait_for(
            running_steps(client, journey_id), timeout=VISIBILITY_TIMEOUT_SECONDS
        )
    except (RPCError, TimeoutError):
        return None


def _registered_ids(session: Session) -> set[str]:
    return set(session.scalars(select(JourneyVersion.journey_id).distinct()))


def _counts(session: Session, journey_id: str | None = None) -> Counter[tuple[str, str]]:
    """(journey id, status) -> runs."""
    query = select(JourneyRun.journey_id, JourneyRun.status, func.count()).group_by(
        JourneyRun.journey_id, JourneyRun.status
    )
    if journey_id is not None:
        query = query.where(JourneyRun.journey_id == journey_id)
    return Counter({(j, s): n for j, s, n in session.execute(query)})


def _summary(
    session: Session, catalog: Catalog, journey_id: str, counts: Counter[tuple[str, str]]
) -> JourneySummary:
    compiled = catalog.compiled.get(journey_id)
    if compiled is not None:
        plan: Plan | None = compiled.plan
    else:
        latest = session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.created_at.desc())
        ).first()
        plan = Plan.model_validate(latest.plan) if latest is not None else None
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


def _plan(catalog: Catalog, journey_id: str, versions: list[JourneyVersion]) -> Plan:
    compiled = catalog.compiled.get(journey_id)
    if compiled is not None:
        return compiled.plan
    return Plan.model_validate(versions[-1].plan)


def _readable(value: Any) -> Any:
    """The compiled journey as its author wrote it: expressions as text, not trees."""
    if isinstance(value, dict):
        if set(value) == {"text", "tree", "needs_activity"}:
            return value["text"]
        if set(value) == {"raw", "tree", "needs_activity"}:
            return value["raw"]
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    return value
