"""Frequency caps: at most N messages per customer in a sliding period, across journeys.

Messages count from the moment their send was decided (`deliveries.decided_at`, on
the workflow's clock) while they are pending, in flight, sent or of unknown outcome;
skipped and failed sends do not count. The check and the claim of a slot happen in
one transaction that first updates the customer's `send_locks` row, so two workers
deciding sends for one customer at once are serialized: the cap holds exactly.

A send with no room waits (the workflow sleeps on a durable timer) until the oldest
counted message leaves the period, and registers in `cap_waits`. When room opens,
waiting sends of higher priority (then the longest waiting) go first: a send yields
while as many higher-ranked sends are due as there are free slots. A send that found no
room for a whole day from its first attempt is skipped, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeyman.dsl.durations import parse_duration
from journeyman.storage.models import CapWait, Delivery, SendLock

COUNTED = ("pending", "sending", "sent", "unknown")
MAX_WAIT = timedelta(days=1)
# A registered waiter whose due time passed this long ago has gone (its run ended).
STALE = timedelta(minutes=10)
# How long a send that yielded to higher-priority waiters waits before looking again.
YIELD = timedelta(minutes=1)


@dataclass(frozen=True)
class Cap:
    count: int
    per: timedelta

    def __str__(self) -> str:
        from journeyman.dsl.durations import format_duration

        return f"{self.count} per {format_duration(self.per)}"


def parse_cap(spec: dict[str, Any] | str | None) -> Cap | None:
    """A cap from a plan's `{"count": 3, "per": "1d"}` or a setting's "3 per 1d"."""
    if spec is None or spec == "":
        return None
    if isinstance(spec, str):
        count, sep, per = spec.strip().partition(" per ")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise ValueError(f'a frequency cap looks like "3 per 1d", got {spec!r}')
        return Cap(int(count), parse_duration(per.strip()))
    return Cap(int(spec["count"]), parse_duration(spec["per"]))


# Which cap holds a send: `frequency cap` across journeys, `journey cap` within one.
CapKind = Literal["frequency cap", "journey cap"]


@dataclass(frozen=True)
class CapDecision:
    allowed: bool
    until: datetime | None = None  # with not allowed: look again then
    give_up: bool = False  # waited a day already: skip the send
    reason: str | None = None


def lock_customer(session: Session, customer_id: str) -> None:
    """Take the customer's send lock for the rest of this transaction."""
    bumped = session.execute(
        update(SendLock).where(SendLock.customer_id == customer_id).values(seq=SendLock.seq + 1)
    )
    if bumped.rowcount:  # type: ignore[attr-defined]
        return
    try:
        with session.begin_nested():
            session.add(SendLock(customer_id=customer_id, seq=1))
    except IntegrityError:  # another transaction created it meanwhile: wait for its lock
        session.execute(
            update(SendLock).where(SendLock.customer_id == customer_id).values(seq=SendLock.seq + 1)
        )


def check(
    session: Session,
    cap: Cap,
    customer_id: str,
    key: str,
    priority: int,
    now: datetime,
    first_attempt_at: datetime | None,
) -> CapDecision:
    """Whether the send `key` may take a slot now. Call under `lock_customer`; on
    `allowed` the caller claims its delivery row in the same transaction, then calls
    `release`."""
    since = first_attempt_at or now
    window_start = now - cap.per
    counted: list[datetime] = [
        at
        for at in session.scalars(
            select(Delivery.decided_at)
            .where(
                Delivery.customer_id == customer_id,
                Delivery.status.in_(COUNTED),
                Delivery.decided_at > window_start,
            )
            .order_by(Delivery.decided_at)
        )
        if at is not None
    ]
    free = cap.count - len(counted)
    if free > 0:
        ahead = session.scalar(
            select(func.count())
            .select_from(CapWait)
            .where(
                CapWait.customer_id == customer_id,
                CapWait.idempotency_key != key,
                CapWait.due_at <= now,
                CapWait.due_at > now - STALE,
                or_(
                    CapWait.priority > priority,
                    (CapWait.priority == priority) & (CapWait.since < since),
                ),
            )
        )
        if (ahead or 0) < free:
            return CapDecision(allowed=True)
        until = now + YIELD
        reason = f"frequency cap {cap}: waiting behind sends of higher priority"
    else:
        # Room opens when enough counted messages have left the period.
        oldest = counted[-free] if free < 0 else counted[0]
        until = oldest + cap.per
        reason = f"frequency cap {cap} reached (service-wide, messages from every journey)"
    if until - since > MAX_WAIT:
        release(session, key)
        return CapDecision(
            allowed=False, give_up=True, reason=f"{reason}; no room within a day, not sent"
        )
    _register(session, key, customer_id, priority, since, until)
    return CapDecision(allowed=False, until=until, reason=reason)


def check_journey(
    session: Session,
    cap: Cap,
    customer_id: str,
    journey_id: str,
    now: datetime,
    first_attempt_at: datetime | None,
) -> CapDecision:
    """`settings.journey_cap`: whether this journey may send the customer another
    message now. Call under `lock_customer`, like `check`: the caller claims its
    delivery row in the same transaction. Full: wait until the oldest counted message
    of this journey leaves the period, for at most a day from the first attempt."""
    since = first_attempt_at or now
    counted = [
        at
        for at in session.scalars(
            select(Delivery.decided_at)
            .where(
                Delivery.customer_id == customer_id,
                Delivery.journey_id == journey_id,
                Delivery.status.in_(COUNTED),
                Delivery.decided_at > now - cap.per,
            )
            .order_by(Delivery.decided_at)
        )
        if at is not None
    ]
    free = cap.count - len(counted)
    if free > 0:
        return CapDecision(allowed=True)
    until = counted[-free] + cap.per
    reason = f"journey cap {cap} reached (messages from this journey)"
    if until - since > MAX_WAIT:
        return CapDecision(
            allowed=False, give_up=True, reason=f"{reason}; no room within a day, not sent"
        )
    return CapDecision(allowed=False, until=until, reason=reason)


def _register(
    session: Session, key: str, customer_id: str, priority: int, since: datetime, due: datetime
) -> None:
    waiting = session.get(CapWait, key) or CapWait(
        idempotency_key=key, customer_id=customer_id, priority=priority, since=since
    )
    waiting.due_at = due  # a waiter registered before waits until the new due time
    session.add(waiting)
    # Waiters of runs that ended meanwhile are of no use to anyone.
    session.execute(
        delete(CapWait).where(
            CapWait.customer_id == customer_id, CapWait.due_at < due - MAX_WAIT - STALE
        )
    )
    session.flush()


def release(session: Session, key: str) -> None:
    """The send took its slot or gave up: it no longer waits."""
    session.execute(delete(CapWait).where(CapWait.idempotency_key == key))
