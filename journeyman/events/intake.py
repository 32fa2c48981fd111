"""Accepting customer events: store them, apply profile changes, merge identities.

Contract:
- `accept` takes already validated messages and, in one database transaction, stores an
  `Event` row per new message id and applies what identify and alias say about the
  customer. A message id already stored is a duplicate: acknowledged, counted, and not
  applied again. Either the whole call is applied or nothing is.
- Nothing here talks to Temporal. `track` events are stored undispatched and the
  `Dispatcher` (journeyman/events/dispatcher.py) hands them to the router later; the other
  types have nothing to route and are stored as dispatched.
- Identities: the customer of a message is its `userId`, else its `anonymousId`. An
  `alias` (previousId -> userId), and any message carrying both a `userId` and an
  `anonymousId`, merge the anonymous customer into the known one: its stored events are
  re-keyed to the known id, its traits and contact fields fill the known customer's gaps
  (the known customer's values win), and `merged_into` sends its later events and
  profile reads to the known customer. Journey runs that already started under the
  anonymous id keep their customer id; they read the merged profile through
  `journeyman.customers.profiles.find_customer`, and the router delivers the known customer's
  events to them as well.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from journeyman.customers import traits
from journeyman.customers.profiles import MERGE_DEPTH, find_customer
from journeyman.events.group_commit import GroupCommit, group_of, loop_group_of
from journeyman.messaging import inbox_reading as inbox
from journeyman.privacy import contacts
from journeyman.storage.columns import UTCDateTime, one_of
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event, utcnow

log = logging.getLogger(__name__)

# Fields of `Customer` that identify traits set directly; every other trait goes to
# `Customer.traits`.
CONTACT_FIELDS = ("email", "phone", "timezone", "locale")
PUSH_TRAITS = ("push_tokens", "push_token")
NOT_TRAITS = frozenset({*CONTACT_FIELDS, *PUSH_TRAITS, "id", "userId", "anonymousId"})
# Events journeys react to: track, and page and screen views (stored as the events
# `page_viewed` and `screen_viewed`); the rest are profile changes.
ROUTED_TYPES = frozenset({"track", "page", "screen"})
MESSAGE_TYPES = ("track", "identify", "alias", "page", "screen", "group")
# Concurrent identical requests race on the unique message id (and on new customers'
# primary keys): the loser retries and then finds the winner's rows.
CONFLICT_RETRIES = 5
# Message ids looked up in one statement, at most.
IDS_AT_ONCE = 500


@dataclass
class Incoming:
    """One validated message of the Segment HTTP Tracking API."""

    type: str  # one of MESSAGE_TYPES
    message_id: str
    timestamp: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    previous_id: str | None = None  # alias
    name: str | None = None  # track: the event; page/screen: the page name
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    group_id: str | None = None
    # The class of key it came with (journeyman/api/auth.py): a `client` key's
    # messages may not take over known customers (`Refused`); the rest are trusted.
    source: str = "server"
    # Whether a journey may react to it (journeyman/events/catalog.py `Catalog.hears`,
    # asked by the API): an event none hears is stored handed over, not for the
    # dispatcher. Callers that do not ask leave every event to the dispatcher.
    heard: bool = True

    @property
    def to_dispatch(self) -> bool:
        """Whether it is stored for the dispatcher to hand over (else as handed over)."""
        return self.heard and self.type in ROUTED_TYPES


class Refused(Exception):
    """A client-key message that would change what only a server key may change: the
    whole call is rolled back, and the API answers 403 with `reason`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code  # contact_change | identified_merge | consent_trait
        self.reason = reason


@dataclass
class Accepted:
    stored: int = 0  # new events
    duplicates: int = 0  # message ids seen before (or twice in this call)
    to_dispatch: int = 0  # new events waiting for the dispatcher
    types: dict[str, int] = field(default_factory=dict)  # new events by message type


def accept(db: Database, messages: list[Incoming]) -> Accepted:
    """Store `messages` and apply their profile changes, all in one transaction.

    Calls made at the same time by threads of this process are committed together
    (journeyman/events/group_commit.py): each is still all or nothing, and returns once
    its messages are committed."""
    return _group_commit(db).run(db, messages)


def _accept_alone(db: Database, messages: list[Incoming]) -> Accepted:
    """One call in a transaction of its own, tried again after a unique-key conflict,
    and once after its connection turned out dead (the pool does not ping before each
    checkout: journeyman/storage/db.py). A retry is safe: nothing is answered before a
    commit returned, and if the lost commit had gone through, the messages are found
    stored and acknowledged as duplicates, not applied twice."""
    reconnected = False
    attempt = 1
    lean = _lean(messages)
    while True:
        try:
            if lean:
                return _accept_lean(db, [messages])[0]
            with db.session() as session:
                return _accept(session, messages)
        except IntegrityError:
            if attempt == CONFLICT_RETRIES:
                raise
            attempt += 1
            log.debug("intake conflict (attempt %d): retrying", attempt)
        except DBAPIError as exc:
            if reconnected or not exc.connection_invalidated:
                raise
            reconnected = True
            log.info("intake: the database connection was lost (%s); trying again", exc.orig)


