"""Running runs looked up ahead: one query for a page of customers, not one per event.

The dispatcher (journeyman/events/dispatcher.py) routes every stored `track` event, and
routing an event reads its customer's running runs (the runs that may be waiting for
it). One query per event cost more than everything else in routing an event that
enters no journey. So the dispatcher looks the runs up for a page's customers at once
(`running_of`), right after taking their leases, and hands each event's routing what it
found through `AHEAD`; `Router.route` (journeyman/events/routing.py) reads the database
only when `AHEAD` holds nothing.

What was looked up stays true for a customer's later events of the page as long as
nothing else starts a run for them: the dispatcher holds their lease (no other
dispatcher routes them), and an event that enters a journey (or fails) makes the
dispatcher drop what it had for that customer, whose later events then read the database.
Runs that close meanwhile cost nothing: their signal finds no open run, as it would.
"""

from __future__ import annotations

from collections.abc import Collection
from contextvars import ContextVar
from typing import NamedTuple

from sqlalchemy import Connection, select

from journeyman.storage.columns import one_of
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, JourneyRun


class RunningRun(NamedTuple):
    """What delivery reads of a running run."""

    workflow_id: str
    journey_id: str
    version: str


# The running runs of the customer of the event being routed, when the dispatcher looked
# them up for its page; None: `Router.route` reads them.
AHEAD: ContextVar[list[RunningRun] | None] = ContextVar("running_runs_ahead", default=None)

# Ids looked up by one statement, at most.
AT_ONCE = 500

_CUSTOMERS = Customer.metadata.tables[Customer.__tablename__]
_RUNS = JourneyRun.metadata.tables[JourneyRun.__tablename__]
# By `postgres` (columns.one_of).
_MERGED = {
    postgres: select(_CUSTOMERS.c.id, _CUSTOMERS.c.merged_into).where(
        one_of(_CUSTOMERS.c.merged_into, "ids", postgres)
    )
    for postgres in (True, False)
}
_RUNNING = {
    postgres: select(
        _RUNS.c.customer_id, _RUNS.c.workflow_id, _RUNS.c.journey_id, _RUNS.c.version
    ).where(one_of(_RUNS.c.customer_id, "ids", postgres), _RUNS.c.status == "running")
    for postgres in (True, False)
}


def running_of(db: Database, customer_ids: Collection[str]) -> dict[str, list[RunningRun]]:
    """The running runs of each of `customer_ids`, as `Router._running` reads one
    customer's: the runs of the customer and of every id merged into it (merge chains are
    one hop long, journeyman/events/intake.py `merge`)."""
    if not customer_ids:
        return {}
    with db.engine.connect() as connection:
        return running_in(connection, customer_ids)


def running_in(
    connection: Connection, customer_ids: Collection[str]
) -> dict[str, list[RunningRun]]:
    """`running_of` on the caller's connection (the dispatcher's lease transaction: one
    checkout and one transaction fewer per page)."""
    wanted = sorted(set(customer_ids))
    found: dict[str, list[RunningRun]] = {c: [] for c in wanted}
    if not wanted:
        return found
    postgres = connection.dialect.name == "postgresql"
    owner = {c: c for c in wanted}
    for start in range(0, len(wanted), AT_ONCE):
        lot = wanted[start : start + AT_ONCE]
        owner.update(
            (row.id, row.merged_into) for row in connection.execute(_MERGED[postgres], {"ids": lot})
        )
    ids = sorted(owner)
    for start in range(0, len(ids), AT_ONCE):
        lot = ids[start : start + AT_ONCE]
        for row in connection.execute(_RUNNING[postgres], {"ids": lot}):
            run = RunningRun(row.workflow_id, row.journey_id, row.version)
            found[owner[row.customer_id]].append(run)
    return found
