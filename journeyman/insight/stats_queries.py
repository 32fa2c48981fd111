"""The reads of journey analytics (journeyman/insight/stats.py): grouped rows, each with
its version first, so that one read serves every version's report and all together.

Reads `journey_runs`, `deliveries`, `step_log`, `entry_errors` and `entries_off`; never writes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, distinct, func, or_, select
from sqlalchemy.orm import Session

from journeyman.insight.stats_report import ENTRY_ERROR_SAMPLES, EntryErrorSample
from journeyman.storage.models import Delivery, EntryError, EntryOff, JourneyRun, StepLog


def counts_by_version(
    session: Session, kind: type[EntryError] | type[EntryOff], journey_id: str, version: str | None
) -> dict[str, int]:
    """Entry errors, or entries passed by while the journey was off, by version."""
    query = (
        select(kind.version, func.count())
        .where(kind.journey_id == journey_id)
        .group_by(kind.version)
    )
    if version is not None:
        query = query.where(kind.version == version)
    return {v: n for v, n in session.execute(query)}


def run_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, bool, str, str | None, int]]:
    """(version, held out, status, outcome, runs)."""
    query = (
        select(
            JourneyRun.version,
            JourneyRun.holdout,
            JourneyRun.status,
            JourneyRun.outcome,
            func.count(),
        )
        .where(JourneyRun.journey_id == journey_id)
        .group_by(JourneyRun.version, JourneyRun.holdout, JourneyRun.status, JourneyRun.outcome)
    )
    if version is not None:
        query = query.where(JourneyRun.version == version)
    return [(v, bool(h), s, o, n) for v, h, s, o, n in session.execute(query)]


def attributed_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, bool, int]]:
    """(version, held out, runs) of runs converted after they ended (`goal.within`)."""
    query = (
        select(JourneyRun.version, JourneyRun.holdout, func.count())
        .where(
            JourneyRun.journey_id == journey_id,
            JourneyRun.attributed_at.is_not(None),
            or_(JourneyRun.outcome.is_(None), JourneyRun.outcome != "converted"),
        )
        .group_by(JourneyRun.version, JourneyRun.holdout)
    )
    if version is not None:
        query = query.where(JourneyRun.version == version)
    return [(v, bool(h), n) for v, h, n in session.execute(query)]


def converted_runs() -> Any:
    """Runs that converted: by their goal, or within `goal.within` after they ended."""
    return or_(JourneyRun.outcome == "converted", JourneyRun.attributed_at.is_not(None))


def decided_at() -> Any:
    """When a message was sent on the workflow's clock (decided_at), like the run's start
    and end: the worker's wall clock (sent_at) differs from it in time-skipped simulations."""
    return func.coalesce(Delivery.decided_at, Delivery.sent_at)


def sent_during_run() -> ColumnElement[bool]:
    """A message of the run: sent, same workflow id, between the run's start and end."""
    at = decided_at()
    return and_(
        Delivery.workflow_id == JourneyRun.workflow_id,
        Delivery.journey_id == JourneyRun.journey_id,
        Delivery.status == "sent",
        at >= JourneyRun.started_at,
        or_(JourneyRun.ended_at.is_(None), at <= JourneyRun.ended_at),
    )


def delivery_rows(session: Session, journey_id: str, version: str | None) -> list[Any]:
    """(version, channel, status, rows, delivered, opened, clicked, complained, failed)."""
    query = (
        select(
            Delivery.version,
            Delivery.channel,
            Delivery.status,
            func.count(),
            func.count(Delivery.delivered_at),
            func.count(Delivery.opened_at),
            func.count(Delivery.clicked_at),
            func.count(Delivery.complained_at),
            func.count(Delivery.failed_at),
        )
        .where(Delivery.journey_id == journey_id)
        .group_by(Delivery.version, Delivery.channel, Delivery.status)
    )
    if version is not None:
        query = query.where(Delivery.version == version)
    return [tuple(row) for row in session.execute(query)]


def reason_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str | None, str | None, int]]:
    """(version, channel, reason, skipped deliveries)."""
    query = (
        select(Delivery.version, Delivery.channel, Delivery.reason, func.count())
        .where(Delivery.journey_id == journey_id, Delivery.status == "skipped")
        .group_by(Delivery.version, Delivery.channel, Delivery.reason)
    )
    if version is not None:
        query = query.where(Delivery.version == version)
    return [(v, c, r, n) for v, c, r, n in session.execute(query)]


def reached_rows(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str, int]]:
    """(version, step, runs with a transition recorded at the step); a run that came
    back to a step, or whose record was retried, counts once."""
    query = (
        select(StepLog.version, StepLog.step_id, func.count(distinct(StepLog.run_id)))
        .where(StepLog.journey_id == journey_id, StepLog.action != "entered")
        .group_by(StepLog.version, StepLog.step_id)
    )
    if version is not None:
        query = query.where(StepLog.version == version)
    return [(v, s, n) for v, s, n in session.execute(query)]


def held_out_rows(
    session: Session, journey_id: str, version: str | None, action: str = "held_out"
) -> list[tuple[str, str, int]]:
    """(version, step, held_out entries): sends, and webhooks, not made for runs held out;
    with another `action` (`error`), the entries of that action."""
    query = (
        select(StepLog.version, StepLog.step_id, func.count())
        .where(StepLog.journey_id == journey_id, StepLog.action == action)
        .group_by(StepLog.version, StepLog.step_id)
    )
    if version is not None:
        query = query.where(StepLog.version == version)
    return [(v, s, n) for v, s, n in session.execute(query)]


def last_touches(
    session: Session, journey_id: str, version: str | None
) -> list[tuple[str, str | None, str | None]]:
    """(version, channel, step) of the last message before each treatment conversion;
    channel and step are None for a conversion with no message before it."""
    converted = [
        JourneyRun.journey_id == journey_id,
        converted_runs(),
        JourneyRun.holdout.is_(False),
    ]
    if version is not None:
        converted.append(JourneyRun.version == version)
    query = (
        select(
            JourneyRun.run_id,
            JourneyRun.version,
            Delivery.id,
            Delivery.channel,
            Delivery.step_id,
            decided_at(),
        )
        .outerjoin(Delivery, sent_during_run())
        .where(*converted)
    )
    last: dict[str, tuple[str, tuple[datetime, int] | None, str | None, str | None]] = {}
    for run_id, run_version, delivery_id, channel, step, sent_at in session.execute(query):
        key = (sent_at, delivery_id) if sent_at is not None else None
        seen = last.get(run_id)
        if seen is None or (key is not None and (seen[1] is None or key > seen[1])):
            last[run_id] = (run_version, key, channel, step)
    return [(v, c if key else None, s if key else None) for v, key, c, s in last.values()]


def entry_error_samples(
    session: Session, journey_id: str, version: str | None
) -> list[EntryErrorSample]:
    query = select(EntryError).where(EntryError.journey_id == journey_id)
    if version is not None:
        query = query.where(EntryError.version == version)
    rows = session.scalars(query.order_by(EntryError.id.desc()).limit(ENTRY_ERROR_SAMPLES))
    return [
        EntryErrorSample(
            at=row.at,
            version=row.version,
            customer_id=row.customer_id,
            message_id=row.message_id,
            error=row.error,
        )
        for row in rows
    ]