def accept_in(session: Session, messages: list[Incoming]) -> Accepted:
    """`accept` inside the caller's transaction, for writers (the provider webhooks)
    whose own changes must commit together with the events. A unique-key conflict
    raises IntegrityError for the caller to retry."""
    return _accept(session, messages)


def _accept(session: Session, messages: list[Incoming]) -> Accepted:
    _lock_for_write(session)
    rows: list[dict[str, Any]] = []
    accepted = _store(session, messages, _stored_and_preload(session, messages), rows)
    _flush_events(session, rows)
    return accepted


def _stored_and_preload(session: Session, messages: list[Incoming]) -> set[str]:
    """Which message ids of `messages` are stored already, and `_preload` of the others.

    On PostgreSQL both in one statement where the lists fit one (`_CUSTOMERS_STORED`):
    the first read of the customers (locked, in id order) brings the stored ids along,
    a round trip and a statement less per transaction (issue 19). It reads the customers
    of the duplicates too (they are locked, not changed); when it finds no customer row,
    the stored ids are read apart."""
    ids = [m.message_id for m in messages]
    known = _known(session)
    wanted = sorted(_ids_of(messages) - known.keys())
    if not (
        _postgres(session) and wanted and len(wanted) <= IDS_AT_ONCE and len(ids) <= IDS_AT_ONCE
    ):
        seen = _stored_ids(session, ids)
        _preload(session, [m for m in messages if m.message_id not in seen])
        return seen
    found: dict[str, Customer | None] = dict.fromkeys(wanted)
    stored: set[str] | None = None
    for customer, among in session.execute(_CUSTOMERS_STORED, {"ids": wanted, "messages": ids}):
        found[customer.id] = customer
        stored = set(among or ())
    if stored is None:  # no customer row to bring them
        stored = _stored_ids(session, ids)
    known.update(found)
    _preload(session, [m for m in messages if m.message_id not in stored], read=found)
    return stored


def _ids_of(messages: list[Incoming]) -> set[str]:
    """The customer ids `messages` name."""
    return {i for m in messages for i in (m.user_id, m.anonymous_id, m.previous_id) if i}


def _stored_ids(session: Session, ids: list[str]) -> set[str]:
    """Which of `ids` are stored already (in lots: a statement takes so many values)."""
    seen: set[str] = set()
    for start in range(0, len(ids), IDS_AT_ONCE):
        lot = ids[start : start + IDS_AT_ONCE]
        seen.update(session.scalars(_STORED_IDS[_postgres(session)], {"ids": lot}))
    return seen


# Statements of the hot path, built once (building one costs more than running it).
# By `postgres` (columns.one_of).
_EVENTS_TABLE = Event.metadata.tables[Event.__tablename__]
_STORED_IDS = {
    postgres: select(_EVENTS_TABLE.c.message_id).where(
        one_of(_EVENTS_TABLE.c.message_id, "ids", postgres)
    )
    for postgres in (True, False)
}
_CUSTOMERS = {
    postgres: select(Customer)
    .where(one_of(Customer.metadata.tables[Customer.__tablename__].c.id, "ids", postgres))
    .order_by(Customer.id)
    .with_for_update()
    for postgres in (True, False)
}
_INSERT_EVENTS = insert(_EVENTS_TABLE)
# PostgreSQL: `_CUSTOMERS`, each row with the stored ids among `messages` (evaluated once:
# an uncorrelated subquery; `FOR UPDATE OF` the customers only).
_CUSTOMERS_STORED = (
    select(
        Customer,
        select(func.array_agg(_EVENTS_TABLE.c.message_id))
        .where(one_of(_EVENTS_TABLE.c.message_id, "messages", True))
        .scalar_subquery(),
    )
    .where(one_of(Customer.metadata.tables[Customer.__tablename__].c.id, "ids", True))
    .order_by(Customer.id)
    .with_for_update(of=Customer)
)


