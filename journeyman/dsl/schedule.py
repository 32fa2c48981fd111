"""How often a segment is checked: `every: 1d` (a duration) or a cron line.

Pure: `parse_every` checks what a marketer wrote and says what is wrong, so that a bad
schedule is a validation error with a position, never a surprise when the worker
creates the Temporal Schedule. A cron line has the five classic fields (minute, hour,
day of month, month, day of week), with `*`, lists, ranges, steps and month or day
names, or one of `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`; it is read in
the service time zone (JOURNEYMAN_TIMEZONE).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from journeyman.dsl.durations import format_duration, parse_duration

MIN_INTERVAL = timedelta(minutes=1)
SHORTCUTS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names for values from `lowest`)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class Every:
    """A schedule: an interval, or a cron line (exactly one is set)."""

    interval: timedelta | None = None
    cron: str | None = None

    def __str__(self) -> str:
        if self.interval is not None:
            return format_duration(self.interval)
        return str(self.cron)


def describe_every(every: str, timezone: str | None = None) -> str:
    """`every` for people: "every 1h", or 'on cron "0 8 * * *" (Europe/Paris)'."""
    if is_cron(every):
        return f'on cron "{every}"' + (f" ({timezone})" if timezone else "")
    return f"every {every}"


def is_cron(text: str) -> bool:
    return text.strip().startswith("@") or len(text.split()) > 1


def parse_every(value: object) -> Every:
    """`1d` / `PT6H` (at least a minute) or a cron line; ValueError saying what is wrong."""
    if isinstance(value, str) and is_cron(value):
        return Every(cron=parse_cron(value))
    try:
        interval = parse_duration(value)
    except ValueError as exc:
        raise ValueError(
            f'{exc}; every takes a duration (1d, 6h) or a cron line in quotes ("0 9 * * *")'
        ) from None
    if interval < MIN_INTERVAL:
        raise ValueError(f"every must be at least 1m, got {value!r}")
    return Every(interval=interval)


def parse_cron(text: str) -> str:
    """The cron line, normalized (single spaces, lower case); ValueError if it is not one."""
    line = " ".join(text.lower().split())
    if line.startswith("@"):
        if line not in SHORTCUTS:
            raise ValueError(
                f"unknown cron shortcut {text.strip()!r}; use one of " + ", ".join(SHORTCUTS)
            )
        return line
    fields = line.split(" ")
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"a cron line has 5 fields (minute hour day-of-month month day-of-week), "
            f'got {len(fields)} in {text.strip()!r}; e.g. "0 9 * * *" is every day at 09:00'
        )
    for field, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for part in field.split(","):
            _check_part(part, name, low, high, names)
    return line


def _check_part(part: str, name: str, low: int, high: int, names: list[str] | None) -> None:
    match = _PART.match(part)
    if not match:
        raise ValueError(f"cron {name} field: {part!r} is not a value, range, list or */step")
    base, step = match.group(1), match.group(2)
    if step is not None and int(step) < 1:
        raise ValueError(f"cron {name} field: the step in {part!r} must be at least 1")
    if base == "*":
        return
    bounds = [_value(v, name, low, high, names) for v in base.split("-")]
    if len(bounds) == 2 and bounds[0] > bounds[1]:
        raise ValueError(f"cron {name} field: the range {part!r} goes backwards")


def _value(text: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    if names is not None and text in names:
        return names.index(text) + low
    if not text.isdigit():
        known = f" or a name ({', '.join(names)})" if names else ""
        raise ValueError(f"cron {name} field: {text!r} is not a number{known}")
    number = int(text)
    if not low <= number <= high:
        raise ValueError(f"cron {name} field: {number} is outside {low}-{high}")
    return number
