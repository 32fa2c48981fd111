"""`goal.within`, the attribution window: a goal event that comes within the window
after a customer entered a journey converts their run even when the run has ended.

`attribute` runs for each routed event (journeyman/events/routing.py): for the journeys whose
goal is this event and has a window, it marks the customer's ended, unconverted runs
entered within the window before the event (`journey_runs.attributed_at` and
`attributed_event`), where the goal's `when` holds with the run's own trigger. A run is
marked once; the same event routed twice marks nothing more. Runs still going are left
to the workflow, which converts them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from journeyman.contracts import CustomerEvent, ExprContext
from journeyman.customers.profiles import expression_names
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.plan import Plan
from journeyman.storage.models import Event, JourneyRun

log = logging.getLogger(__name__)


def windowed_goal(plan: Plan, event_name: str) -> bool:
    goal = plan.journey.goal
    return goal is not None and goal.within is not None and goal.event == event_name


def attribute(
    session: Session,
    plans: list[Plan],
    plan_of: Callable[[str, str], Plan | None],
    identities: list[str],
    event: CustomerEvent,
    at: datetime,
    default_timezone: str = "UTC",
) -> list[str]:
    """Mark the runs `event` converts after their end; returns their workflow ids.
    `plans`: the journeys in force; `plan_of(journey, version)`: any version's plan."""
    journeys = [p.journey.id for p in plans if windowed_goal(p, event.name)]
    if not journeys:
        return []
    runs = session.scalars(
        select(JourneyRun)
        .where(
            JourneyRun.journey_id.in_(journeys),
            JourneyRun.customer_id.in_(identities),
            JourneyRun.status != "running",
            JourneyRun.attributed_at.is_(None),
            or_(JourneyRun.outcome.is_(None), JourneyRun.outcome != "converted"),
            JourneyRun.started_at <= at,
        )
        .order_by(JourneyRun.started_at)
    ).all()
    marked = []
    for run in runs:
        plan = plan_of(run.journey_id, run.version)
        if plan is None or not windowed_goal(plan, event.name):
            continue
        goal = plan.journey.goal
        assert goal is not None and goal.within is not None
        if at - run.started_at > goal.within:
            continue
        if goal.when is not None and not _holds(session, plan, run, event, at, default_timezone):
            continue
        run.attributed_at = at
        run.attributed_event = event.message_id
        marked.append(run.workflow_id)
    return marked


def _holds(
    session: Session,
    plan: Plan,
    run: JourneyRun,
    event: CustomerEvent,
    at: datetime,
    default_timezone: str,
) -> bool:
    goal = plan.journey.goal
    assert goal is not None and goal.when is not None
    context = ExprContext(
        event=event,
        trigger=_trigger(session, run),
        journey={
            "id": plan.journey.id,
            "name": plan.journey.name,
            "version": plan.version,
            "entered_at": run.started_at,
        },
        now=at,
    )
    names: dict[str, Any] = expression_names(session, run.customer_id, context, default_timezone)
    try:
        return bool(evaluate(goal.when.tree, names))
    except ExpressionError as exc:
        # Not a conversion, and said so: the condition could not be decided.
        log.warning(
            "journey %s goal.within for run %s: %s not attributed: %s",
            plan.journey.id,
            run.workflow_id,
            event.message_id,
            exc,
        )
        return False


def _trigger(session: Session, run: JourneyRun) -> CustomerEvent:
    row = None
    if run.trigger_message_id is not None:
        row = session.scalar(select(Event).where(Event.message_id == run.trigger_message_id))
    if row is None:  # a segment entry: no stored event
        return CustomerEvent(
            message_id=run.trigger_message_id or "", name="segment_entry", timestamp=run.started_at
        )
    return CustomerEvent(
        message_id=row.message_id,
        name=row.name or row.type,
        properties=dict(row.properties or {}),
        timestamp=row.timestamp,
    )
