"""What the operators' reads ask the database, so that a route reads, checks, calls and
answers. Each function is one question; the routes in journeyman/api/routes/ shape the
answers into their views."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from journeyman.customers.identity import merged_ids_query
from journeyman.dsl.plan import Plan
from journeyman.storage.models import (
    AudienceTick,
    ConsentChange,
    Delivery,
    Event,
    JourneyRun,
    JourneyVersion,
    OutboxMessage,
    Release,
)

# -- journeys -----------------------------------------------------------------------------


def journey_versions(session: Session, journey_id: str) -> list[JourneyVersion]:
    """Every version registered, oldest first."""
    return list(
        session.scalars(
            select(JourneyVersion)
            .where(JourneyVersion.journey_id == journey_id)
            .order_by(JourneyVersion.created_at)
        )
    )


def latest_plan(session: Session, journey_id: str) -> Plan | None:
    """The plan of the version registered last; None when there is none."""
    latest = session.scalars(
        select(JourneyVersion.plan)
        .where(JourneyVersion.journey_id == journey_id)
        .order_by(JourneyVersion.created_at.desc())
    ).first()
    return Plan.model_validate(latest) if latest is not None else None


def registered_journey_ids(session: Session) -> set[str]:
    return set(session.scalars(select(JourneyVersion.journey_id).distinct()))


def run_counts(session: Session, journey_id: str | None = None) -> Counter[tuple[str, str]]:
    """(journey id, status) -> runs, of every journey or of one."""
    query = select(JourneyRun.journey_id, JourneyRun.status, func.count()).group_by(
        JourneyRun.journey_id, JourneyRun.status
    )
    if journey_id is not None:
        query = query.where(JourneyRun.journey_id == journey_id)
    return Counter({(j, s): n for j, s, n in session.execute(query)})


def running_by_version(session: Session, journey_id: str) -> dict[str, int]:
    """Running runs of the journey by version."""
    return dict(
        session.execute(
            select(JourneyRun.version, func.count())
            .where(JourneyRun.journey_id == journey_id, JourneyRun.status == "running")
            .group_by(JourneyRun.version)
        ).all()
    )


def finished_outcomes(session: Session, journey_id: str) -> dict[str | None, int]:
    """Finished runs of the journey by outcome (None: not recorded)."""
    return dict(
        session.execute(
            select(JourneyRun.outcome, func.count())
            .where(JourneyRun.journey_id == journey_id, JourneyRun.status != "running")
            .group_by(JourneyRun.outcome)
        ).all()
    )


def audience_checks(session: Session, journey_id: str, limit: int) -> list[AudienceTick]:
    """A segment journey's latest checks, newest first."""
    return list(
        session.scalars(
            select(AudienceTick)
            .where(AudienceTick.journey_id == journey_id)
            .order_by(AudienceTick.at.desc(), AudienceTick.started_at.desc())
            .limit(limit)
        )
    )


def latest_releases(session: Session, journey_id: str, limit: int) -> list[Release]:
    """The journey's latest releases, newest (the one in force) first."""
    return list(
        session.scalars(
            select(Release)
            .where(Release.journey_id == journey_id)
            .order_by(Release.id.desc())
            .limit(limit)
        )
    )


# -- customers ----------------------------------------------------------------------------
# `ids`: the customer and the ids merged into it (journeyman/customers/identity.py).


def running_runs(session: Session, ids: Sequence[str]) -> list[JourneyRun]:
    """The runs under way, oldest first."""
    return list(
        session.scalars(
            select(JourneyRun)
            .where(JourneyRun.customer_id.in_(ids), JourneyRun.status == "running")
            .order_by(JourneyRun.started_at)
        )
    )


def recent_deliveries(session: Session, ids: Sequence[str], limit: int) -> list[Delivery]:
    """The latest messages, newest first."""
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.customer_id.in_(ids))
            .order_by(Delivery.id.desc())
            .limit(limit)
        )
    )


def held_messages(session: Session, delivery_ids: Sequence[int]) -> dict[int, OutboxMessage]:
    """The outbox messages of these deliveries, by delivery id."""
    return {
        message.delivery_id: message
        for message in session.scalars(
            select(OutboxMessage).where(OutboxMessage.delivery_id.in_(delivery_ids))
        )
    }


def recent_events(session: Session, ids: Sequence[str], limit: int) -> list[Event]:
    """The latest events, newest first."""
    return list(
        session.scalars(
            select(Event).where(Event.customer_id.in_(ids)).order_by(Event.id.desc()).limit(limit)
        )
    )


def consent_changes(session: Session, customer_id: str) -> list[ConsentChange]:
    """The audit trail of the customer's consent choices, oldest first."""
    query = select(ConsentChange).filter_by(customer_id=customer_id).order_by(ConsentChange.id)
    return list(session.scalars(query))


# -- the outbox ---------------------------------------------------------------------------


def outbox_messages(session: Session, customer_id: str | None, limit: int) -> list[OutboxMessage]:
    """Newest first; a customer's include those stored under ids merged into them."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if customer_id is not None:
        query = query.where(
            (OutboxMessage.customer_id == customer_id)
            | OutboxMessage.customer_id.in_(merged_ids_query(customer_id))
        )
    return list(session.scalars(query))
