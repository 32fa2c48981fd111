"""Provider rate limits: a shared virtual schedule of send slots per provider.

Each provider with a limit (`SENDGRID_RATE_LIMIT`, `TWILIO_RATE_LIMIT`, `FCM_RATE_LIMIT`)
has one `rate_limits` row: the next free slot. A send takes the next slot, `max(now,
next_slot_at)`, and moves it on by one interval (1 / the rate); a send whose slot is
ahead waits for it on a durable timer in its workflow, then comes back and goes. The row
is locked for the rest of the transaction that reserves, so every worker shares one
schedule through the database and the pace holds across workers.

Times are on the Temporal server's clock, the workflow's, so they agree with the
workflow's timers, also on the time-skipping test server: a send reserves and is judged
by when its activity attempt started, which its provider call follows within moments.
A send that comes back within `GRACE` after its slot keeps it; later (the workers fell
behind or were down, the journey was paused, quiet hours began), it queues again for a
new one, so that late sends cannot come in a burst.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from journeyman.settings import Settings
from journeyman.storage.models import RateLimit

# How late after its slot a send may still go on it: room for the time a woken run and
# its activity take to start. Later than that, it takes a new slot, so that sends late
# together (workers down, a paused journey resumed) cannot go in a burst.
GRACE = timedelta(seconds=1)

# The settings that pace each provider, by the provider's name.
SETTINGS = {
    "sendgrid": "sendgrid_rate_limit",
    "twilio": "twilio_rate_limit",
    "fcm": "fcm_rate_limit",
}
SECONDS = {"s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"(?P<count>\d+(?:\.\d+)?|\.\d+)\s*(?:/\s*(?P<unit>[smh]))?")


@dataclass(frozen=True)
class Rate:
    """At most `per_second` messages a second, as written (`600/m`)."""

    per_second: float
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rate(text: str) -> Rate:
    """A rate from `10`, `10/s`, `600/m` or `36000/h` (decimals allowed: `0.5/s`).

    Raises:
        ValueError: not a rate, or not more than zero.
    """
    match = _RATE.fullmatch(text.strip())
    if match:
        unit = match["unit"] or "s"
        per_second = float(match["count"]) / SECONDS[unit]
        if math.isfinite(per_second) and per_second > 0:
            return Rate(per_second, f"{match['count']}/{unit}")
    raise ValueError(
        "a rate limit is messages per second, minute or hour, more than zero "
        f'("10", "10/s", "600/m", "36000/h", "0.5/s"), not {text!r}'
    )


def limit_for(settings: Settings, provider: str) -> Rate | None:
    """The provider's limit from its setting (`TWILIO_RATE_LIMIT`); None when unset.

    Raises:
        ValueError: the setting is not a rate; the message names it.
    """
    field = SETTINGS[provider]
    value = getattr(settings, field)
    if value is None or not value.strip():
        return None
    try:
        return parse_rate(value)
    except ValueError as exc:
        raise ValueError(f"{field.upper()}={value}: {exc}") from None


def rate_limits(settings: Settings) -> dict[str, Rate]:
    """Every provider's limit by provider name (`twilio`), for those that have one.

    Raises:
        ValueError: a limit is not a rate; the message names the setting.
    """
    limits = {provider: limit_for(settings, provider) for provider in SETTINGS}
    return {provider: limit for provider, limit in limits.items() if limit is not None}


def reserve(session: Session, provider: str, per_second: float, now: datetime) -> datetime:
    """Take the provider's next slot: `max(now, next_slot_at)`, and move the schedule on
    by 1 / `per_second`. The provider's row (created when missing, also when two
    transactions create it at once) stays locked until the caller's transaction ends, so
    concurrent reservations get distinct slots; the slot is taken when that commits."""
    row = _locked(session, provider, now)
    slot = max(now, row.next_slot_at)
    row.next_slot_at = slot + timedelta(seconds=1 / per_second)
    session.flush()
    return slot


def _locked(session: Session, provider: str, now: datetime) -> RateLimit:
    """The provider's row, locked for the rest of the transaction.

    A write comes before the read: it locks the row on PostgreSQL (as `FOR UPDATE`
    would) and takes the database's write lock on SQLite, which has no `FOR UPDATE`: a
    read before the transaction's first write could see a schedule that another worker
    is about to move.
    """
    if not _touch(session, provider):
        try:
            with session.begin_nested():
                session.add(RateLimit(provider=provider, next_slot_at=now))
        except IntegrityError:  # created meanwhile by another transaction: wait for it
            _touch(session, provider)
    row = session.scalar(
        select(RateLimit)
        .where(RateLimit.provider == provider)
        .execution_options(populate_existing=True)
    )
    assert row is not None
    return row


def _touch(session: Session, provider: str) -> bool:
    """Lock the provider's row by writing it unchanged; False when there is none."""
    touched = session.execute(
        update(RateLimit)
        .where(RateLimit.provider == provider)
        .values(next_slot_at=RateLimit.next_slot_at)
    )
    return bool(touched.rowcount)  # type: ignore[attr-defined]