def _postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _store(
    session: Session, messages: list[Incoming], seen: set[str], rows: list[dict[str, Any]]
) -> Accepted:
    """Store `messages` not in `seen` (which gains them): the write lock is taken. Their
    events are added to `rows`, which the caller inserts (`_flush_events`) after the
    last call of its transaction: one `INSERT` for a whole group.

    No ORM object per event: the customers of all the messages are read in one query
    (`_preload`), and the events go in with one multi-row `INSERT` (`_flush_events`),
    written before anything that must see them: a merge (it re-keys the stored events of
    the merged customer) and an identify's `trait_changed` events (stored after theirs,
    as the dispatcher hands each customer's events over in the order of their ids)."""
    result = Accepted()
    now = utcnow()
    _preload(session, [m for m in messages if m.message_id not in seen])
    for message in messages:
        if message.message_id in seen:
            result.duplicates += 1
            continue
        seen.add(message.message_id)
        if _merges(message):
            _flush_events(session, rows)
        before = _traits_before(session, message)
        customer = _apply(session, message)
        changed = [] if before is None else traits.changes(before, traits.snapshot(customer))
        routed = message.to_dispatch
        rows.append(_event_row(message, customer.id, now))
        added = 0
        if changed:
            # trait_changed events, derived from this message: stored after it, routed later.
            _flush_events(session, rows)
            added = traits.store(
                session, customer.id, message.message_id, changed, message.timestamp, now
            )
            session.flush()
        if message.name in inbox.ENGAGEMENT_EVENTS:  # the app reports an inbox open/click
            inbox.record_engagement(session, customer.id, message.name, message.properties)
        result.stored += 1
        result.to_dispatch += routed + added
        result.types[message.type] = result.types.get(message.type, 0) + 1
    return result


def _merges(message: Incoming) -> bool:
    """Whether `_apply` may merge customers for `message` (alias, or both ids given)."""
    if message.type == "alias":
        return bool(message.previous_id and message.user_id)
    return bool(
        message.user_id and message.anonymous_id and message.user_id != message.anonymous_id
    )


def _flush_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert the events of `rows` (and empty it), in their order, after the ORM's
    pending changes (the customers they belong to)."""
    if not rows:
        return
    session.flush()
    if len(rows) > 1 and _postgres(session):
        session.execute(_INSERT_EVENTS_JSON, {"rows": _json_rows(rows)})
    else:
        session.execute(_INSERT_EVENTS, rows)
    rows.clear()


# The events of a group in one statement on PostgreSQL: the rows bound as one JSON
# array, made rows again by `json_to_recordset` and inserted in the array's order (each
# record's `ordinal`: the serial ids follow it, and the dispatcher hands a customer's
# events over in id order). A list of parameter sets would be psycopg's `executemany`, a
# pipeline to enter and leave and a statement sent per row; an array per column
# (`unnest`) costs more still, psycopg dumping each element in Python (issue 19: API CPU
# per transaction of a group of six 1.30 -> 1.11-1.18 ms). The other columns of a new
# event are always the same (`_store`): written as constants.
_RECORD = ("message_id", "type", "customer_id", "anonymous_id", "name", "properties",
           "timestamp", "received_at", "dispatched_at", "source")  # fmt: skip
_RECORD_TIMES = ("timestamp", "received_at", "dispatched_at")
_UTC = UTCDateTime()


def _insert_events_json() -> Any:
    table = _EVENTS_TABLE.c
    rows = (
        func.json_to_recordset(bindparam("rows", type_=JSON))
        .table_valued(
            *(column(name, JSON if name == "properties" else table[name].type) for name in _RECORD),
            column("ordinal", Integer),
        )
        .render_derived(with_types=True)
    )
    return insert(_EVENTS_TABLE).from_select(
        [*_RECORD, "attempts", "last_error", "next_attempt_at", "parked_at"],
        select(
            *(rows.c[name] for name in _RECORD), literal_column("0"), null(), null(), null()
        ).order_by(rows.c.ordinal),
    )


_INSERT_EVENTS_JSON = _insert_events_json()


def _json_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` as the records `_INSERT_EVENTS_JSON` takes (times as ISO 8601, in UTC)."""
    records = []
    for ordinal, row in enumerate(rows):
        record = {name: row[name] for name in _RECORD}
        record["ordinal"] = ordinal
        for name in _RECORD_TIMES:
            value = record[name]
            if value is not None:
                record[name] = _UTC.process_bind_param(value, None).isoformat()  # type: ignore[union-attr]
        records.append(record)
    return records


# What `_get` knows in a session: the customers read (locked) in it, by id, and the ids
# found absent; dropped by a merge, which changes rows behind the session's back.
_KNOWN = "journeyman.events.intake.known"


def _preload(
    session: Session, messages: list[Incoming], read: dict[str, Customer | None] | None = None
) -> None:
    """Read (`FOR UPDATE`, in id order) the customers of `messages` and those they were
    merged into, in one query per hop instead of one per message; then insert those
    first seen (`_insert_first_seen`). `read`: the first hop, read already (and known)."""
    known = _known(session)
    hops = MERGE_DEPTH + 1
    if read is None:
        wanted = _ids_of(messages)
    else:
        wanted = {c.merged_into for c in read.values() if c is not None and c.merged_into}
        hops -= 1
    for _ in range(hops):
        wanted -= known.keys()
        if not wanted:
            break
        found: dict[str, Customer | None] = dict.fromkeys(sorted(wanted))
        for start in range(0, len(found), IDS_AT_ONCE):
            lot = list(found)[start : start + IDS_AT_ONCE]
            for customer in session.scalars(_CUSTOMERS[_postgres(session)], {"ids": lot}):
                found[customer.id] = customer
        known.update(found)
        wanted = {c.merged_into for c in found.values() if c is not None and c.merged_into}
    _insert_first_seen(session, messages)


