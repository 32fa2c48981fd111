"""The dispatcher's statements over the events table, built once (building one costs more
than running it): the page of events still to route, and the dispatched mark.

Both read through the partial indexes of the pending events (migration 0014): the page in
id order (`ix_events_pending`), the mark by id.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select, update

from journeyman.storage.models import Customer, Event

_EVENTS = Event.metadata.tables[Event.__tablename__]
PENDING_COLUMNS = (
    "id customer_id message_id type name properties timestamp attempts next_attempt_at"
)
PENDING = (
    select(*(_EVENTS.c[name] for name in PENDING_COLUMNS.split()), Customer.merged_into)
    .outerjoin(Customer, Customer.id == _EVENTS.c.customer_id)
    # The terms of the partial index ix_events_pending, which this reads in id order.
    .where(
        _EVENTS.c.dispatched_at.is_(None),
        _EVENTS.c.parked_at.is_(None),
        _EVENTS.c.id > bindparam("after_id"),
    )
    .order_by(_EVENTS.c.id)
    .limit(bindparam("limit"))
)
PENDING_EXCEPT = PENDING.where(_EVENTS.c.customer_id.not_in(bindparam("blocked", expanding=True)))
DONE = (
    update(_EVENTS)
    .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)), _EVENTS.c.dispatched_at.is_(None))
    .values(dispatched_at=bindparam("now"), next_attempt_at=None)
)
