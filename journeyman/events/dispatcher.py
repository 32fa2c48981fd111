"""From stored events to journeys: the hand-off that makes acceptance durable.

Contract:
- The API stores events first (journeyman/events/intake.py) and answers; this dispatcher then
  routes each undispatched `track` event with `Router.route` and marks it dispatched.
- Order: per customer, events are routed in the order they were stored (`Event.id`),
  one at a time. When one of a customer's events cannot be routed yet, that customer's
  later events wait behind it; other customers go on.
- Concurrency: different customers' events are routed at the same time, at most
  `concurrency` customers at once (`JOURNEYMAN_DISPATCH_CONCURRENCY`), so a pass is not
  one round trip to Temporal after another. Routed events are marked dispatched in
  batches: one statement for whatever was routed while the previous one ran.
- Failure (Temporal down, a database error): the event records `attempts`,
  `last_error` and `next_attempt_at`, with exponential backoff, and is tried again.
  It is never dropped. After `MAX_ATTEMPTS` failed tries it is parked (`parked_at`):
  kept with its error, no longer tried, and the customer's later events go on without
  it; `journeyman events retry` hands it over again (`retry_parked`).
- Idempotence: routing an event twice has one effect (runs ignore message ids they
  have seen, and an entry is recorded with the message id that triggered it), so a
  crash between routing and marking the event dispatched is harmless.
- `run()` loops until cancelled: woken by `wake()` right after an accept, and polling
  every `poll_interval` seconds anyway. `dispatch_pending()` runs one pass directly,
  for one-off use and tests; passes of one dispatcher never overlap, and a pass returns
  once every event it routed is marked, so the next pass does not route them again.
- Several dispatchers (one per API replica) share the work: a dispatcher routes a
  customer's events only while it holds that customer's lease (journeyman/events/claims.py),
  taken for a page's customers at once when the page is read (one transaction), or
  when a lane opens for a customer the page read did not lease, and given up once its
  pass has marked what it routed; a
  customer leased by another dispatcher waits for that one (or for the lease to lapse).
  So each customer's events reach their runs in order, once, whatever the replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, update

from journeyman.contracts import CustomerEvent
from journeyman.events import ahead, claims, pending
from journeyman.events.intake import resolve_ids
from journeyman.events.routing import Router, RouteResult
from journeyman.platform import metrics
from journeyman.storage.db import Database
from journeyman.storage.models import Event, utcnow

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
# Past this many customers waiting, stop excluding them in SQL and skip them in Python.
MAX_EXCLUDED = 500
# Customers routed at once: enough to keep Temporal's round trips overlapping, few enough
# to stay well inside the database pool (10 + 40 connections) beside the API's requests.
DEFAULT_CONCURRENCY = 16
# Event ids marked dispatched by one statement, at most: well under the bound parameters
# SQLite and PostgreSQL take, however far marking falls behind routing.
MARK_AT_MOST = 500
# Routed events a pass marks before its end, in lots of at least this many: a short pass
# marks once, with the release of its leases.
MARK_EARLY = 64
# Failed hand-overs after which an event is parked.
MAX_ATTEMPTS = 10


# What `Dispatcher._dispatch` answers for an event it has just parked.
PARKED = datetime.max.replace(tzinfo=UTC)


@dataclass
class PassReport:
    """What one pass over the pending events did."""

    dispatched: int = 0
    failed: int = 0
    parked: int = 0  # failed for the MAX_ATTEMPTS-th time in this pass
    waiting: int = 0  # in backoff, or behind an earlier event of the same customer
    next_retry_at: datetime | None = None


@dataclass
class _Ahead:
    """A customer's running runs as the pass looked them up with their lease
    (journeyman/events/ahead.py); None once an event of theirs may have started one."""

    runs: list[ahead.RunningRun] | None


@dataclass
class _Pending:
    id: int
    customer_id: str
    stored_as: str  # the customer id the event is stored under (maybe a merged one)
    event: CustomerEvent
    attempts: int
    next_attempt_at: datetime | None
    ahead: _Ahead | None = None
    # Another dispatcher held the customer's lease when the page was read: the event
    # (read without its properties) waits, and its lease is not asked for.
    leased_elsewhere: bool = False


class Dispatcher:
    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        poll_interval: float = 5.0,
        batch_size: int = 200,
        retry_initial: timedelta = timedelta(seconds=1),
        retry_max: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"dispatch concurrency must be at least 1, not {concurrency}")
        self.db = db
        self.router = router
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.clock = clock
        # Who holds this dispatcher's leases (journeyman/events/claims.py): unique per instance.
        self.owner = uuid.uuid4().hex
        self._pass_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # A wake-up is on its way to the loop (one trip to it is enough for many accepts).
        self._wake_queued = False

    # -- driving ----------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a pass now. Safe to call from any thread (the API's request threads)
        and from the loop the dispatcher runs on (its requests, `accept_soon`)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running: the next pass or poll picks the event up
        if _running_loop() is loop:
            self._on_wake()  # from the loop itself: at once, before the caller answers
            return
        if self._wake_queued:
            return  # a wake-up queued and not yet run: the pass it starts reads this too
        self._wake_queued = True
        loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
        self._wake_queued = False
        self._idle.clear()
        self._wakeup.set()

    async def run(self) -> None:
        """Dispatch until cancelled."""
        self._loop = asyncio.get_running_loop()
        try:
            while True:
                self._wakeup.clear()
                try:
                    report = await self.dispatch_pending()
                except Exception:
                    log.exception("dispatch pass failed; trying again after the poll interval")
                    report = PassReport()
                if self._wakeup.is_set():
                    continue  # events came in during the pass
                self._idle.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._sleep_for(report))
        finally:
            self._loop = None

    async def idle(self) -> None:
        """Return once the running loop has handled every wake-up so far."""
        await self._idle.wait()

    def _sleep_for(self, report: PassReport) -> float:
        if report.next_retry_at is None:
            return self.poll_interval
        due_in = (report.next_retry_at - self.clock()).total_seconds()
        return max(0.05, min(self.poll_interval, due_in))

    # -- one pass ---------------------------------------------------------------------

    async def dispatch_pending(self) -> PassReport:
        """Give every event due now one try, oldest first, keeping each customer's order;
        up to `concurrency` customers at once. Returns when every event the pass took is
        routed (or failed) and recorded. A storage error ends the pass: the events in
        flight finish, what was routed is marked, and the error is raised."""
        async with self._pass_lock:
            return await _Pass(self).run()

    async def _dispatch(self, row: _Pending, now: datetime) -> datetime | None:
        """Route one event; None when done (the caller marks it), else when to try it
        again (recorded here), or `PARKED` when that was its last try."""
        looked_up = row.ahead
        token = ahead.AHEAD.set(None if looked_up is None else looked_up.runs)
        try:
            result = await self.router.route(row.customer_id, row.event)
        except Exception as exc:
            if looked_up is not None:
                looked_up.runs = None  # it may have started a run before it failed
            metrics.dispatch_failures.inc()
            if row.attempts + 1 >= MAX_ATTEMPTS:
                log.error(
                    "event %s for %s not routed after %d attempts: parked (%s); "
                    "`journeyman events retry %s` tries it again",
                    row.event.message_id,
                    row.customer_id,
                    row.attempts + 1,
                    exc,
                    row.id,
                )
                await asyncio.to_thread(self._failed, row.id, exc, None)
                return PARKED
            retry_at = now + self._backoff(row.attempts + 1)
            log.warning(
                "event %s for %s not routed (attempt %d, next at %s): %s",
                row.event.message_id,
                row.customer_id,
                row.attempts + 1,
                retry_at.isoformat(),
                exc,
            )
            await asyncio.to_thread(self._failed, row.id, exc, retry_at)
            return retry_at
        finally:
            ahead.AHEAD.reset(token)
        if looked_up is not None and (not isinstance(result, RouteResult) or result.entered):
            looked_up.runs = None  # the customer's later events see the runs it started
        metrics.events_dispatched.inc()
        return None

    def _backoff(self, attempts: int) -> timedelta:
        delay = self.retry_initial * (2 ** min(attempts - 1, 30))
        return min(delay, self.retry_max)

    # -- storage (run in a thread: the database calls block) --------------------------

    def _pending(self, after_id: int, blocked: frozenset[str], now: datetime) -> list[_Pending]:
        """The next page of events to route (Core: no ORM object per event); those of
        customers another dispatcher leases at `now` are marked, without their properties
        (journeyman/events/pending.py)."""
        parameters = {
            "after_id": after_id,
            "limit": self.batch_size,
            "blocked": sorted(blocked),
            "owner": self.owner,
            "now": now,
        }
        statement = (
            pending.PENDING_EXCEPT if blocked and len(blocked) <= MAX_EXCLUDED else pending.PENDING
        )
        with self.db.engine.connect() as connection:
            rows = connection.execute(statement, parameters).all()
        # Intake stores events under the customer they resolve to, so a customer merged
        # since is rare: only those take the walk of `resolve_ids`.
        customers = {row.customer_id: row.customer_id for row in rows}
        merged = {row.customer_id for row in rows if row.merged_into is not None}
        if merged:
            with self.db.session() as session:
                customers.update(resolve_ids(session, merged))
        return [
            _Pending(
                id=row.id,
                customer_id=customers[row.customer_id],
                stored_as=row.customer_id,
                event=CustomerEvent(
                    message_id=row.message_id,
                    name=row.name or row.type,
                    properties=dict(row.properties or {}),
                    timestamp=row.timestamp,
                ),
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                leased_elsewhere=bool(row.leased_elsewhere),
            )
            for row in rows
        ]

    def _claim(
        self, customer: str, rows: list[_Pending], routed: frozenset[int], now: datetime
    ) -> list[_Pending] | None:
        """The customer's lease; then which of `rows` to route (claims.acquire). None:
        another dispatcher has the customer."""
        ids = claims.acquire(
            self.db,
            customer,
            self.owner,
            [r.id for r in rows],
            [r.stored_as for r in rows],
            now,
            routed,
        )
        if ids is None:
            return None
        keep = set(ids)
        return [r for r in rows if r.id in keep]

    def _lease(
        self, lot: dict[str, tuple[list[int], list[str]]], now: datetime, routed: frozenset[int]
    ) -> tuple[dict[str, list[int] | None], dict[str, list[ahead.RunningRun]]]:
        """claims.acquire_many; then the running runs of the customers leased, for
        their events' routing (journeyman/events/ahead.py), in the same trip (and, on
        PostgreSQL, the same transaction)."""
        if self.db.url.startswith("sqlite"):
            # After the commit: the lease transaction holds SQLite's one writer lock,
            # which intake waits for.
            granted = claims.acquire_many(self.db, self.owner, lot, now, routed)
            leased = [customer for customer, ids in granted.items() if ids]
            return granted, ahead.running_of(self.db, leased)
        runs: dict[str, list[ahead.RunningRun]] = {}

        def running(connection: Connection, taken: list[str]) -> None:
            runs.update(ahead.running_in(connection, taken))

        granted = claims.acquire_many(self.db, self.owner, lot, now, routed, then=running)
        # The customers leased with events to route now (as before: not those leased
        # with nothing to route).
        return granted, {c: runs.get(c, []) for c, ids in granted.items() if ids}

    def _done(self, event_ids: list[int], release: bool = False) -> None:
        """Mark `event_ids` dispatched; `release`: and give up this dispatcher's leases."""
        with self.db.engine.begin() as connection:
            if event_ids:
                done = pending.DONE[connection.dialect.name == "postgresql"]
                connection.execute(done, {"ids": event_ids, "now": utcnow()})
            if release:
                claims.release_in(connection, self.owner)

    def _failed(self, event_id: int, exc: Exception, retry_at: datetime | None) -> None:
        """Record a failed try; `retry_at` None parks the event."""
        with self.db.session() as session:
            session.execute(
                update(Event)
                .where(Event.id == event_id)
                .values(
                    attempts=Event.attempts + 1,
                    last_error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
                    next_attempt_at=retry_at,
                    parked_at=utcnow() if retry_at is None else None,
                )
                .execution_options(synchronize_session=False)
            )


