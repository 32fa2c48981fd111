"""The provider pace on its own: the shared schedule of slots, and the rate settings.

The `db` fixture is SQLite, or PostgreSQL under JOURNEYMAN_TEST_POSTGRES: the schedule
must hold on both with many workers reserving at once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from journeyman.messaging.ratelimit import limit_for, parse_rate, rate_limits, reserve
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import RateLimit

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def take(db: Database, now: datetime = NOW, provider: str = "twilio", rate: float = 10) -> datetime:
    with db.session() as session:
        return reserve(session, provider, rate, now)


def test_slots_follow_each_other_one_interval_apart(db):
    assert [take(db) for _ in range(5)] == [NOW + timedelta(seconds=i / 10) for i in range(5)]
    assert [take(db, rate=0.5) for _ in range(2)] == [
        NOW + timedelta(seconds=0.5),
        NOW + timedelta(seconds=2.5),
    ]


def test_an_idle_schedule_gives_the_present_and_never_the_past(db):
    assert take(db) == NOW
    later = NOW + timedelta(minutes=5)
    assert take(db, now=later) == later  # the slots nobody took meanwhile are gone
    assert take(db, now=later) == later + timedelta(seconds=0.1)


def test_each_provider_has_its_own_schedule(db):
    assert take(db, provider="twilio") == NOW
    assert take(db, provider="sendgrid") == NOW
    assert take(db, provider="twilio") == NOW + timedelta(seconds=0.1)


def test_a_reservation_rolled_back_takes_no_slot(db):
    take(db)
    with pytest.raises(RuntimeError), db.session() as session:
        reserve(session, "twilio", 10, NOW)
        raise RuntimeError("the send's transaction failed")
    assert take(db) == NOW + timedelta(seconds=0.1)


@pytest.mark.parametrize("existing", [False, True], ids=["first-use", "existing-row"])
def test_concurrent_reservations_get_distinct_evenly_spaced_slots(db, existing):
    """Many workers at once, also while the provider's row is being created: every slot
    is taken once, and no two are closer than the interval."""
    if existing:
        take(db, now=NOW - timedelta(hours=1))
    threads, each = 16, 5
    start = threading.Barrier(threads)

    def worker(_: int) -> list[datetime]:
        start.wait()
        return [take(db, rate=20) for _ in range(each)]

    with ThreadPoolExecutor(threads) as pool:
        slots = sorted(slot for taken in pool.map(worker, range(threads)) for slot in taken)
    assert slots == [NOW + timedelta(seconds=i / 20) for i in range(threads * each)]
    with db.session() as session:
        row = session.get(RateLimit, "twilio")
        assert row is not None
        assert row.next_slot_at == NOW + timedelta(seconds=threads * each / 20)


# -- rates and settings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second", "shown"),
    [
        ("10", 10, "10/s"),
        ("10/s", 10, "10/s"),
        ("600/m", 10, "600/m"),
        ("36000/h", 10, "36000/h"),
        ("0.5/s", 0.5, "0.5/s"),
        (" 90 / m ", 1.5, "90/m"),
    ],
)
def test_a_rate_is_messages_per_second_minute_or_hour(text, per_second, shown):
    rate = parse_rate(text)
    assert rate.per_second == pytest.approx(per_second)
    assert str(rate) == shown


@pytest.mark.parametrize("text", ["", "fast", "0", "0/m", "-1/s", "10/d", "10/s/s", "1e3", "ten/s"])
def test_anything_else_is_refused_with_what_a_rate_looks_like(text):
    with pytest.raises(ValueError, match=r'"600/m"'):
        parse_rate(text)


def test_a_malformed_setting_is_named_in_the_error():
    settings = Settings(_env_file=None, twilio_rate_limit="10 per second")
    with pytest.raises(ValueError, match=r"^TWILIO_RATE_LIMIT=10 per second: a rate limit"):
        limit_for(settings, "twilio")
    with pytest.raises(ValueError, match="TWILIO_RATE_LIMIT"):
        rate_limits(settings)


def test_limits_are_keyed_by_provider_name_and_unset_means_none():
    settings = Settings(
        _env_file=None, sendgrid_rate_limit="600/m", twilio_rate_limit=" ", fcm_rate_limit=None
    )
    limits = rate_limits(settings)
    assert list(limits) == ["sendgrid"]
    assert limits["sendgrid"].per_second == 10