def _insert_first_seen(session: Session, messages: list[Incoming]) -> None:
    """Insert (Core, `ON CONFLICT DO NOTHING`) the customers first seen in `messages`,
    then read them `FOR UPDATE` like the others: the customer of each message that
    merges nothing and names an id the database has not got, with nothing set (what
    `_apply` sets comes after, as for any customer).

    On PostgreSQL two transactions may meet a new customer at once: an insert through
    the ORM would fail the second with a unique-key conflict (its whole group then runs
    again one call at a time); this one waits for the first to commit and reads its row.
    Messages that merge create their customers as they go (`merge`)."""
    known = _known(session)
    owners = {m.user_id or m.anonymous_id for m in messages if not _merges(m)}
    new = sorted(own for own in owners if own and own in known and known[own] is None)
    if not new:
        return
    rows: list[dict[str, Any]] = [
        {"id": i, "traits": {}, "push_tokens": [], "merged_into": None} for i in new
    ]
    session.execute(_INSERT_CUSTOMERS[session.get_bind().dialect.name], rows)
    for start in range(0, len(new), IDS_AT_ONCE):
        lot = new[start : start + IDS_AT_ONCE]
        for customer in session.scalars(_CUSTOMERS[_postgres(session)], {"ids": lot}):
            known[customer.id] = customer


_CUSTOMERS_TABLE = Customer.metadata.tables[Customer.__tablename__]
_INSERT_CUSTOMERS = {
    "postgresql": postgresql.insert(_CUSTOMERS_TABLE).on_conflict_do_nothing(),
    "sqlite": sqlite.insert(_CUSTOMERS_TABLE).on_conflict_do_nothing(),
}


def _known(session: Session) -> dict[str, Customer | None]:
    known: dict[str, Customer | None] = session.info.setdefault(_KNOWN, {})
    return known


async def accept_soon(db: Database, messages: list[Incoming]) -> Accepted:
    """`accept` from a coroutine: the calls of the event loop go to a thread in lots,
    not one trip each (journeyman/events/group_commit.py `LoopGroup`)."""
    return await loop_group_of(_group_commit(db)).run(db, messages)


# Groups stored at once on PostgreSQL (SQLite has one writer): their round trips overlap.
# Two, not more: each writer takes whatever requests wait when it is free, so with many
# writers the groups shrink to a request or two and every request pays a transaction of
# its own (its checkout, reads and commit); two keep the groups large and the round
# trips overlapping (issue 19, against eight writers, on a loaded 2-core machine: API
# CPU per event 2.43-2.44 -> 2.09-2.28 ms with one process, 3.72-3.77 -> 3.13-3.54 ms
# with two).
POSTGRES_WRITERS = 2


def _group_commit(db: Database) -> GroupCommit[list[Incoming], Accepted]:
    writers = 1 if db.url.startswith("sqlite") else POSTGRES_WRITERS
    return group_of(db, _accept_group, _accept_alone, writers)


def _accept_group(db: Database, calls: list[list[Incoming]]) -> list[Accepted]:
    """Several calls of `accept` in one transaction (journeyman/events/group_commit.py):
    one lock, one look for stored ids and one read of the customers (in id order) for
    them all; each call's messages then go in as they would alone, seeing the calls
    before (duplicates across calls are found). Groups of `_lean` calls only take
    `_accept_lean`, without the ORM."""
    if all(_lean(call) for call in calls):
        return _accept_lean(db, calls)
    return _accept_orm(db, calls)


def _accept_orm(db: Database, calls: list[list[Incoming]]) -> list[Accepted]:
    """`_accept_group` through an ORM session: identify, alias, merges."""
    with db.session() as session:
        _lock_for_write(session)
        seen = _stored_and_preload(session, [m for call in calls for m in call])
        rows: list[dict[str, Any]] = []
        accepted = [_store(session, call, seen, rows) for call in calls]
        _flush_events(session, rows)
        return accepted


# -- the lean path: no ORM ---------------------------------------------------------------
#
# Most of intake is `track`, `page` and `screen` calls of customers who merge nothing. What
# they change on a customer is a few columns (`_apply` without identify or merge: the
# first `identified_at`, `_apply_context`'s push token, time zone and locale), and the
# ORM session, its identity map and a `Customer` object per customer cost more CPU than
# the statements themselves (issue 19: about 30% of a group's CPU on PostgreSQL). So such
# calls go through Core on a plain connection: the customers read as rows (locked, in id
# order, with the stored message ids on PostgreSQL, as `_stored_and_preload` does), the
# first seen inserted as `_insert_first_seen` does, what changed written back with one
# `UPDATE` per changed customer (one executemany), the events inserted as
# `_flush_events` does. The same rows come out as through `_store`.


