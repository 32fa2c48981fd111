"""Group commit of intake (journeyman/events/group_commit.py, used by `intake.accept`).

Concurrent `accept` calls share one transaction, yet each stays all or nothing, sees the
calls before it (a message id sent by two calls is stored once), and fails alone. The
tests hold the group's writers so that the calls queue, then let them go: the first thread
to take it stores them all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from journeyman.events import intake
from journeyman.events.intake import Accepted, Incoming, Refused, accept, accept_soon
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event
from tests.waiting import eventually_sync


def track(customer: str, message_id: str) -> Incoming:
    return Incoming(
        type="track",
        message_id=message_id,
        timestamp=datetime(2026, 11, 30, 12, tzinfo=UTC),
        user_id=customer,
        name="cart_abandoned",
    )


def identify(customer: str, message_id: str, email: str, anonymous: str | None = None) -> Incoming:
    return Incoming(
        type="identify",
        message_id=message_id,
        timestamp=datetime(2026, 11, 30, 12, tzinfo=UTC),
        user_id=customer,
        anonymous_id=anonymous,
        traits={"email": email},
    )


class Transactions:
    """Counts the sessions and Core transactions `db` opens (each is one transaction)."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        opened = db.session

        @contextmanager
        def counted() -> Iterator[Any]:
            self.count += 1
            with opened() as session:
                yield session

        began = db.transaction

        @contextmanager
        def counted_core() -> Iterator[Any]:
            self.count += 1
            with began() as connection:
                yield connection

        monkeypatch.setattr(db, "session", counted)
        monkeypatch.setattr(db, "transaction", counted_core)


def queued(db: Database, calls: list[list[Incoming]]) -> list[Accepted | BaseException]:
    """Run `calls` in threads while every writer of the group is held, let them go once all of
    them are queued, and return what each returned or raised, in order."""
    group = intake._group_commit(db)
    results: list[Accepted | BaseException | None] = [None] * len(calls)

    def call(index: int) -> None:
        try:
            results[index] = accept(db, calls[index])
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    with group.held():
        for thread in threads:
            thread.start()
        eventually_sync(
            lambda: len(group.queue) >= len(calls),
            what=f"all {len(calls)} calls queued behind the held writers",
            every=0.005,
            detail=lambda: f"{len(group.queue)} queued",
        )
    for thread in threads:
        thread.join(10)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def stored(db: Database) -> list[tuple[str, str]]:
    with db.session() as session:
        rows = session.execute(select(Event.message_id, Event.customer_id).order_by(Event.id))
        return [(m, c) for m, c in rows]


