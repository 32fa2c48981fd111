"""The dispatcher's pass (journeyman/events/dispatcher.py): customers concurrently, each in order.

A stand-in router records every hand-off and fails or holds the ones a test says, so
these tests see the order of hand-offs, how many are in flight at once, and what is
stored afterwards, on SQLite and (with JOURNEYMAN_TEST_POSTGRES) PostgreSQL. The real
router under concurrency is in tests/api/test_journeys.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from journeyman.api import create_app
from journeyman.contracts import CustomerEvent
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.intake import Incoming, accept, merge, resolve_id, resolve_ids
from journeyman.events.routing import RouteResult
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event
from tests.api.support import FakeClock
from tests.waiting import eventually


class Recorder:
    """A router that records hand-offs. `fail(message_id)` says whether this attempt
    fails; `hold(message_id)` returns an event to wait for before answering."""

    def __init__(
        self,
        fail: Callable[[str], bool] = lambda _m: False,
        hold: Callable[[str], asyncio.Event | None] = lambda _m: None,
    ) -> None:
        self.fail = fail
        self.hold = hold
        self.attempts: dict[str, list[str]] = defaultdict(list)  # customer -> message ids
        self.routed: Counter[str] = Counter()  # message id -> successful hand-offs
        self.in_flight = 0
        self.most_in_flight = 0
        self.reached = asyncio.Event()  # set when `in_flight` first reaches `watch`
        self.watch = 0

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        self.attempts[customer_id].append(event.message_id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        if self.in_flight == self.watch:
            self.reached.set()
        try:
            gate = self.hold(event.message_id)
            if gate is not None:
                await gate.wait()
            # Answer after a varying number of turns, so that customers overtake each other.
            for _ in range(sum(map(ord, event.message_id)) % 5):
                await asyncio.sleep(0)
            if self.fail(event.message_id):
                raise ConnectionError(f"cannot route {event.message_id}")
        finally:
            self.in_flight -= 1
        self.routed[event.message_id] += 1
        return RouteResult()


def dispatcher(db: Database, router: Recorder, **options: Any) -> Dispatcher:
    return Dispatcher(db, router, **options)  # type: ignore[arg-type]


def store(db: Database, *pairs: tuple[str, str]) -> None:
    """Store `track` events, one per (customer, message id), in this order."""
    now = datetime.now(UTC)
    accept(
        db,
        [
            Incoming(type="track", message_id=m, timestamp=now, user_id=c, name="clicked")
            for c, m in pairs
        ],
    )


def interleaved(customers: int, each: int) -> list[tuple[str, str]]:
    """Event k of every customer, then event k + 1 of every customer, and so on."""
    return [(f"c{c}", f"c{c}-e{k}") for k in range(each) for c in range(customers)]


def undispatched(db: Database) -> list[str]:
    with db.session() as session:
        return list(
            session.scalars(
                select(Event.message_id).where(Event.dispatched_at.is_(None)).order_by(Event.id)
            )
        )


def stored(db: Database, message_id: str) -> Event:
    with db.session() as session:
        event = session.scalar(select(Event).where(Event.message_id == message_id))
        assert event is not None
        return event


@contextlib.asynccontextmanager
async def background(work: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """`work` as a task, cancelled if the test leaves it running (a failed assertion)."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def in_order(attempts: list[str]) -> bool:
    """Each attempt is the event tried before (again, after a failure) or the next one."""
    numbers = [int(m.rsplit("-e", 1)[1]) for m in attempts]
    return all(b in (a, a + 1) for a, b in itertools.pairwise(numbers))


# -- order and independence -------------------------------------------------------------


async def test_each_customers_events_go_in_order_and_a_failure_holds_back_only_its_customer(
    db: Database,
) -> None:
    pairs = interleaved(customers=24, each=5)
    store(db, *pairs)
    # Every third customer's third event fails on its first try.
    failing = {f"c{c}-e2" for c in range(0, 24, 3)}
    tried: set[str] = set()

    def fail_once(message_id: str) -> bool:
        first = message_id not in tried
        tried.add(message_id)
        return first and message_id in failing

    router = Recorder(fail=fail_once)
    clock = FakeClock()
    # Small pages, so that one customer's events span pages and lanes outlive a page.
    one = dispatcher(db, router, concurrency=6, batch_size=7, clock=clock)

    first = await one.dispatch_pending()
    assert (first.dispatched, first.failed) == (120 - 8 * 3, 8)
    assert router.most_in_flight > 1  # customers went side by side
    for c in range(24):
        attempts = router.attempts[f"c{c}"]
        if c % 3 == 0:  # stopped at its failure; its later events were not tried
            assert attempts == [f"c{c}-e0", f"c{c}-e1", f"c{c}-e2"]
        else:
            assert attempts == [f"c{c}-e{k}" for k in range(5)]
    assert undispatched(db) == [m for _, m in pairs if m in failing or _after_failure(m)]
    failed = stored(db, "c0-e2")
    assert failed.attempts == 1
    assert failed.last_error == "ConnectionError: cannot route c0-e2"
    assert first.next_retry_at == failed.next_attempt_at

    # In backoff: nobody is tried again yet.
    before = sum(map(len, router.attempts.values()))
    backing_off = await one.dispatch_pending()
    assert (backing_off.dispatched, backing_off.failed) == (0, 0)
    assert backing_off.waiting > 0
    assert sum(map(len, router.attempts.values())) == before
    clock.advance(timedelta(minutes=1))
    second = await one.dispatch_pending()
    assert (second.dispatched, second.failed, second.waiting) == (8 * 3, 0, 0)
    assert undispatched(db) == []
    for c in range(24):
        assert in_order(router.attempts[f"c{c}"])
    assert set(router.routed) == {m for _, m in pairs}
    assert set(router.routed.values()) == {1}  # each event routed once