def _lean(messages: list[Incoming]) -> bool:
    """Whether `_accept_lean` may store `messages`: no identify, no alias, no merge, no
    inbox engagement (which write elsewhere through the ORM)."""
    for m in messages:
        if m.type not in _LEAN_TYPES or m.name in inbox.ENGAGEMENT_EVENTS:
            return False
        if m.user_id and m.anonymous_id and m.user_id != m.anonymous_id:
            return False
    return True


_LEAN_TYPES = frozenset({"track", "page", "screen", "group"})


class _NotLean(Exception):
    """What `_accept_lean` leaves to the ORM path (a merge chain ending in a missing
    row): the transaction is rolled back and the calls go through `_accept`."""


class _Row:
    """What the lean path reads and may change of a customer."""

    __slots__ = ("changed", "id", "identified_at", "locale", "merged_into", "push_tokens",
                 "timezone")  # fmt: skip

    def __init__(self, row: Any) -> None:
        self.id: str = row.id
        self.merged_into: str | None = row.merged_into
        self.identified_at: datetime | None = row.identified_at
        self.timezone: str | None = row.timezone
        self.locale: str | None = row.locale
        self.push_tokens: list[Any] = list(row.push_tokens or [])
        self.changed = False


_LEAN_COLUMNS = [
    _CUSTOMERS_TABLE.c[name]
    for name in ("id", "merged_into", "identified_at", "timezone", "locale", "push_tokens")
]
_LEAN_CUSTOMERS = {
    postgres: select(*_LEAN_COLUMNS)
    .where(one_of(_CUSTOMERS_TABLE.c.id, "ids", postgres))
    .order_by(_CUSTOMERS_TABLE.c.id)
    .with_for_update()
    for postgres in (True, False)
}
# PostgreSQL: `_LEAN_CUSTOMERS` with the stored ids among `messages` (`_CUSTOMERS_STORED`).
_LEAN_CUSTOMERS_STORED = (
    select(
        *_LEAN_COLUMNS,
        select(func.array_agg(_EVENTS_TABLE.c.message_id))
        .where(one_of(_EVENTS_TABLE.c.message_id, "messages", True))
        .scalar_subquery()
        .label("stored"),
    )
    .where(one_of(_CUSTOMERS_TABLE.c.id, "ids", True))
    .order_by(_CUSTOMERS_TABLE.c.id)
    .with_for_update(of=_CUSTOMERS_TABLE)
)
_LEAN_UPDATE = (
    update(_CUSTOMERS_TABLE)
    .where(_CUSTOMERS_TABLE.c.id == bindparam("customer_id"))
    .values(
        identified_at=bindparam("identified_at"),
        timezone=bindparam("timezone"),
        locale=bindparam("locale"),
        push_tokens=bindparam("push_tokens"),
        updated_at=bindparam("updated_at"),
    )
)


def _event_row(message: Incoming, customer_id: str, now: datetime) -> dict[str, Any]:
    """The `events` row of a message stored for `customer_id`: a routed type that a
    journey may hear waits for the dispatcher, any other is handed over as it is
    stored."""
    return {
        "message_id": message.message_id,
        "type": message.type,
        "customer_id": customer_id,
        "anonymous_id": message.anonymous_id,
        "name": message.name,
        "properties": _stored_properties(message),
        "timestamp": message.timestamp,
        "received_at": now,
        "dispatched_at": None if message.to_dispatch else now,
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "parked_at": None,
        "source": message.source,
    }


def _accept_lean(db: Database, calls: list[list[Incoming]]) -> list[Accepted]:
    """`_accept_group` (or `_accept_alone`, one call) of `_lean` calls, through Core."""
    try:
        with db.transaction() as connection:
            return _store_lean(connection, calls)
    except _NotLean as exc:
        log.debug("intake: %s; through the ORM", exc)
    return _accept_orm(db, calls)


