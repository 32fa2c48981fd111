"""Claims that hold across processes: dispatch leases and entry claims.

Every API replica runs a dispatcher (journeyman/events/dispatcher.py). Two of them must never
hand one customer's events over at the same time, or the events could reach the runs
out of order. So a dispatcher routes a customer's events only while it holds that
customer's lease (`dispatch_leases`):

- `acquire_many` takes the leases of a lot of customers (`acquire`, of one), each when
  it is free or lapsed, in one transaction: on PostgreSQL the lease rows are locked
  `FOR UPDATE SKIP LOCKED`, in customer order (a dispatcher that finds another taking
  the same lease at that moment passes the customer by instead of waiting); on SQLite
  the database's single writer lock serializes the same statements across processes.
  In the same transaction it re-reads the customers' pending events, so what another
  dispatcher routed meanwhile is not routed again, and nothing is routed ahead of an
  earlier event still waiting for its retry.
- A lease lapses `LEASE` after it was taken or renewed (`renew`), so a crashed
  dispatcher's customers are taken over; `release` gives a dispatcher's leases up once
  its pass has marked what it routed.

Entries (`entry_claims`): before a run is started for an event, the pair (journey,
message id) is recorded. A second routing of the same event (a retry after a crash
between the start and its record) finds the claim, and instead of starting a run again
looks for the run the first attempt started (`started_run`, by the trigger's message
id kept in the run's memo); under `reentry: always` a second start for one event is
thus impossible.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence, Set
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, bindparam, delete, func, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from journeyman.storage.columns import one_of
from journeyman.storage.db import Database
from journeyman.storage.models import DispatchLease, EntryClaim, Event, utcnow

LEASE = timedelta(minutes=5)
# A lease is renewed before routing when less than this is left of it.
RENEW_WITHIN = timedelta(minutes=4)
# The memo field of a journey run that names the message id of its trigger.
TRIGGER_MEMO = "trigger_message_id"


def _insert_or_ignore(session: Session, model: Any, values: dict[str, Any]) -> int:
    dialect = session.get_bind().dialect.name
    module: Any = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(model).values(**values).on_conflict_do_nothing()
    result = session.execute(statement)
    return int(getattr(result, "rowcount", 0) or 0)


# -- dispatch leases ---------------------------------------------------------------------


# The statements of `acquire_many`, run for every lot of customers the dispatcher routes:
# built once (building and keying one costs more than running it). By `postgresql` or not.
_LEASES = DispatchLease.metadata.tables[DispatchLease.__tablename__]


def _lease_insert(postgres: bool) -> Any:
    """Insert the missing lease rows of a lot, its customer ids in one parameter (an
    array on PostgreSQL, a JSON list on SQLite): one row of parameters per customer
    costs more than the statement."""
    ids: Any
    if postgres:
        ids = func.unnest(bindparam("customer_ids", type_=postgresql.ARRAY(String)))
        source = select(ids, bindparam("owner", type_=String), bindparam("until", type_=_UNTIL))
        module: Any = postgresql
    else:
        ids = func.json_each(bindparam("customer_ids", type_=String)).table_valued("value")
        # WHERE true: without it SQLite reads the ON CONFLICT as the join's ON.
        source = select(
            ids.c.value, bindparam("owner", type_=String), bindparam("until", type_=_UNTIL)
        ).where(true())
        module = sqlite
    columns = ["customer_id", "owner", "until"]
    return module.insert(_LEASES).from_select(columns, source).on_conflict_do_nothing()


_UNTIL = _LEASES.c.until.type
_LEASE_INSERT = {postgres: _lease_insert(postgres) for postgres in (True, False)}
_EVENTS = Event.metadata.tables[Event.__tablename__]
# By `postgres` (columns.one_of).
_LEASES_OF = {
    postgres: select(_LEASES.c.customer_id, _LEASES.c.owner, _LEASES.c.until)
    .where(one_of(_LEASES.c.customer_id, "customer_ids", postgres))
    .order_by(_LEASES.c.customer_id)
    .with_for_update(skip_locked=True)
    for postgres in (True, False)
}
_LEASE_TAKE = {
    postgres: update(_LEASES)
    .where(one_of(_LEASES.c.customer_id, "taken", postgres))
    .values(owner=bindparam("new_owner"), until=bindparam("new_until"))
    for postgres in (True, False)
}
_PENDING = {
    postgres: select(_EVENTS.c.id, _EVENTS.c.customer_id, _EVENTS.c.next_attempt_at)
    .where(
        one_of(_EVENTS.c.customer_id, "stored_as", postgres),
        _EVENTS.c.dispatched_at.is_(None),
        _EVENTS.c.parked_at.is_(None),
    )
    .order_by(_EVENTS.c.id)
    for postgres in (True, False)
}
# Customers leased by one statement, at most: well under the bound parameters SQLite and
# PostgreSQL take (their events' stored ids go in one statement too).
LEASE_AT_MOST = 500


def acquire(
    db: Database,
    customer_id: str,
    owner: str,
    event_ids: Sequence[int],
    stored_as: Sequence[str],
    now: datetime,
    routed: Set[int] = frozenset(),
) -> list[int] | None:
    """`acquire_many` for one customer."""
    lot = {customer_id: (event_ids, stored_as)}
    return acquire_many(db, owner, lot, now, routed)[customer_id]


def acquire_many(
    db: Database,
    owner: str,
    lot: Mapping[str, tuple[Sequence[int], Sequence[str]]],
    now: datetime,
    routed: Set[int] = frozenset(),
    then: Callable[[Connection, list[str]], None] | None = None,
) -> dict[str, list[int] | None]:
    """Take the lease of each customer of `lot` for `owner`, in one transaction, and
    answer for each which of its event ids (the customer's events as this dispatcher
    read them, in order) to route now: those still pending, up to the first that is not
    among them or waits for its retry. None: another dispatcher holds that customer's
    lease. `lot` gives, by customer, those event ids and the customer ids the events are
    stored under (the customer's, or an anonymous id merged into it); `routed`: events
    this dispatcher routed and has not marked yet. `then`: called in each transaction,
    last, with the customers it leased (the dispatcher reads their running runs there).

    Core on a plain connection, not an ORM session: it runs for every page of every
    dispatcher pass, and a session's open, begin and close cost more than its
    statements (issue 19)."""
    answers: dict[str, list[int] | None] = {}
    customers = sorted(lot)  # locks in one order: two dispatchers do not deadlock
    for start in range(0, len(customers), LEASE_AT_MOST):
        part = customers[start : start + LEASE_AT_MOST]
        with db.transaction() as connection:
            taken = _take_leases(connection, owner, part, now)
            stored = {s: c for c in taken for s in lot[c][1]}
            postgres = connection.dialect.name == "postgresql"
            pending = (
                connection.execute(_PENDING[postgres], {"stored_as": sorted(stored)}).all()
                if stored
                else []
            )
            if then is not None:
                then(connection, taken)
        by_customer: dict[str, list[Any]] = {c: [] for c in taken}
        for row in pending:
            by_customer[stored[row.customer_id]].append(row)
        for customer in part:
            rows = by_customer.get(customer)
            answers[customer] = (
                None if rows is None else _to_route(rows, lot[customer][0], now, routed)
            )
    return answers


def _take_leases(
    connection: Connection, owner: str, customers: list[str], now: datetime
) -> list[str]:
    """Which of `customers` `owner` now leases: the free, lapsed or own ones."""
    until = now + LEASE
    postgres = connection.dialect.name == "postgresql"
    # Makes the rows exist (and, on SQLite, takes the writer lock at once).
    ids = customers if postgres else json.dumps(customers)
    connection.execute(
        _LEASE_INSERT[postgres], {"customer_ids": ids, "owner": owner, "until": until}
    )
    leases = connection.execute(_LEASES_OF[postgres], {"customer_ids": customers}).all()
    taken = [r.customer_id for r in leases if r.owner == owner or r.until <= now]
    if taken:
        parameters = {"taken": taken, "new_owner": owner, "new_until": until}
        connection.execute(_LEASE_TAKE[postgres], parameters)
    return taken


def _to_route(
    pending: list[Any], event_ids: Sequence[int], now: datetime, routed: Set[int]
) -> list[int]:
    wanted = set(event_ids)
    route: list[int] = []
    for row in pending:
        if row.id in routed:
            continue
        if row.id not in wanted or (row.next_attempt_at is not None and row.next_attempt_at > now):
            break  # an event this dispatcher has not read, or one waiting: the order holds
        route.append(row.id)
    return route


def renew(db: Database, customer_id: str, owner: str, now: datetime) -> bool:
    """Extend the lease; False when it was lost (it lapsed and another took it)."""
    with db.session() as session:
        result = session.execute(
            update(DispatchLease)
            .where(DispatchLease.customer_id == customer_id, DispatchLease.owner == owner)
            .values(until=now + LEASE)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0))


def release(db: Database, owner: str) -> None:
    """Give up every lease `owner` holds."""
    with db.engine.begin() as connection:
        release_in(connection, owner)


def release_in(connection: Connection, owner: str) -> None:
    """`release` in the caller's transaction (the dispatcher's last mark of a pass)."""
    connection.execute(_RELEASE, {"owner": owner})


_RELEASE = delete(_LEASES).where(_LEASES.c.owner == bindparam("owner"))


# -- entry claims ------------------------------------------------------------------------


def claim_entry(db: Database, journey_id: str, message_id: str) -> bool:
    """Tie the entry to its trigger before the run starts; False when the event claimed
    this entry before (a retry: the run may have started)."""
    with db.session() as session:
        return (
            _insert_or_ignore(
                session,
                EntryClaim,
                {"journey_id": journey_id, "message_id": message_id, "claimed_at": utcnow()},
            )
            == 1
        )


async def started_run(client: Any, workflow_id: str, message_id: str) -> str | None:
    """The run id of the latest run of `workflow_id` when the event `message_id` started
    it, else None (the first attempt stopped before the start took effect)."""
    from temporalio.service import RPCError, RPCStatusCode

    try:
        description = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    trigger = await description.memo_value(TRIGGER_MEMO, default=None)
    return str(description.run_id) if trigger == message_id else None