def _after_failure(message_id: str) -> bool:
    customer, number = message_id.rsplit("-e", 1)
    return int(customer[1:]) % 3 == 0 and int(number) > 2


async def test_a_customer_whose_hand_off_hangs_does_not_hold_up_the_others(db: Database) -> None:
    store(db, ("slow", "slow-e0"), ("slow", "slow-e1"), *interleaved(customers=10, each=3))
    gate = asyncio.Event()
    router = Recorder(hold=lambda m: gate if m == "slow-e0" else None)
    one = dispatcher(db, router, concurrency=4, batch_size=5)

    async with background(one.dispatch_pending()) as passing:
        # Every other customer's events get through while `slow` waits on its first one.
        await eventually(
            lambda: sum(router.routed.values()) == 30, what="every other customer's events routed"
        )
        assert router.attempts["slow"] == ["slow-e0"]
        gate.set()
        report = await asyncio.wait_for(passing, timeout=30)
    assert (report.dispatched, report.failed) == (32, 0)
    assert router.attempts["slow"] == ["slow-e0", "slow-e1"]
    assert undispatched(db) == []


# -- the bound --------------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_no_more_customers_are_routed_at_once_than_the_bound(
    db: Database, concurrency: int
) -> None:
    store(db, *interleaved(customers=10, each=2))
    gate = asyncio.Event()
    router = Recorder(hold=lambda _m: None if gate.is_set() else gate)
    router.watch = concurrency
    one = dispatcher(db, router, concurrency=concurrency)

    async with background(one.dispatch_pending()) as passing:
        # The first hand-offs hold until the gate opens: the pass fills the bound, and
        # (read in one page) waits for a free slot before opening another customer's
        # lane. Any lane opened beyond the bound, now or once the gate opens, shows in
        # `most_in_flight`, the most hand-offs ever in flight at once.
        await asyncio.wait_for(router.reached.wait(), timeout=30)
        assert router.in_flight == concurrency
        gate.set()
        report = await asyncio.wait_for(passing, timeout=30)
    assert report.dispatched == 20
    assert router.most_in_flight == concurrency


def test_the_bound_is_a_setting_of_the_api(db: Database) -> None:
    settings = Settings(database_url=db.url, dispatch_concurrency=5)
    app = create_app(settings, db, router=object(), run_dispatcher=False)  # type: ignore[arg-type]
    assert app.state.services.dispatcher.concurrency == 5
    with pytest.raises(ValueError, match="JOURNEYMAN_DISPATCH_CONCURRENCY"):
        Settings(database_url=db.url, JOURNEYMAN_DISPATCH_CONCURRENCY=0)
    with pytest.raises(ValueError, match="at least 1"):
        dispatcher(db, Recorder(), concurrency=0)


# -- passes, wake-ups and interruptions -----------------------------------------------------


async def test_an_event_routed_while_a_wake_up_comes_in_is_routed_once(db: Database) -> None:
    store(db, *interleaved(customers=5, each=2))
    gate = asyncio.Event()
    router = Recorder(hold=lambda m: gate if m == "c0-e0" else None)
    passes = 0

    def clock() -> datetime:  # read once as each pass begins, under the pass lock
        nonlocal passes
        passes += 1
        return datetime.now(UTC)

    one = dispatcher(db, router, poll_interval=60, clock=clock)
    async with background(one.run()):
        await eventually(lambda: router.attempts["c0"], what="the first pass under way")
        # Accepted during the pass: the API stores, then wakes the dispatcher.
        store(db, ("c0", "c0-e2"), ("c1", "c1-e2"), ("c9", "c9-e0"))
        one.wake()
        # A direct pass meanwhile waits for the running one instead of overlapping it:
        # its first step ends waiting for the lock, or else having begun a pass.
        asked = asyncio.Event()

        async def direct_pass() -> Any:
            asked.set()
            return await one.dispatch_pending()

        async with background(direct_pass()) as direct:
            await asked.wait()
            assert passes == 1 and not direct.done()
            gate.set()
            await asyncio.wait_for(direct, timeout=30)
        await asyncio.wait_for(one.idle(), timeout=30)
    assert undispatched(db) == []
    assert sorted(router.routed) == sorted(
        [m for _, m in interleaved(customers=5, each=2)] + ["c0-e2", "c1-e2", "c9-e0"]
    )
    assert set(router.routed.values()) == {1}
    assert router.attempts["c0"] == ["c0-e0", "c0-e1", "c0-e2"]