def _store_lean(connection: Connection, calls: list[list[Incoming]]) -> list[Accepted]:
    postgres = connection.dialect.name == "postgresql"
    if not postgres:
        connection.execute(_WRITE_LOCK)
    messages = [m for call in calls for m in call]
    ids = [m.message_id for m in messages]
    wanted = sorted(_ids_of(messages))
    known: dict[str, _Row | None] = {}
    stored: set[str] | None = None
    if postgres and len(wanted) <= IDS_AT_ONCE and len(ids) <= IDS_AT_ONCE:
        known.update(dict.fromkeys(wanted))
        for row in connection.execute(_LEAN_CUSTOMERS_STORED, {"ids": wanted, "messages": ids}):
            known[row.id] = _Row(row)
            stored = set(row.stored or ())
        wanted = []
    if stored is None:  # no customer row to bring them, or SQLite
        stored = set()
        for start in range(0, len(ids), IDS_AT_ONCE):
            lot = ids[start : start + IDS_AT_ONCE]
            stored.update(connection.scalars(_STORED_IDS[postgres], {"ids": lot}))
    # The customers (then those they were merged into), as `_preload` reads them.
    hops = MERGE_DEPTH + 1
    step = set(wanted) if wanted else _merged_into(known)
    for _ in range(hops):
        step -= known.keys()
        if not step:
            break
        _read_lean(connection, postgres, sorted(step), known)
        step = _merged_into(known)
    # The customers first seen (`_insert_first_seen`), of messages not stored yet.
    owners = {m.user_id or m.anonymous_id for m in messages if m.message_id not in stored}
    new = sorted(own for own in owners if own and known.get(own, False) is None)
    if new:
        values: list[dict[str, Any]] = [
            {"id": i, "traits": {}, "push_tokens": [], "merged_into": None} for i in new
        ]
        connection.execute(_INSERT_CUSTOMERS[connection.dialect.name], values)
        _read_lean(connection, postgres, new, known)
    now = utcnow()
    rows: list[dict[str, Any]] = []
    results = []
    for call in calls:
        result = Accepted()
        for message in call:
            if message.message_id in stored:
                result.duplicates += 1
                continue
            stored.add(message.message_id)
            own_id = message.user_id or message.anonymous_id
            assert own_id, "validated messages carry userId or anonymousId"
            customer = _root_lean(known, own_id)
            if message.user_id and customer.identified_at is None:
                customer.identified_at = now
                customer.changed = True
            _context_lean(customer, message.context)
            routed = message.to_dispatch
            rows.append(_event_row(message, customer.id, now))
            result.stored += 1
            result.to_dispatch += routed
            result.types[message.type] = result.types.get(message.type, 0) + 1
        results.append(result)
    changed = [
        {
            "customer_id": c.id,
            "identified_at": c.identified_at,
            "timezone": c.timezone,
            "locale": c.locale,
            "push_tokens": c.push_tokens,
            "updated_at": now,
        }
        for c in known.values()
        if c is not None and c.changed
    ]
    if changed:
        connection.execute(_LEAN_UPDATE, changed)
    if len(rows) > 1 and postgres:
        connection.execute(_INSERT_EVENTS_JSON, {"rows": _json_rows(rows)})
    elif rows:
        connection.execute(_INSERT_EVENTS, rows)
    return results


def _merged_into(known: dict[str, _Row | None]) -> set[str]:
    return {c.merged_into for c in known.values() if c is not None and c.merged_into}


def _read_lean(
    connection: Connection, postgres: bool, ids: list[str], known: dict[str, _Row | None]
) -> None:
    """Read (`FOR UPDATE`, in id order) the customers `ids` into `known` (None: absent)."""
    for start in range(0, len(ids), IDS_AT_ONCE):
        lot = ids[start : start + IDS_AT_ONCE]
        known.update(dict.fromkeys(lot))
        for row in connection.execute(_LEAN_CUSTOMERS[postgres], {"ids": lot}):
            known[row.id] = _Row(row)


def _root_lean(known: dict[str, _Row | None], customer_id: str) -> _Row:
    """`_root`, on the rows read: the customer's row, or the one it was merged into."""
    customer = known.get(customer_id)
    for _ in range(MERGE_DEPTH):
        if customer is None or customer.merged_into is None:
            break
        if customer.merged_into not in known:
            raise _NotLean(f"the merge chain of {customer_id} is longer than was read")
        customer = known[customer.merged_into]
    else:
        log.warning("merge chain of %s longer than %d", customer_id, MERGE_DEPTH)
    if customer is None:
        raise _NotLean(f"the merge chain of {customer_id} ends in no customer")
    return customer


def _context_lean(customer: _Row, context: dict[str, Any]) -> None:
    """`_apply_context` on a `_Row`."""
    token, fills = _from_context(customer, context)
    if token is not None and token not in customer.push_tokens:
        customer.push_tokens = [token, *customer.push_tokens]
        customer.changed = True
    for name, value in fills.items():
        setattr(customer, name, value)
        customer.changed = True


_WRITE_LOCK = text("UPDATE customers SET id = id WHERE 0")


