"""Durations (`30s`, `15m`, `1h`, `2d`, `1w`, ISO 8601 `PT1H`), percentages and clock times."""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# Months and years, as ISO 8601 (`P1M`, `P1Y2M`) or in words (`2mo`, `1 year`): refused
# with a reason, since they have no fixed length.
_CALENDAR = re.compile(
    r"^(?:P(?:\d+Y(?:\d+M)?|\d+M)(?:\d+[WD])*(?:T.*)?"
    r"|\d+(?:\.\d+)?\s*(?:mo|mon|months?|y|yrs?|years?))$",
    re.IGNORECASE,
)


def parse_duration(text: object) -> timedelta:
    """`1h` or `PT1H` to a timedelta; ValueError with a marketer-readable reason otherwise."""
    if isinstance(text, bool) or not isinstance(text, str | int | float):
        raise ValueError(f"expected a duration such as 30s, 15m, 1h, 2d, 1w or PT1H, got {text!r}")
    if isinstance(text, int | float):
        raise ValueError(
            f"a duration needs a unit: write '{text}s', '{text}m', '{text}h' or '{text}d'"
        )
    match = _SHORT.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        iso = _ISO.match(text.strip().upper())
        if not iso and _CALENDAR.match(text.strip()):
            raise ValueError(
                f"{text!r}: months and years have no fixed length, so a journey cannot wait"
                " one; write days (30d, 365d or P30D)"
            )
        if not iso or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
            raise ValueError(
                f"{text!r} is not a duration: use 30s, 15m, 1h, 2d, 1w or ISO 8601 such as PT1H"
            )
        parts = {k: float(v) for k, v in iso.groupdict().items() if v}
        seconds = (
            parts.get("w", 0) * 604800
            + parts.get("d", 0) * 86400
            + parts.get("h", 0) * 3600
            + parts.get("m", 0) * 60
            + parts.get("s", 0)
        )
    try:
        delta = timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None
    if delta <= timedelta(0):
        raise ValueError(f"a duration must be longer than zero, got {text!r}")
    return delta


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling, which `parse_duration` reads back: 3600 s -> '1h'."""
    micros = delta // timedelta(microseconds=1)
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit] * 1_000_000
        if micros >= size and micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros / 1_000_000:.6f}".rstrip("0") + "s"


def parse_percent(text: object) -> float:
    """`10%` to the fraction 0.1. A bare number is refused: is 0.5 half, or half a percent?"""
    if isinstance(text, int | float) and not isinstance(text, bool):
        raise ValueError(f"write a percentage with a % sign, like {text}%")
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(\.\d+)?\s*%\s*", text):
        raise ValueError(f"expected a percentage such as 10%, got {text!r}")
    value = float(text.strip().rstrip("%").strip())
    if not 0 <= value <= 100:
        raise ValueError(f"a percentage must be between 0% and 100%, got {text!r}")
    return value / 100


def format_percent(fraction: float) -> str:
    """The fraction 0.1 as '10%', in the shortest spelling `parse_percent` reads back exactly."""
    for digits in range(16):
        text = f"{fraction * 100:.{digits}f}"
        if float(text) / 100 == fraction:
            return f"{text}%"
    return f"{fraction * 100!r}%"


def parse_clock(text: object) -> tuple[int, int]:
    """`"09:30"` to (9, 30). YAML reads an unquoted 09:30 as a number, so say so."""
    if isinstance(text, int) and not isinstance(text, bool) and 0 <= text < 24 * 60:
        # YAML 1.1 reads an unquoted 21:00 as sexagesimal minutes: 21 * 60 + 0 = 1260.
        hour, minute = divmod(text, 60)
        raise ValueError(
            f'write clock times in quotes, like "{hour:02d}:{minute:02d}" '
            f"(unquoted, YAML reads {hour}:{minute:02d} as the number {text})"
        )
    if not isinstance(text, str) or not _CLOCK.match(text.strip()):
        raise ValueError(f'expected a time of day as "HH:MM", got {text!r}')
    hours, minutes = text.strip().split(":")
    return int(hours), int(minutes)


def parse_window(text: object) -> tuple[tuple[int, int], tuple[int, int]]:
    """`"21:00-08:00"` to ((21, 0), (8, 0)); the window may wrap past midnight."""
    if not isinstance(text, str) or text.count("-") != 1:
        raise ValueError(f'expected a window as "HH:MM-HH:MM", got {text!r}')
    start, end = text.split("-")
    window = parse_clock(start), parse_clock(end)
    if window[0] == window[1]:
        raise ValueError(f"a window must not start and end at the same time: {text!r}")
    return window