async def test_a_pass_cancelled_midway_keeps_what_it_routed_and_loses_nothing(
    db: Database,
) -> None:
    store(db, ("held", "held-e0"), ("held", "held-e1"), *interleaved(customers=6, each=2))
    never = asyncio.Event()
    router = Recorder(hold=lambda m: never if m == "held-e0" else None)
    one = dispatcher(db, router, concurrency=3)
    async with background(one.dispatch_pending()) as passing:
        await eventually(
            lambda: sum(router.routed.values()) == 12, what="the other customers' events routed"
        )
        passing.cancel()  # the API stopping
        with pytest.raises(asyncio.CancelledError):
            await passing
    # Marked before the pass ended: the next pass does not route them again.
    assert undispatched(db) == ["held-e0", "held-e1"]

    router.hold = lambda _m: None
    report = await one.dispatch_pending()
    assert report.dispatched == 2
    assert router.attempts["held"] == ["held-e0", "held-e0", "held-e1"]
    assert set(router.routed.values()) == {1}


class FailureNotRecorded(Dispatcher):
    """A database that breaks while a failed hand-off is being recorded."""

    def _failed(self, event_id: int, exc: Exception, retry_at: datetime) -> None:
        raise RuntimeError("database gone")


async def test_a_storage_error_ends_the_pass_after_marking_what_was_routed(
    db: Database,
) -> None:
    store(db, ("bad", "bad-e0"), ("bad", "bad-e1"), *interleaved(customers=4, each=2))
    router = Recorder(fail=lambda m: m == "bad-e0")
    one = FailureNotRecorded(db, router, concurrency=2)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="database gone"):
        await one.dispatch_pending()
    # The failure is not recorded, so `bad` is tried again at once by the next pass; the
    # others' events that went through are not.
    routed = set(router.routed)
    assert "bad-e1" not in router.attempts["bad"]
    assert set(undispatched(db)) == {"bad-e0", "bad-e1"} | (
        {m for _, m in interleaved(customers=4, each=2)} - routed
    )
    router.fail = lambda _m: False
    await Dispatcher(db, router).dispatch_pending()  # type: ignore[arg-type]
    assert undispatched(db) == []
    assert set(router.routed.values()) == {1}


# -- customers' ids -----------------------------------------------------------------------


async def test_an_event_kept_under_a_merged_id_goes_to_the_customer_it_was_merged_into(
    db: Database,
) -> None:
    store(db, ("known", "known-e0"))
    with db.session() as session:
        # Intake re-keys a merged id's events; one stored under it anyway still goes to
        # the known customer, in the known customer's order.
        session.add(Customer(id="anon", merged_into="known", traits={}, push_tokens=[]))
        session.add(
            Event(
                message_id="known-e1",
                type="track",
                customer_id="anon",
                name="clicked",
                properties={},
                timestamp=datetime.now(UTC),
            )
        )
    router = Recorder()
    assert (await dispatcher(db, router).dispatch_pending()).dispatched == 2
    assert router.attempts == {"known": ["known-e0", "known-e1"]}


def test_ids_resolve_in_one_go_as_one_by_one(db: Database) -> None:
    now = datetime.now(UTC)
    accept(
        db,
        [
            Incoming(type="identify", message_id="i1", timestamp=now, user_id="known"),
            Incoming(type="identify", message_id="i2", timestamp=now, user_id="other"),
            Incoming(type="identify", message_id="i3", timestamp=now, anonymous_id="anon"),
            Incoming(type="identify", message_id="i4", timestamp=now, anonymous_id="device"),
            Incoming(type="identify", message_id="i5", timestamp=now, user_id="lonely"),
        ],
    )
    with db.session() as session:
        merge(session, source_id="anon", target_id="known")
        merge(session, source_id="device", target_id="known")
        merge(session, source_id="device", target_id="other")  # a shared device moves on
        merge(session, source_id="ghost", target_id="known")  # never seen before
        # A merge into a customer since removed, and a chain longer than merges make.
        session.add(Customer(id="orphan", merged_into="gone", traits={}, push_tokens=[]))
        for n in range(12):
            session.add(Customer(id=f"h{n}", merged_into=f"h{n + 1}", traits={}, push_tokens=[]))
        session.add(Customer(id="h12", traits={}, push_tokens=[]))
    ids = ["known", "other", "anon", "device", "ghost", "lonely", "orphan", "unknown", "h0", "h5"]
    with db.session() as session:
        one_by_one = {i: resolve_id(session, i) for i in ids}
    with db.session() as session:
        assert resolve_ids(session, ids) == one_by_one
        assert resolve_ids(session, []) == {}
    assert one_by_one["anon"] == "known"
    assert one_by_one["device"] == "other"
