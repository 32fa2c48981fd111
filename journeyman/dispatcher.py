"""From stored events to journeys: the hand-off that makes acceptance durable.

Contract:
- The API stores events first (journeyman/intake.py) and answers; this dispatcher then
  routes each undispatched `track` event with `Router.route` and marks it dispatched.
- Order: per customer, events are routed in the order they were stored (`Event.id`).
  When one of a customer's events cannot be routed yet, that customer's later events
  wait behind it; other customers go on.
- Failure (Temporal down, a database error): the event records `attempts`,
  `last_error` and `next_attempt_at`, with exponential backoff, and is tried again.
  It is never dropped.
- Idempotence: routing an event twice has one effect (runs ignore message ids they
  have seen, and an entry is recorded with the message id that triggered it), so a
  crash between routing and marking the event dispatched is harmless.
- `run()` loops until cancelled: woken by `wake()` right after an accept, and polling
  every `poll_interval` seconds anyway. `dispatch_pending()` runs one pass directly,
  for one-off use and tests. One dispatcher per database is the intended
  setup; a second one is harmless but may route a customer's events out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from journeyman import metrics
from journeyman.intake import resolve_id
from journeyman.routing import Router
from journeyman.storage.db import Database
from journeyman.storage.models import Event, utcnow
from journeyman.types import CustomerEvent

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000
# Past this many customers waiting, stop excluding them in SQL and skip them in Python.
MAX_EXCLUDED = 500


@dataclass
class PassReport:
    """What one pass over the pending events did."""

    dispatched: int = 0
    failed: int = 0
    waiting: int = 0  # in backoff, or behind an earlier event of the same customer
    next_retry_at: datetime | None = None


@dataclass
class _Pending:
    id: int
    customer_id: str
    event: CustomerEvent
    attempts: int
    next_attempt_at: datetime | None


class Dispatcher:
    def __init__(
        self,
        db: Database,
        router: Router,
        *,
        poll_interval: float = 5.0,
        batch_size: int = 200,
        retry_initial: timedelta = timedelta(seconds=1),
        retry_max: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.router = router
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.clock = clock
        self._pass_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- driving ----------------------------------------------------------------------

    def wake(self) -> None:
        """Ask for a pass now. Safe to call from any thread (the API's request threads)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # not running: the next pass or poll picks the event up
        loop.call_soon_threadsafe(self._on_wake)

    def _on_wake(self) -> None:
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
        """Give every event due now one try, oldest first, keeping each customer's order."""
        async with self._pass_lock:
            report = PassReport()
            now = self.clock()
            blocked: set[str] = set()
            after_id = 0
            while rows := await asyncio.to_thread(self._pending, after_id, blocked):
                for row in rows:
                    after_id = row.id
                    if row.customer_id in blocked:
                        report.waiting += 1
                        continue
                    if row.next_attempt_at is not None and row.next_attempt_at > now:
                        blocked.add(row.customer_id)
                        report.waiting += 1
                        report.next_retry_at = _earliest(report.next_retry_at, row.next_attempt_at)
                        continue
                    retry_at = await self._dispatch(row, now)
                    if retry_at is None:
                        report.dispatched += 1
                    else:
                        blocked.add(row.customer_id)
                        report.failed += 1
                        report.next_retry_at = _earliest(report.next_retry_at, retry_at)
            return report

    async def _dispatch(self, row: _Pending, now: datetime) -> datetime | None:
        """Route one event; None when done, else when to try it again."""
        try:
            await self.router.route(row.customer_id, row.event)
        except Exception as exc:
            metrics.dispatch_failures.inc()
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
        metrics.events_dispatched.inc()
        await asyncio.to_thread(self._done, row.id)
        return None

    def _backoff(self, attempts: int) -> timedelta:
        delay = self.retry_initial * (2 ** min(attempts - 1, 30))
        return min(delay, self.retry_max)

    # -- storage (run in a thread: the database calls block) --------------------------

    def _pending(self, after_id: int, blocked: set[str]) -> list[_Pending]:
        with self.db.session() as session:
            query = (
                select(Event)
                .where(Event.dispatched_at.is_(None), Event.id > after_id)
                .order_by(Event.id)
                .limit(self.batch_size)
            )
            if blocked and len(blocked) <= MAX_EXCLUDED:
                query = query.where(Event.customer_id.not_in(blocked))
            pending = []
            for event in session.scalars(query):
                customer_id = resolve_id(session, event.customer_id)
                pending.append(
                    _Pending(
                        id=event.id,
                        customer_id=customer_id,
                        event=CustomerEvent(
                            message_id=event.message_id,
                            name=event.name or event.type,
                            properties=dict(event.properties or {}),
                            timestamp=event.timestamp,
                        ),
                        attempts=event.attempts,
                        next_attempt_at=event.next_attempt_at,
                    )
                )
            return pending

    def _done(self, event_id: int) -> None:
        with self.db.session() as session:
            event = session.get(Event, event_id)
            if event is not None:
                event.dispatched_at = utcnow()
                event.next_attempt_at = None

    def _failed(self, event_id: int, exc: Exception, retry_at: datetime) -> None:
        with self.db.session() as session:
            event = session.get(Event, event_id)
            if event is not None:
                event.attempts += 1
                event.last_error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                event.next_attempt_at = retry_at


def _earliest(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate < current else current
