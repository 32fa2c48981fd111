"""The values expressions compute with: pure Python, deterministic, safe inside a workflow.

A name or attribute that does not exist is an `Undefined`, and any use of it but
`default` and `is defined` is an `ExpressionError` saying which one. Numbers sent as
text (`"4"`) compare and add as the numbers they spell where a number stands beside
them, ISO text as the instant it spells beside a date; nothing an expression builds may
grow past the limits below. The evaluator (journeyman/dsl/evaluate.py) and the list
filters (journeyman/dsl/sequences.py) share these rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any


class ExpressionError(Exception):
    """An expression that could not be evaluated for this customer and event."""


class Undefined:
    """A missing name or attribute. Any use but `default` and `is defined` is an error."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self) -> ExpressionError:
        return ExpressionError(f"{self.what} is not defined")


_DATETIME_FIELDS = {"year", "month", "day", "hour", "minute", "second", "weekday"}
_TIMEDELTA_FIELDS = {"days", "seconds", "total_seconds", "hours", "minutes"}


def get_attribute(value: Any, name: str, path: str) -> Any:
    if isinstance(value, Undefined):
        raise value.fail()
    if isinstance(value, Mapping):
        return value[name] if name in value else Undefined(f"{path}.{name}")
    if isinstance(value, datetime | date) and name in _DATETIME_FIELDS:
        return value.weekday() if name == "weekday" else getattr(value, name)
    if isinstance(value, timedelta) and name in _TIMEDELTA_FIELDS:
        seconds = value.total_seconds()
        return {
            "days": seconds / 86400,
            "hours": seconds / 3600,
            "minutes": seconds / 60,
            "seconds": seconds,
            "total_seconds": seconds,
        }[name]
    if value is None:
        raise ExpressionError(f"{path} is empty (none), so it has no attribute {name!r}")
    return Undefined(f"{path}.{name}")


def get_item(value: Any, key: Any, path: str) -> Any:
    if isinstance(value, Undefined):
        raise value.fail()
    if isinstance(key, Undefined):
        raise key.fail()
    try:
        return value[key]
    except (KeyError, IndexError):
        return Undefined(f"{path}[{key!r}]")
    except TypeError as exc:
        raise ExpressionError(f"cannot index {path} with {key!r}: {exc}") from None


def defined(value: Any) -> Any:
    if isinstance(value, Undefined):
        raise value.fail()
    return value


COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lteq": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gteq": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


# Limits that keep one expression from stalling a workflow task: `"x" * 10**9` and
# `2 ** 10**9` are valid Jinja2, and no journey needs them.
MAX_POWER = 100
MAX_REPEAT = 10_000
# The size of any text or list an expression builds (repetition, `+`, `~`, `join`,
# `replace`, list literals): checked before the value is made, so a limit is an
# ExpressionError naming the expression, never a MemoryError.
MAX_TEXT = 1_000_000
MAX_ITEMS = 10_000


class LimitError(ExpressionError):
    """A value an expression would build is over MAX_TEXT characters or MAX_ITEMS items."""


def check_size(size: int, kind: type) -> None:
    if kind is str and size > MAX_TEXT:
        raise LimitError(f"the text would be {size} characters, more than the {MAX_TEXT} allowed")
    if kind is list and size > MAX_ITEMS:
        raise LimitError(f"the list would have {size} items, more than the {MAX_ITEMS} allowed")


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list) and isinstance(times, int) and not isinstance(times, bool):
            if times > MAX_REPEAT:
                raise LimitError(f"cannot repeat a value more than {MAX_REPEAT} times")
            check_size(len(seq) * max(times, 0), type(seq))
    return a * b


def _add(a: Any, b: Any) -> Any:
    for kind in (str, list):
        if isinstance(a, kind) and isinstance(b, kind):
            check_size(len(a) + len(b), kind)
    return a + b


def _mod(a: Any, b: Any) -> Any:
    """`%` is the remainder of two numbers, never Python's string formatting."""
    for value in (a, b):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ExpressionError(f"'%' takes two numbers, not {describe(value)}")
    return a % b


def concat_text(parts: list[str]) -> str:
    check_size(sum(len(p) for p in parts), str)
    return "".join(parts)