def _lock_for_write(session: Session) -> None:
    """Take SQLite's write lock first, so the reads below are not stale when we write.

    SQLite allows one writer; a transaction that reads first and writes later can find
    the database changed under it. PostgreSQL needs nothing here: customer rows are
    read `FOR UPDATE` instead.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(_WRITE_LOCK)


def _traits_before(session: Session, message: Incoming) -> dict[str, Any] | None:
    """The traits of an identify's customer before it applies (none yet: empty), for its
    trait_changed events; None for other messages."""
    own_id = message.user_id or message.anonymous_id
    if message.type != "identify" or not own_id:
        return None
    customer = _root(session, own_id)
    return {} if customer is None else traits.snapshot(customer)


def _apply(session: Session, message: Incoming) -> Customer:
    """The profile changes of one message; returns the customer the event belongs to."""
    client = message.source == "client"
    if message.type == "alias" and message.previous_id and message.user_id:
        merge(session, source_id=message.previous_id, target_id=message.user_id, client=client)
    elif message.user_id and message.anonymous_id and message.user_id != message.anonymous_id:
        merge(session, source_id=message.anonymous_id, target_id=message.user_id, client=client)
    own_id = message.user_id or message.anonymous_id
    assert own_id, "validated messages carry userId or anonymousId"
    customer = _root(session, own_id) or _create(session, own_id)
    if message.user_id and customer.identified_at is None:
        customer.identified_at = utcnow()
    if message.type == "identify":
        if client:
            _check_contact_change(customer, message.traits)
        upsert_traits(customer, message.traits)
        contacts.note(session, customer, message.traits, message.source)
    _apply_context(customer, message.context)
    return customer


# Contact points a client key may set on a customer who has none, never change.
GUARDED_CONTACTS = ("email", "phone")


# Traits that are a consent only a server key may record (interfaces.md, WhatsApp): a
# client key could otherwise opt anyone it names into a channel.
SERVER_ONLY_TRAITS = ("whatsapp_opt_in",)


def _check_contact_change(customer: Customer, traits: dict[str, Any]) -> None:
    for trait in SERVER_ONLY_TRAITS:
        if trait in traits and traits[trait] != (customer.traits or {}).get(trait):
            raise Refused(
                "consent_trait",
                f"a client key may not set {trait}: it records a consent; send it from your "
                "server with a server key, or record it with the consents API",
            )
    for name in GUARDED_CONTACTS:
        if name not in traits:
            continue
        current, given = getattr(customer, name), traits[name]
        if current is None or _same_contact(current, given):
            continue
        raise Refused(
            "contact_change",
            f"a client key may not change the {name} of a customer who has one: "
            "send this identify from your server, with a server key",
        )


def _same_contact(current: str, given: Any) -> bool:
    return isinstance(given, str) and given.strip().casefold() == current.strip().casefold()


def upsert_traits(customer: Customer, traits: dict[str, Any]) -> None:
    """Contact fields go to their columns, push tokens are added, the rest to `traits`.

    A trait sent as null clears it.
    """
    for name in CONTACT_FIELDS:
        if name in traits:
            setattr(customer, name, traits[name])
    tokens: list[Any] = []
    if isinstance(traits.get("push_tokens"), list):
        tokens.extend(traits["push_tokens"])
    if traits.get("push_token"):
        tokens.append(traits["push_token"])
    _add_push_tokens(customer, tokens)
    rest = {k: v for k, v in traits.items() if k not in NOT_TRAITS}
    if rest:
        merged = {**(customer.traits or {}), **rest}
        customer.traits = {k: v for k, v in merged.items() if v is not None}


def _apply_context(customer: Customer, context: dict[str, Any]) -> None:
    """What SDKs put in `context` (`_from_context`), on the profile."""
    token, fills = _from_context(customer, context)
    if token is not None:
        _add_push_tokens(customer, [token])
    for name, value in fills.items():
        setattr(customer, name, value)


def _from_context(customer: Any, context: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    """What of `context` a profile (`Customer` or the lean path's row) takes: the device's
    push token, and the browser's time zone and locale where the profile has none (traits
    say it better); a time zone the zone database does not know is left out."""
    device = context.get("device")
    token = device.get("token") if isinstance(device, dict) else None
    fills = {}
    for name in ("timezone", "locale"):
        value = context.get(name)
        if isinstance(value, str) and value and getattr(customer, name) is None:
            if name == "timezone" and not _known_zone(value):
                continue
            fills[name] = value
    return (token if isinstance(token, str) and token else None), fills


def _add_push_tokens(customer: Customer, tokens: list[Any]) -> None:
    current = list(customer.push_tokens or [])
    new = [t for t in tokens if isinstance(t, str) and t and t not in current]
    if new:
        # Newest first: the channel picks the first token.
        customer.push_tokens = [*dict.fromkeys(reversed(new)), *current]


def merge(session: Session, *, source_id: str, target_id: str, client: bool = False) -> None:
    """Make `source_id` (an anonymous visitor, or a previous id) the customer `target_id`.

    After this, events and profile reads for `source_id` go to the target's root
    customer. Merging ids that already resolve to the same customer does nothing.
    `client`: the call came with a client key, which may not merge a customer who was
    ever identified (`Refused`).
    """
    target = _root(session, target_id) or _create(session, target_id)
    source = _get(session, source_id)
    if source is None:
        source = _new_customer(source_id, merged_into=target.id)
        session.add(source)
        session.flush()
        _known(session)[source_id] = source
        return
    if client and source.identified_at is not None and _root(session, source_id) is not target:
        raise Refused(
            "identified_merge",
            f"a client key may not merge {source_id!r}, a customer identified before, into "
            "another: only an anonymous visitor merges on login (use a server key to merge "
            "known customers)",
        )
    if source.merged_into is not None:
        root = _root(session, source_id)
        if root is not None and root.id != target.id:
            # An anonymous id already merged into someone else (a shared device) now
            # belongs to the target: its later events go there; what it had stays.
            log.info("anonymous id %s moves from %s to %s", source_id, root.id, target.id)
            source.merged_into = target.id
        return
    if source.id == target.id:
        return
    for name in CONTACT_FIELDS:
        if getattr(target, name) is None and getattr(source, name) is not None:
            setattr(target, name, getattr(source, name))
    target.traits = {**(source.traits or {}), **(target.traits or {})}
    _add_push_tokens(target, list(reversed(source.push_tokens or [])))
    # Personal data lives on the root customer only (erasure has one place to look).
    for name in CONTACT_FIELDS:
        setattr(source, name, None)
    source.traits = {}
    source.push_tokens = []
    source.merged_into = target.id
    # Keep merge chains one hop long: whoever pointed at the source now points at the
    # target, so reads follow at most one `merged_into`.
    session.execute(
        update(Customer).where(Customer.merged_into == source.id).values(merged_into=target.id)
    )
    session.execute(
        update(Event).where(Event.customer_id == source.id).values(customer_id=target.id)
    )
    contacts.merged(session, source.id, target.id)
    session.flush()
    # Rows changed by the statements above: the next reads go to the database, as before.
    _known(session).clear()


def resolve_id(session: Session, customer_id: str) -> str:
    """The id events of `customer_id` belong to: itself, or who it was merged into."""
    root = find_customer(session, customer_id)
    return root.id if root is not None else customer_id


def resolve_ids(session: Session, customer_ids: Iterable[str]) -> dict[str, str]:
    """`resolve_id` of each id, with one query per hop of the merges (usually one in all)
    instead of one per id: the dispatcher resolves a page of events at once."""
    wanted = set(customer_ids)
    if not wanted:
        return {}
    merged_into: dict[str, str | None] = {}  # every customer row read, by id
    step = wanted
    for _ in range(MERGE_DEPTH + 1):
        rows = session.execute(
            select(Customer.id, Customer.merged_into).where(Customer.id.in_(step))
        ).all()
        merged_into.update((row.id, row.merged_into) for row in rows)
        step = {t for t in merged_into.values() if t is not None and t not in merged_into}
        if not step:
            break
    resolved = {}
    for customer_id in wanted:
        # The same walk as `find_customer`: at most MERGE_DEPTH hops; a missing row ends
        # it with no customer, and then the id stands for itself.
        current: str | None = customer_id if customer_id in merged_into else None
        for _ in range(MERGE_DEPTH):
            if current is None or merged_into[current] is None:
                break
            target = merged_into[current]
            current = target if target in merged_into else None
        resolved[customer_id] = current if current is not None else customer_id
    return resolved


def _root(session: Session, customer_id: str) -> Customer | None:
    customer = _get(session, customer_id)
    for _ in range(MERGE_DEPTH):
        if customer is None or customer.merged_into is None:
            return customer
        customer = _get(session, customer.merged_into)
    log.warning("merge chain of %s longer than %d", customer_id, MERGE_DEPTH)
    return customer


def _get(session: Session, customer_id: str) -> Customer | None:
    known = _known(session)
    if customer_id in known:
        return known[customer_id]
    customer = session.get(Customer, customer_id, with_for_update=True)
    known[customer_id] = customer
    return customer


def _create(session: Session, customer_id: str) -> Customer:
    """A new customer, inserted at the next flush: with the other new customers and
    whatever `_apply` sets on it (the events' `_flush_events` flushes first)."""
    customer = _new_customer(customer_id)
    session.add(customer)
    _known(session)[customer_id] = customer
    return customer


def _new_customer(customer_id: str, merged_into: str | None = None) -> Customer:
    return Customer(id=customer_id, traits={}, push_tokens=[], merged_into=merged_into)


def _stored_properties(message: Incoming) -> dict[str, Any]:
    match message.type:
        case "identify":
            return dict(message.traits)
        case "alias":
            return {"previous_id": message.previous_id}
        case "group":
            return {"group_id": message.group_id, "traits": dict(message.traits)}
        case _:
            return dict(message.properties)


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True
