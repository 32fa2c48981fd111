"""The dispatcher's statements over the events table, built once (building one costs more
than running it): the page of events still to route, and the dispatched mark.

Both read through the partial indexes of the pending events (migration 0014): the page in
id order (`ix_events_pending`), the mark by id.

The page marks (`leased_elsewhere`, without their properties) the events of customers
another dispatcher holds the lease of (journeyman/events/claims.py), which the pass
counts as waiting without asking for their lease: with several API processes, every
dispatcher is woken by its own process's events and would otherwise read, and try to
lease, all the others' too, to be refused many of them (issue 19: with two processes,
each dispatcher read half as many events again as it routed). They are only passed by
for now: once the holder gives the lease up, those still pending are read again by the
next pass; the lease, taken in `claims.acquire_many`, still decides who routes.
"""

from __future__ import annotations

from sqlalchemy import bindparam, case, exists, func, select, type_coerce, update

from journeyman.storage.columns import one_of
from journeyman.storage.models import Customer, DispatchLease, Event

_EVENTS = Event.metadata.tables[Event.__tablename__]
_LEASES = DispatchLease.metadata.tables[DispatchLease.__tablename__]
# Leased by another dispatcher: the lease of the customer an event is routed to (the one
# it is stored under, or who that one was merged into) is held by someone else and has
# not lapsed at the pass's `now`.
_LEASED_ELSEWHERE = exists().where(
    _LEASES.c.customer_id == func.coalesce(Customer.merged_into, _EVENTS.c.customer_id),
    _LEASES.c.owner != bindparam("owner"),
    _LEASES.c.until > bindparam("now", type_=_LEASES.c.until.type),
)
PENDING_COLUMNS = "id customer_id message_id type name timestamp attempts next_attempt_at"
PENDING = (
    select(
        *(_EVENTS.c[name] for name in PENDING_COLUMNS.split()),
        Customer.merged_into,
        _LEASED_ELSEWHERE.label("leased_elsewhere"),
        # Not read for nothing: the pass does not route those events now.
        type_coerce(
            case((_LEASED_ELSEWHERE, None), else_=_EVENTS.c.properties), _EVENTS.c.properties.type
        ).label("properties"),
    )
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
# By `postgres` (columns.one_of).
DONE = {
    postgres: update(_EVENTS)
    .where(one_of(_EVENTS.c.id, "ids", postgres), _EVENTS.c.dispatched_at.is_(None))
    .values(dispatched_at=bindparam("now"), next_attempt_at=None)
    for postgres in (True, False)
}