def test_queued_calls_commit_together_in_their_order(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = Transactions(db, monkeypatch)
    calls = [[track(f"u{n}", f"m{n}"), track(f"u{n}", f"m{n}b")] for n in range(8)]
    results = queued(db, calls)
    assert transactions.count == 1
    assert all(isinstance(r, Accepted) and (r.stored, r.to_dispatch) == (2, 2) for r in results)
    assert len(stored(db)) == 16
    assert {m for m, _ in stored(db)} == {m.message_id for c in calls for m in c}


def test_a_message_id_sent_by_two_calls_is_stored_once(db: Database) -> None:
    results = queued(
        db,
        [[track("u1", "same"), track("u1", "a")], [track("u1", "same"), track("u1", "b")]],
    )
    assert [(r.stored, r.duplicates) for r in results if isinstance(r, Accepted)] == [
        (2, 0),
        (1, 1),
    ]
    assert sorted(m for m, _ in stored(db)) == ["a", "b", "same"]


def test_a_later_call_sees_the_customer_an_earlier_one_merged(db: Database) -> None:
    queued(
        db,
        [
            [identify("known", "i1", "k@example.com", anonymous="anon")],
            [
                Incoming(
                    type="track",
                    message_id="t1",
                    timestamp=datetime.now(UTC),
                    anonymous_id="anon",
                    name="viewed",
                )
            ],
        ],
    )
    assert dict(stored(db)) == {"i1": "known", "t1": "known"}


def test_a_failing_call_fails_alone_and_stores_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_properties = intake._stored_properties

    def properties(message: Incoming) -> dict[str, Any]:
        if message.message_id == "bad":
            raise ValueError("a message this code cannot take")
        return real_properties(message)

    monkeypatch.setattr(intake, "_stored_properties", properties)
    transactions = Transactions(db, monkeypatch)
    results = queued(
        db,
        [
            [track("u1", "ok1")],
            [track("u2", "before-bad"), track("u2", "bad")],
            [track("u3", "ok3")],
        ],
    )
    assert isinstance(results[1], ValueError)
    assert isinstance(results[0], Accepted) and isinstance(results[2], Accepted)
    # The group, rolled back, then each call alone.
    assert transactions.count == 1 + 3
    assert sorted(m for m, _ in stored(db)) == ["ok1", "ok3"]


def test_many_threads_at_once_store_every_event_exactly_once(db: Database) -> None:
    # No writer held here: groups form as they do under load, of whatever size.
    errors: list[BaseException] = []
    reports: list[Accepted] = []

    def sender(n: int) -> None:
        for k in range(25):
            # Every id is sent twice, by different threads.
            batch = [track(f"u{(n + k) % 5}", f"e{(n * 25 + k) % 200}")]
            try:
                reports.append(accept(db, batch))
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sum(r.stored for r in reports) == 200
    assert sum(r.duplicates for r in reports) == 200
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 200


def test_stored_ids_are_looked_up_in_lots(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(intake, "IDS_AT_ONCE", 2)
    accept(db, [track("u1", f"m{n}") for n in (1, 3, 5)])
    results = queued(
        db,
        [[track("u1", f"m{n}") for n in range(1, 4)], [track("u1", f"m{n}") for n in range(4, 7)]],
    )
    assert [(r.stored, r.duplicates) for r in results if isinstance(r, Accepted)] == [
        (1, 2),
        (2, 1),
    ]
    assert sorted(m for m, _ in stored(db)) == [f"m{n}" for n in range(1, 7)]


# -- from coroutines (the API's requests): `accept_soon` -------------------------------


async def test_a_coroutine_calling_again_at_once_is_answered(db: Database) -> None:
    # The caller resumes before the trip that answered it has ended: its next call must
    # still find a trip to go with (it once waited forever).
    for n in range(5):
        result = await asyncio.wait_for(accept_soon(db, [track("u1", f"s{n}")]), 30)
        assert (result.stored, result.duplicates) == (1, 0)
    assert [m for m, _ in stored(db)] == [f"s{n}" for n in range(5)]


async def test_coroutines_share_trips_and_each_gets_its_own_answer(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips = 0
    run_all = intake._group_commit(db).run_all

    def counted(*args: Any) -> Any:
        nonlocal trips
        trips += 1
        return run_all(*args)

    monkeypatch.setattr(intake._group_commit(db), "run_all", counted)
    refused = Incoming(
        type="alias",
        message_id="alias-1",
        timestamp=datetime.now(UTC),
        user_id="known-2",
        previous_id="known-1",
        source="client",
    )
    accept(db, [identify("known-1", "i1", "one@example.com")])
    accept(db, [identify("known-2", "i2", "two@example.com")])
    calls = [accept_soon(db, [track(f"u{n}", f"c{n}")]) for n in range(20)]
    calls.insert(7, accept_soon(db, [refused]))
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 60)
    assert isinstance(results.pop(7), Refused)  # its own error, not the others'
    assert all(isinstance(r, Accepted) and r.stored == 1 for r in results)
    assert trips < 21
    assert {m for m, _ in stored(db)} >= {f"c{n}" for n in range(20)}
    assert "alias-1" not in {m for m, _ in stored(db)}


def test_a_customer_another_transaction_is_creating_does_not_fail_the_group(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another transaction (another API process) inserts customer u-new and has not
    committed yet: the group that meets u-new too waits for it, then uses its row,
    instead of failing on the unique key and storing its calls one by one."""
    alone: list[object] = []
    original = intake._accept_alone

    def one_by_one(db: Database, messages: list[Incoming]) -> Accepted:
        alone.append(messages)
        return original(db, messages)

    monkeypatch.setattr(intake._group_commit(db), "alone", one_by_one)
    calls = [[track("u-new", "m1")], [track("u-new", "m2"), track("u-other", "m3")]]
    other = db.engine.connect()
    other.begin()
    other.execute(
        Customer.__table__.insert().values(id="u-new", traits={"plan": "pro"}, push_tokens=[])
    )
    if db.url.startswith("sqlite"):
        other.commit()  # SQLite has one writer: the other transaction goes first
    results: list[Accepted | BaseException] = []
    worker = threading.Thread(target=lambda: results.extend(queued(db, calls)))
    worker.start()
    worker.join(0.5)  # on PostgreSQL, blocked on the other transaction's row
    other.commit()
    other.close()
    worker.join(10)
    assert [(r.stored, r.duplicates) for r in results if isinstance(r, Accepted)] == [
        (1, 0),
        (2, 0),
    ]
    assert alone == []
    assert stored(db) == [("m1", "u-new"), ("m2", "u-new"), ("m3", "u-other")]
    with db.session() as session:
        customers = {c.id: c for c in session.scalars(select(Customer))}
    assert customers["u-new"].traits == {"plan": "pro"}  # the other transaction's row
    assert customers["u-new"].identified_at is not None  # named as a userId here
    assert customers["u-other"].traits == {} and customers["u-other"].merged_into is None


def test_a_first_seen_anonymous_customer_is_not_identified(db: Database) -> None:
    page = Incoming(
        type="page",
        message_id="p1",
        timestamp=datetime(2026, 11, 30, 12, tzinfo=UTC),
        anonymous_id="anon-1",
        name="page_viewed",
        context={"timezone": "Europe/Paris", "locale": "fr-FR"},
    )
    accept(db, [page])
    with db.session() as session:
        customer = session.get(Customer, "anon-1")
        assert customer is not None
        assert (customer.identified_at, customer.merged_into) == (None, None)
        assert (customer.timezone, customer.locale, customer.traits) == (
            "Europe/Paris",
            "fr-FR",
            {},
        )


def _cut_off(db: Database) -> int:
    """Terminate every server process connected to `db`'s database (a PostgreSQL restart,
    a proxy timing idle connections out): the pool's connections are dead, unknown to it."""
    from sqlalchemy import create_engine, make_url, text

    url = make_url(db.url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            return len(
                connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": url.database},
                ).all()
            )
    finally:
        admin.dispose()


def test_calls_that_meet_a_dead_connection_are_stored_once_and_answered(db: Database) -> None:
    """The pool does not ping before each checkout (journeyman/storage/db.py): a call
    that gets a connection the server dropped is tried again on a fresh one, alone or
    in a group, and stored once."""
    if not db.url.startswith("postgresql"):
        pytest.skip("SQLite's connections are not dropped by a server")
    accept(db, [track("u0", "m0")])
    assert _cut_off(db) >= 1
    alone = accept(db, [track("u1", "m1")])
    assert (alone.stored, alone.duplicates) == (1, 0)
    # Several connections pooled, all cut off; then a group meets one of them.
    with db.session() as a, db.session() as b, db.session() as c:
        for session in (a, b, c):
            session.execute(select(1))
    assert _cut_off(db) >= 3
    results = queued(db, [[track(f"u{n}", f"m{n}")] for n in range(2, 6)])
    assert all(isinstance(r, Accepted) and r.stored == 1 for r in results), results
    assert sorted(m for m, _ in stored(db)) == [f"m{n}" for n in range(6)]


def test_a_group_stores_each_event_as_alone_and_in_order(db: Database) -> None:
    """The events of a group go in with one statement on PostgreSQL (a JSON array of
    records): every column as a call alone stores it, in the order of the calls and of
    their messages, duplicates within a call and across calls stored once."""
    local = datetime(2026, 11, 30, 13, 30, 15, 250000, tzinfo=ZoneInfo("Europe/Berlin"))
    page = Incoming(
        type="page",
        message_id="p1",
        timestamp=local,
        anonymous_id="anon-1",
        name="Pricing",
        properties={"path": "/pricing", "nested": {"list": [1, 2.5, None, "é"]}, "n": None},
        source="client",
    )
    calls = [
        [track("u1", "t1"), identify("u1", "i1", "u1@example.com"), track("u1", "t1")],
        [page, track("u2", "t2")],
        [track("u1", "t1"), track("u2", "t3"), track("u1", "t4")],
    ]
    results = intake._accept_group(db, calls)
    assert [(r.stored, r.duplicates) for r in results] == [(2, 1), (2, 0), (2, 1)]
    assert intake._accept_group(db, [[track("u1", "t1")], [track("u3", "t5")]])[0].duplicates == 1
    with db.session() as session:
        events = session.scalars(select(Event).order_by(Event.id)).all()
    order = ["t1", "i1", "p1", "t2", "t3", "t4", "t5"]
    assert [e.message_id for e in events] == order
    by_id = {e.message_id: e for e in events}
    assert [by_id[m].customer_id for m in order] == ["u1", "u1", "anon-1", "u2", "u2", "u1", "u3"]
    assert by_id["p1"].properties == page.properties
    assert by_id["p1"].timestamp == local.astimezone(UTC)
    assert by_id["p1"].anonymous_id == "anon-1"
    assert (by_id["p1"].name, by_id["p1"].source, by_id["t1"].source) == (
        "Pricing",
        "client",
        "server",
    )
    assert by_id["i1"].properties == {"email": "u1@example.com"}
    assert by_id["i1"].dispatched_at is not None and by_id["t1"].dispatched_at is None
    for event in events:
        assert (event.attempts, event.last_error, event.next_attempt_at, event.parked_at) == (
            0,
            None,
            None,
            None,
        )
        assert event.received_at is not None and event.received_at.tzinfo is not None


def test_duplicates_stored_by_another_process_are_found_whatever_the_group_reads(
    db: Database,
) -> None:
    """On PostgreSQL the stored ids come with the first read of the customers, or apart
    when that read finds no customer: either way a message id another process (another
    `Database`, its own pool and groups) stored is a duplicate, within a group of mixed
    identify and track calls and alone."""
    other = Database(db.url)
    try:
        intake._accept_group(
            other,
            [[track("u1", "a1"), identify("u1", "a2", "u1@example.com")], [track("u2", "b1")]],
        )
        # Customers known (the stored ids ride along), new ones, and a group of new
        # customers only (the stored ids read apart).
        results = intake._accept_group(
            db,
            [
                [identify("u1", "a2", "u1@example.com"), track("u1", "a3")],
                [track("u9", "b1"), track("u3", "c1")],
                [track("u2", "b1")],
            ],
        )
        assert [(r.stored, r.duplicates) for r in results] == [(1, 1), (1, 1), (0, 1)]
        only_new = intake._accept_group(db, [[track("u7", "a1")], [track("u8", "d1")]])
        assert [(r.stored, r.duplicates) for r in only_new] == [(0, 1), (1, 0)]
        assert accept(db, [track("u6", "b1"), track("u6", "e1")]).duplicates == 1
        assert accept(db, [track("u1", "a1")]).duplicates == 1
    finally:
        other.dispose()
    assert sorted(m for m, _ in stored(db)) == ["a1", "a2", "a3", "b1", "c1", "d1", "e1"]
    assert dict(stored(db))["b1"] == "u2"
    with db.session() as session:
        customers = set(session.scalars(select(Customer.id)))
    # A duplicate creates no customer; the customers of new events exist.
    assert customers == {"u1", "u2", "u3", "u6", "u8"}


# -- the lean path (intake `_accept_lean`: Core, no ORM session) --------------------------


def test_lean_calls_store_what_the_orm_path_stores(db: Database) -> None:
    """Track, page, screen and group calls that merge nothing go through Core. A group
    with new and known customers, duplicates within a call and across calls and groups,
    context that fills a profile's gaps (and not what it has): the same rows and
    answers as through the ORM, customers first seen created once."""
    assert intake._lean([track("u1", "x")])
    accept(db, [identify("known", "i0", "known@example.com")])
    with db.session() as session:
        customer = session.get(Customer, "known")
        assert customer is not None
        customer.traits = {"plan": "pro"}
        customer.timezone = "Europe/Berlin"
        customer.push_tokens = ["old-token"]
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    device = {"device": {"token": "new-token"}, "timezone": "America/New_York", "locale": "en-US"}
    calls = [
        [
            track("known", "t1"),
            Incoming(type="screen", message_id="s1", timestamp=at, user_id="known",
                     name="Home", context=device),
            track("known", "t1"),
        ],
        [track("new-1", "t2"), Incoming(type="page", message_id="p1", timestamp=at,
                                        anonymous_id="anon-1", name="Pricing",
                                        context={"timezone": "Not/AZone"})],
        [track("new-1", "t3"), track("known", "t1"), track("new-1", "t2")],
        [Incoming(type="group", message_id="g1", timestamp=at, user_id="new-1",
                  group_id="acme", traits={"name": "Acme"})],
    ]  # fmt: skip
    assert all(intake._lean(call) for call in calls)
    results = intake._accept_group(db, calls)
    assert [(r.stored, r.duplicates, r.to_dispatch) for r in results] == [
        (2, 1, 2),
        (2, 0, 2),
        (1, 2, 1),
        (1, 0, 0),
    ]
    assert results[3].types == {"group": 1}
    # Across groups, and alone: stored once.
    again = intake._accept_group(db, [[track("known", "t1")], [track("new-2", "t4")]])
    assert [(r.stored, r.duplicates) for r in again] == [(0, 1), (1, 0)]
    assert (accept(db, [track("new-1", "t3"), track("new-2", "t5")]).stored) == 1
    assert stored(db) == [
        ("i0", "known"),
        ("t1", "known"),
        ("s1", "known"),
        ("t2", "new-1"),
        ("p1", "anon-1"),
        ("t3", "new-1"),
        ("g1", "new-1"),
        ("t4", "new-2"),
        ("t5", "new-2"),
    ]
    with db.session() as session:
        customers = {c.id: c for c in session.scalars(select(Customer))}
        events = {e.message_id: e for e in session.scalars(select(Event))}
    assert set(customers) == {"known", "new-1", "anon-1", "new-2"}
    known = customers["known"]
    # The traits untouched; the time zone kept; the locale and the new token added.
    assert known.traits == {"plan": "pro"}
    assert (known.timezone, known.locale) == ("Europe/Berlin", "en-US")
    assert known.push_tokens == ["new-token", "old-token"]
    assert known.email == "known@example.com"
    new = customers["new-1"]
    assert new.identified_at is not None and (new.traits, new.push_tokens) == ({}, [])
    anonymous = customers["anon-1"]
    assert anonymous.identified_at is None and anonymous.timezone is None
    assert events["g1"].properties == {"group_id": "acme", "traits": {"name": "Acme"}}
    assert events["g1"].dispatched_at is not None and events["t2"].dispatched_at is None
    assert (events["s1"].name, events["p1"].name) == ("Home", "Pricing")


def test_a_lean_call_of_a_merged_anonymous_id_is_stored_under_the_known_customer(
    db: Database,
) -> None:
    """An anonymous id merged into a known customer: its later track calls (lean) are
    the known customer's, and what their context sets goes to the known customer."""
    accept(db, [identify("known", "i1", "k@example.com", anonymous="anon-1")])
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    later = Incoming(type="track", message_id="t1", timestamp=at, anonymous_id="anon-1",
                     name="clicked", context={"locale": "de-DE"})  # fmt: skip
    assert intake._lean([later])
    results = intake._accept_group(db, [[later], [track("other", "t2")]])
    assert [r.stored for r in results] == [1, 1]
    assert dict(stored(db))["t1"] == "known"
    with db.session() as session:
        known = session.get(Customer, "known")
        anonymous = session.get(Customer, "anon-1")
        assert known is not None and anonymous is not None
        assert (known.locale, anonymous.locale, anonymous.merged_into) == ("de-DE", None, "known")


def test_what_is_not_lean_goes_through_the_orm(db: Database) -> None:
    """Identify, alias, a message with both ids and an inbox engagement event are not
    lean; a group with any of them goes through the ORM whole, in order."""
    at = datetime(2026, 11, 30, 12, tzinfo=UTC)
    assert not intake._lean([identify("u1", "i1", "u1@example.com")])
    assert not intake._lean([Incoming(type="alias", message_id="a1", timestamp=at,
                                      user_id="u1", previous_id="anon")])  # fmt: skip
    both = Incoming(type="track", message_id="t2", timestamp=at, user_id="u1",
                    anonymous_id="anon-2", name="clicked")  # fmt: skip
    assert not intake._lean([both])
    assert intake._lean([Incoming(type="track", message_id="t3", timestamp=at, user_id="u1",
                                  anonymous_id="u1", name="clicked")])  # fmt: skip
    assert not intake._lean([Incoming(type="track", message_id="t4", timestamp=at,
                                      user_id="u1", name="inbox_opened")])  # fmt: skip
    results = intake._accept_group(db, [[track("u1", "t1")], [both]])
    assert [r.stored for r in results] == [1, 1]
    with db.session() as session:
        anonymous = session.get(Customer, "anon-2")
        assert anonymous is not None and anonymous.merged_into == "u1"
    assert stored(db) == [("t1", "u1"), ("t2", "u1")]


def test_a_merge_chain_the_lean_read_cannot_follow_goes_through_the_orm(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A customer row whose `merged_into` names no row: the lean path gives the calls to
    the ORM path (rolled back first), which answers as it always did."""
    with db.session() as session:
        session.add(Customer(id="dangling", traits={}, push_tokens=[], merged_into="gone"))
    through_orm: list[object] = []
    real_store = intake._store

    def spy(*args: Any) -> Accepted:
        through_orm.append(args[1])
        return real_store(*args)

    monkeypatch.setattr(intake, "_store", spy)
    with pytest.raises(IntegrityError):  # the ORM path's own failure, as before
        intake._accept_group(db, [[track("dangling", "t1")], [track("fine", "t2")]])
    assert through_orm  # it was tried through the ORM
    assert stored(db) == []  # and nothing of the lean try was kept
    # The other calls, alone, are stored.
    assert accept(db, [track("fine", "t2")]).stored == 1