def bounded_list(items: list[Any]) -> list[Any]:
    check_size(len(items), list)
    return items


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, int | float) and abs(b) > MAX_POWER:
        raise ExpressionError(f"an exponent must be at most {MAX_POWER}, got {b!r}")
    return a**b


ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {
    "add": _add,
    "sub": lambda a, b: a - b,
    "mul": _mul,
    "div": lambda a, b: a / b,
    "floordiv": lambda a, b: a // b,
    "mod": _mod,
    "pow": _pow,
}


def to_text(value: Any) -> str:
    value = defined(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_number(value: Any, kind: type) -> Any:
    value = defined(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ExpressionError(f"{value!r} is not a number") from None


def length_of(value: Any) -> int:
    value = defined(value)
    try:
        return len(value)
    except TypeError:
        raise ExpressionError(f"{value!r} has no length") from None


def ordered(left: Any, right: Any, op: str) -> bool:
    a, b = as_numbers(left, right)
    try:
        return bool(COMPARE[op](a, b))
    except TypeError:
        raise ExpressionError(
            f"cannot compare {describe(a)} with {describe(b)} using '{SYMBOLS[op]}'"
        ) from None


def to_date(value: Any) -> date:
    """The calendar date of a value: `date('1990-12-01')`, a date, or a datetime's own
    date (as written: `date(last('order_placed').at)` is its UTC date; use
    `local(...)` first for the customer's)."""
    value = defined(value)
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10]) if len(text) >= 10 else date.fromisoformat(text)
        except ValueError:
            pass
    raise ExpressionError(f"{value!r} is not a date: write dates as 'YYYY-MM-DD'")


def to_datetime(value: Any) -> datetime:
    """An instant: an aware datetime, or ISO 8601 text with its offset."""
    value = defined(value)
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise ExpressionError(
        f"{value!r} is not a date and time with a time zone, such as 2026-12-01T09:00:00Z"
    )


def is_anniversary(value: Any, today: date) -> bool:
    """Whether `value`'s month and day are `today`'s; a 29 February counts on the 28th
    in years without one (a birthday is never skipped)."""
    day = to_date(value)
    if (day.month, day.day) == (today.month, today.day):
        return True
    leap = today.year % 4 == 0 and (today.year % 100 != 0 or today.year % 400 == 0)
    return (day.month, day.day) == (2, 29) and (today.month, today.day) == (2, 28) and not leap


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)


def number_from_text(value: Any) -> int | float | None:
    """The number that text spells (`"4"`, `" 4.5 "`, `"-3"`), or None when it is none."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    # Plain ASCII decimals only: Python's int() and float() also take "1_000", "inf"
    # and other scripts' digits, which no event source means as a number.
    if not _DECIMAL.fullmatch(text):
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    number = float(text)
    return number if math.isfinite(number) else None


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def instant_from_text(value: Any) -> datetime | None:
    """The instant ISO 8601 text with a time zone spells, or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def as_instants(left: Any, right: Any) -> tuple[Any, Any]:
    """ISO text as an instant beside a duration or a datetime (event sources send dates
    as text: `trigger.properties.delivered_at + days(3)`); otherwise both as they are."""
    for this, other in ((left, right), (right, left)):
        if isinstance(other, timedelta | datetime) and isinstance(this, str):
            instant = instant_from_text(this)
            if instant is not None:
                return (instant, right) if this is left else (left, instant)
    return left, right


def as_numbers(left: Any, right: Any) -> tuple[Any, Any]:
    """Both sides as numbers when one is a number and the other text spelling one, as
    event sources often send (`"4"`); ISO text beside a datetime as that instant;
    otherwise both as they are."""
    if isinstance(left, datetime) or isinstance(right, datetime):
        return as_instants(left, right)
    if is_number(left) and isinstance(right, str):
        number = number_from_text(right)
        return (left, number) if number is not None else (left, right)
    if is_number(right) and isinstance(left, str):
        number = number_from_text(left)
        return (number, right) if number is not None else (left, right)
    return left, right


def values_equal(left: Any, right: Any) -> bool:
    """Equality as `==` in an expression: numbers sent as text equal the numbers."""
    a, b = as_numbers(left, right)
    return bool(a == b)


SYMBOLS = {
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "lteq": "<=",
    "gt": ">",
    "gteq": ">=",
    "in": "in",
    "notin": "not in",
    "add": "+",
    "sub": "-",
    "mul": "*",
    "div": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "concat": "~",
}


def describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"{type(value).__name__} {value!r}"
