"""Local clock arithmetic in a customer's time zone, daylight-saving transitions included.

Pure functions of their inputs; activities call them with the customer's zone so the
workflow gets a UTC instant to sleep until and never reads a time zone database itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def zone(name: str | None, default: str = "UTC") -> tzinfo:
    """The named zone, or the default for a missing or unknown name."""
    for candidate in (name, default):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return UTC


def _localize(day: datetime, hour: int, minute: int, tz: tzinfo) -> datetime:
    """That wall-clock time on that day as an aware instant.

    A time skipped by a spring-forward change (02:30 on the night clocks jump from 02:00
    to 03:00) becomes the first instant after the gap; a time that happens twice in the
    autumn is its first occurrence.
    """
    naive = datetime(day.year, day.month, day.day, hour, minute)
    aware = naive.replace(tzinfo=tz, fold=0)
    round_trip = aware.astimezone(UTC).astimezone(tz)
    if (round_trip.hour, round_trip.minute) != (hour, minute):
        # Nonexistent local time. With fold=1 the instant falls before the jump; step
        # forward to the first minute whose wall clock has passed the requested time.
        instant = naive.replace(tzinfo=tz, fold=1).astimezone(UTC)
        wanted = (day.date(), hour, minute)
        while True:
            local = instant.astimezone(tz)
            if (local.date(), local.hour, local.minute) >= wanted:
                return instant
            instant += timedelta(minutes=1)
    return aware


def next_local_time(now: datetime, tz: tzinfo, hour: int, minute: int) -> datetime:
    """The next instant strictly after `now` when the local clock shows hour:minute (UTC)."""
    local_now = now.astimezone(tz)
    for days in range(0, 3):
        day = local_now + timedelta(days=days)
        candidate = _localize(day, hour, minute, tz)
        if candidate > now:
            return candidate.astimezone(UTC)
    raise AssertionError("a local time always recurs within two days")


def in_window(now: datetime, tz: tzinfo, start: tuple[int, int], end: tuple[int, int]) -> bool:
    """Whether local `now` lies in [start, end), a window that may wrap past midnight."""
    local = now.astimezone(tz)
    current = (local.hour, local.minute)
    if start < end:
        return start <= current < end
    return current >= start or current < end


def window_end(
    now: datetime, tz: tzinfo, start: tuple[int, int], end: tuple[int, int]
) -> datetime | None:
    """When the window containing `now` ends (UTC), or None when `now` is outside it."""
    if not in_window(now, tz, start, end):
        return None
    return next_local_time(now, tz, *end)