class _Pass:
    """One pass of a dispatcher.

    A reader pages through the pending events in id order and hands each customer's to
    that customer's lane: a task routing them one after another, in order, and ending
    when it has none left (a later page may open a new one). At most `concurrency` lanes
    run at once; the reader waits for a free one before opening another, and reads
    ahead at most about one page of events that no lane has taken yet. A lane whose
    event fails stops: its customer is blocked for the rest of the pass, and so waits
    behind that event. Lanes hand routed event ids to one marking task, which marks
    whatever has gathered in one statement, then the next lot.
    """

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.now = dispatcher.clock()
        self.started = time.monotonic()
        self.report = PassReport()
        self.blocked: set[str] = set()  # customers who may not go on in this pass
        self.lanes: dict[str, deque[_Pending]] = {}  # by customer: events taken, in order
        self.tasks: set[asyncio.Task[None]] = set()
        self.slots = asyncio.Semaphore(dispatcher.concurrency)
        self.queued = 0  # events in lanes, not yet being routed
        self.room = asyncio.Event()
        self.routed: list[int] = []  # event ids routed, not yet marked
        self.marking: asyncio.Task[None] | None = None
        self.released = False  # the leases given up with the last mark
        self.error: Exception | None = None
        self.leased: dict[str, datetime] = {}  # customers whose lease this pass holds: until
        self.routed_ids: set[int] = set()  # every event this pass routed
        # The page's leases (`_lease_page`), by customer: the event ids to route; None
        # when another dispatcher has the customer. Customers with a lane are not asked.
        self.grants: dict[str, frozenset[int] | None] = {}
        # The running runs of the page's leased customers, looked up with the leases.
        self.ahead: dict[str, _Ahead] = {}

    async def run(self) -> PassReport:
        try:
            try:
                try:
                    await self._read()
                finally:
                    await self._join_lanes()
            finally:
                await self._mark_the_rest()  # and gives the leases up with the last mark
        finally:
            # Only once what was routed is marked: the next holder must not route it again.
            if self.leased and not self.released:
                await asyncio.to_thread(claims.release, self.dispatcher.db, self.dispatcher.owner)
        if self.error is not None:
            raise self.error
        return self.report

    # -- the reader -------------------------------------------------------------------

    async def _read(self) -> None:
        after_id = 0
        while self.error is None:
            # A copy: lanes add to `blocked` while the page is read in a thread.
            blocked = frozenset(self.blocked)
            rows = await asyncio.to_thread(
                self.dispatcher._pending, after_id, blocked, self._wall()
            )
            after_id = rows[-1].id if rows else after_id
            await self._lease_page(rows)
            for row in rows:
                if self.error is not None:
                    return  # the events in flight finish; the rest wait for the next pass
                await self._take(row)
            if len(rows) < self.dispatcher.batch_size:
                # That was all there was. Events stored since woke the dispatcher, which
                # makes another pass for them (a read for nothing costs every wake-up).
                return
            while self.queued > self.dispatcher.batch_size:
                self.room.clear()
                await self.room.wait()

    async def _lease_page(self, rows: list[_Pending]) -> None:
        """Take, in one transaction (claims.acquire_many), the leases of the page's
        customers who have no lane, up to each one's first event waiting for its retry
        (`_take` stops there). A customer whose lane ends meanwhile is not in the answer:
        the lane opened for them later takes the lease alone (`_leased`)."""
        self.grants = {}
        self.ahead = {}
        lot: dict[str, tuple[list[int], list[str]]] = {}
        waits: set[str] = set()
        for row in rows:
            customer = row.customer_id
            if customer in self.blocked or customer in self.lanes or customer in waits:
                continue
            if row.leased_elsewhere or (
                row.next_attempt_at is not None and row.next_attempt_at > self.now
            ):
                waits.add(customer)
                continue
            event_ids, stored_as = lot.setdefault(customer, ([], []))
            event_ids.append(row.id)
            stored_as.append(row.stored_as)
        if not lot:
            return
        dispatcher = self.dispatcher
        now = self._wall()
        routed = frozenset(self.routed_ids)
        granted, runs = await asyncio.to_thread(dispatcher._lease, lot, now, routed)
        self.ahead = {customer: _Ahead(found) for customer, found in runs.items()}
        for customer, ids in granted.items():
            self.grants[customer] = None if ids is None else frozenset(ids)
            if ids is not None:
                self.leased[customer] = now + claims.LEASE

    async def _take(self, row: _Pending) -> None:
        customer = row.customer_id
        report = self.report
        if customer in self.blocked:
            report.waiting += 1
            return
        if row.leased_elsewhere:
            # Another dispatcher routes this customer (read without its properties, the
            # event is never routed from this row): it and their later events wait.
            self.blocked.add(customer)
            report.waiting += 1
            return
        if row.next_attempt_at is not None and row.next_attempt_at > self.now:
            self.blocked.add(customer)
            report.waiting += 1
            report.next_retry_at = _earliest(report.next_retry_at, row.next_attempt_at)
            return
        asked = customer in self.grants
        if asked and row.id not in (self.grants[customer] or ()):
            # Another dispatcher has the customer, or this event is not theirs to route
            # yet: it and the customer's later events wait.
            self.blocked.add(customer)
            report.waiting += 1
            return
        lane = self.lanes.get(customer)
        if lane is None:
            # Only the reader opens lanes, so this customer still has none when a slot
            # frees up; and blocking needs a lane of theirs, so they are not blocked.
            await self.slots.acquire()
            lane = self.lanes[customer] = deque()
            task = asyncio.create_task(self._lane(customer, lane, opening=not asked))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if asked:
            row.ahead = self.ahead.get(customer)
        lane.append(row)
        self.queued += 1

    async def _join_lanes(self) -> None:
        # When the pass is cancelled (the API stopping), so are its lanes: an event cut
        # off mid-route is routed again by the next pass, with one effect.
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            for task in self.tasks:
                task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the lanes --------------------------------------------------------------------

    async def _lane(self, customer: str, lane: deque[_Pending], opening: bool) -> None:
        """Route the customer's events in order; `opening`: the lease is not taken yet."""
        report = self.report
        try:
            while lane:
                if not await self._leased(customer, lane, opening):
                    break
                opening = False
                row = lane.popleft()
                self._taken(1)
                retry_at = await self.dispatcher._dispatch(row, self.now)
                if retry_at is None:
                    report.dispatched += 1
                    self._routed(row.id)
                    continue
                if retry_at is PARKED:
                    # Kept for `journeyman events retry`; the customer goes on.
                    report.parked += 1
                    continue
                report.failed += 1
                report.next_retry_at = _earliest(report.next_retry_at, retry_at)
                self._stop(customer, lane)
        except Exception as exc:  # the failure could not be recorded: the pass ends
            self.error = self.error or exc
            self._stop(customer, lane)
        finally:
            # No await since `lane` was last seen empty: the reader cannot have added
            # an event that nobody will route.
            del self.lanes[customer]
            self.slots.release()

    async def _leased(self, customer: str, lane: deque[_Pending], opening: bool) -> bool:
        """Whether this pass may route the customer's next event: it holds their lease.
        `opening` (a lane's first event): take the lease, or take it again (a later
        page's lane), keeping in `lane` only what is still to route (claims.acquire);
        without it, the customer waits for the lease's holder. Later: renew it when
        little is left of it."""
        dispatcher = self.dispatcher
        if opening:
            rows = list(lane)
            routed = frozenset(self.routed_ids)
            now = self._wall()
            kept = await asyncio.to_thread(dispatcher._claim, customer, rows, routed, now)
            if kept is not None:
                self.leased[customer] = now + claims.LEASE
            dropped = len(rows) - len(kept or [])
            if dropped:
                lane.clear()
                lane.extend(kept or [])
                self.report.waiting += dropped
                self._taken(dropped)
            if kept is None:
                self.blocked.add(customer)
            return bool(kept)
        now = self._wall()
        if self.leased[customer] - now < claims.RENEW_WITHIN:
            renewed = await asyncio.to_thread(
                claims.renew, dispatcher.db, customer, dispatcher.owner, now
            )
            if not renewed:
                self._stop(customer, lane)
                return False
            self.leased[customer] = now + claims.LEASE
        return True

    def _wall(self) -> datetime:
        """Now, on the clock the pass began with (read once a pass) moved on by the
        time the pass has taken."""
        return self.now + timedelta(seconds=time.monotonic() - self.started)

    def _stop(self, customer: str, lane: deque[_Pending]) -> None:
        """The customer's later events wait behind the one that failed."""
        self.blocked.add(customer)
        self.report.waiting += len(lane)
        self._taken(len(lane))
        lane.clear()

    def _taken(self, count: int) -> None:
        self.queued -= count
        if self.queued <= self.dispatcher.batch_size:
            self.room.set()

    # -- marking ----------------------------------------------------------------------

    def _routed(self, event_id: int) -> None:
        self.routed.append(event_id)
        self.routed_ids.add(event_id)
        if len(self.routed) >= MARK_EARLY and (self.marking is None or self.marking.done()):
            self.marking = asyncio.create_task(self._mark())

    async def _mark(self) -> None:
        while len(self.routed) >= MARK_EARLY and self.error is None:
            await self._mark_lot()

    async def _mark_lot(self) -> None:
        event_ids = self.routed[:MARK_AT_MOST]
        del self.routed[:MARK_AT_MOST]
        try:
            await asyncio.to_thread(self.dispatcher._done, event_ids)
        except Exception as exc:  # they stay undispatched: the next pass routes them again
            self.error = self.error or exc

    async def _mark_the_rest(self) -> None:
        """The last mark of the pass, with the release of its leases: one transaction."""
        if self.marking is not None:
            await self.marking
        while len(self.routed) > MARK_AT_MOST:
            await self._mark_lot()
        try:
            release = bool(self.leased)
            await asyncio.to_thread(self.dispatcher._done, self.routed[:], release)
            self.routed.clear()
            self.released = release
        except Exception as exc:  # they stay undispatched: the next pass routes them again
            self.error = self.error or exc


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:  # a thread without a loop
        return None


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current
