"""Parked events: those the dispatcher gave up handing to Temporal after
`MAX_ATTEMPTS` tries (journeyman/events/dispatcher.py).

A parked event is kept with its last error and no longer holds back its customer's
later events. `journeyman events failed` lists them; `journeyman events retry [ID ...]`
(`retry`) makes them pending again with a fresh count of attempts, and the running
dispatcher picks them up on its next pass (within its poll interval).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from journeyman.storage.db import Database
from journeyman.storage.models import Event


@dataclass(frozen=True)
class ParkedEvent:
    id: int
    message_id: str
    customer_id: str
    type: str
    name: str | None
    timestamp: datetime
    attempts: int
    parked_at: datetime
    last_error: str | None


def count(session: Session) -> int:
    return session.scalar(select(func.count()).where(Event.parked_at.is_not(None))) or 0


def listing(session: Session, limit: int | None = None) -> list[ParkedEvent]:
    """Parked events, oldest first."""
    query = select(Event).where(Event.parked_at.is_not(None)).order_by(Event.id)
    if limit is not None:
        query = query.limit(limit)
    # Each field of a ParkedEvent is the event's column of that name.
    names = [field.name for field in fields(ParkedEvent)]
    return [
        ParkedEvent(**{name: getattr(e, name) for name in names})
        for e in session.scalars(query)
        if e.parked_at is not None
    ]


@dataclass(frozen=True)
class Retried:
    retried: list[int]  # event ids made pending again
    not_parked: list[str]  # ids asked for that are not parked events (unknown, or not parked)


def retry(db: Database, ids: Sequence[str] = ()) -> Retried:
    """Make parked events pending again: those with the given event ids or message ids,
    or every parked event when none is given."""
    with db.session() as session:
        query = select(Event.id, Event.message_id).where(Event.parked_at.is_not(None))
        rows = session.execute(query).all()
        if ids:
            wanted = set(ids)
            chosen = [r for r in rows if str(r.id) in wanted or r.message_id in wanted]
            found = {str(r.id) for r in chosen} | {r.message_id for r in chosen}
            missing = [i for i in ids if i not in found]
        else:
            chosen, missing = list(rows), []
        event_ids = [r.id for r in chosen]
        if event_ids:
            session.execute(
                update(Event)
                .where(Event.id.in_(event_ids), Event.parked_at.is_not(None))
                .values(parked_at=None, attempts=0, next_attempt_at=None)
                .execution_options(synchronize_session=False)
            )
    return Retried(retried=event_ids, not_parked=missing)
