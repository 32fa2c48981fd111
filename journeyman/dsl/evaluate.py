"""Evaluate compiled expressions: pure Python, deterministic, safe inside a workflow.

`journeyman.dsl.expressions` turns Jinja2 expression text into a small JSON tree (lists
whose first element names the node). This module walks that tree. It imports nothing
but the standard library, so the journey workflow can evaluate conditions that only
read `event`, `trigger`, `journey` and `now` without an activity; expressions that read
`profile` or history run in an activity with the very same code.

A name or attribute that does not exist is an `ExpressionError` saying which one,
never a silent false; `x is defined` and `x | default(y)` are the ways to allow it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

Node = list[Any]


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


def _attr(value: Any, name: str, path: str) -> Any:
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


def _item(value: Any, key: Any, path: str) -> Any:
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


def _path(node: Node) -> str:
    """A readable name for the value a node denotes, for error messages."""
    kind = node[0]
    if kind == "name":
        return str(node[1])
    if kind == "attr":
        return f"{_path(node[1])}.{node[2]}"
    if kind == "item":
        key = node[2][1] if node[2][0] == "lit" else "..."
        return f"{_path(node[1])}[{key!r}]"
    return "the value"


def _defined(value: Any) -> Any:
    if isinstance(value, Undefined):
        raise value.fail()
    return value


_CMP: dict[str, Callable[[Any, Any], bool]] = {
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


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list) and isinstance(times, int) and times > MAX_REPEAT:
            raise ExpressionError(f"cannot repeat a value more than {MAX_REPEAT} times")
    return a * b


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, int | float) and abs(b) > MAX_POWER:
        raise ExpressionError(f"an exponent must be at most {MAX_POWER}, got {b!r}")
    return a**b


_BIN: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": _mul,
    "div": lambda a, b: a / b,
    "floordiv": lambda a, b: a // b,
    "mod": lambda a, b: a % b,
    "pow": _pow,
}


def _to_str(value: Any) -> str:
    value = _defined(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _number(value: Any, kind: type) -> Any:
    value = _defined(value)
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ExpressionError(f"{value!r} is not a number") from None


def _length(value: Any) -> int:
    value = _defined(value)
    try:
        return len(value)
    except TypeError:
        raise ExpressionError(f"{value!r} has no length") from None


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    value = _number(value, float)
    if method == "ceil":
        return math.ceil(value * 10**precision) / 10**precision
    if method == "floor":
        return math.floor(value * 10**precision) / 10**precision
    return round(value, precision)


FILTERS: dict[str, Callable[..., Any]] = {
    "lower": lambda v: _to_str(v).lower(),
    "upper": lambda v: _to_str(v).upper(),
    "title": lambda v: _to_str(v).title(),
    "capitalize": lambda v: _to_str(v).capitalize(),
    "trim": lambda v: _to_str(v).strip(),
    "string": _to_str,
    "length": _length,
    "count": _length,
    "int": lambda v, default=0: _number(v, float).__int__() if v not in ("", None) else default,
    "float": lambda v, default=0.0: _number(v, float) if v not in ("", None) else default,
    "abs": lambda v: abs(_number(v, float)) if not isinstance(v, int) else abs(v),
    "round": _round,
    "default": lambda v, default="", boolean=False: (
        default if isinstance(v, Undefined) or (boolean and not v) else v
    ),
    "join": lambda v, sep="": sep.join(_to_str(x) for x in _defined(v)),
    "first": lambda v: next(iter(_defined(v)), None),
    "last": lambda v: list(_defined(v))[-1] if _defined(v) else None,
    "min": lambda v: min(_defined(v)),
    "max": lambda v: max(_defined(v)),
    "sum": lambda v: sum(_defined(v)),
    "list": lambda v: list(_defined(v)),
    "replace": lambda v, old, new: _to_str(v).replace(old, new),
}
FILTERS["d"] = FILTERS["default"]

TESTS: dict[str, Callable[..., bool]] = {
    "defined": lambda v: not isinstance(v, Undefined),
    "undefined": lambda v: isinstance(v, Undefined),
    "none": lambda v: _defined(v) is None,
    "number": lambda v: isinstance(_defined(v), int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(_defined(v), str),
    "mapping": lambda v: isinstance(_defined(v), Mapping),
    "sequence": lambda v: isinstance(_defined(v), list | tuple | str),
    "boolean": lambda v: isinstance(_defined(v), bool),
    "true": lambda v: _defined(v) is True,
    "false": lambda v: _defined(v) is False,
    "even": lambda v: _number(v, int) % 2 == 0,
    "odd": lambda v: _number(v, int) % 2 == 1,
    "divisibleby": lambda v, n: _number(v, int) % n == 0,
}


def to_date(value: Any) -> date:
    """The calendar date of a value: `date('1990-12-01')`, a date, or a datetime's own
    date (as written: `date(last('order_placed').at)` is its UTC date; use
    `local(...)` first for the customer's)."""
    value = _defined(value)
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
    value = _defined(value)
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


# Functions every expression may call. History functions (`last`, `count`, `recent`)
# are supplied per evaluation by whoever can read history (an activity), and so are
# the customer's clock: the name `today` and `local()`, `anniversary()`, which need the
# customer's time zone.
PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "days": lambda n: timedelta(days=_number(n, float)),
    "hours": lambda n: timedelta(hours=_number(n, float)),
    "minutes": lambda n: timedelta(minutes=_number(n, float)),
    "date": to_date,
}
HISTORY_FUNCTIONS = ("last", "count", "recent")
CUSTOMER_CLOCK_FUNCTIONS = ("local", "anniversary")
# Lookups in catalogs (journeyman/catalogs.py), also supplied by an activity.
CATALOG_FUNCTIONS = ("catalog", "viewed_products")


def evaluate(node: Node, names: Mapping[str, Any]) -> Any:
    """The value of a compiled expression given the names it may read."""
    try:
        return _defined(_eval(node, names))
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError("expression is nested too deeply") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        raise ExpressionError(str(exc)) from None


def evaluate_condition(node: Node, names: Mapping[str, Any]) -> bool:
    return bool(evaluate(node, names))


def _eval(node: Node, names: Mapping[str, Any]) -> Any:
    kind = node[0]
    if kind == "lit":
        return node[1]
    if kind == "name":
        name = node[1]
        if name in names:
            return names[name]
        if name in PURE_FUNCTIONS:
            return PURE_FUNCTIONS[name]
        return Undefined(name)
    if kind == "attr":
        return _attr(_eval(node[1], names), node[2], _path(node[1]))
    if kind == "item":
        return _item(_eval(node[1], names), _eval(node[2], names), _path(node[1]))
    if kind == "cmp":
        left = _defined(_eval(node[1], names))
        for op, right_node in node[2]:
            right = _defined(_eval(right_node, names))
            try:
                if not _CMP[op](left, right):
                    return False
            except TypeError:
                raise ExpressionError(
                    f"cannot compare {_describe(left)} with {_describe(right)} using '{_OPS[op]}'"
                ) from None
            left = right
        return True
    if kind == "and":
        left = _defined(_eval(node[1], names))
        return _defined(_eval(node[2], names)) if left else left
    if kind == "or":
        left = _defined(_eval(node[1], names))
        return left if left else _defined(_eval(node[2], names))
    if kind == "not":
        return not _defined(_eval(node[1], names))
    if kind == "bin":
        left = _defined(_eval(node[2], names))
        right = _defined(_eval(node[3], names))
        if node[1] == "concat":
            return _to_str(left) + _to_str(right)
        try:
            return _BIN[node[1]](left, right)
        except TypeError:
            raise ExpressionError(
                f"cannot apply '{_OPS[node[1]]}' to {_describe(left)} and {_describe(right)}"
            ) from None
    if kind == "neg":
        return -_defined(_eval(node[1], names))
    if kind == "pos":
        return +_defined(_eval(node[1], names))
    if kind == "list":
        return [_defined(_eval(item, names)) for item in node[1]]
    if kind == "dict":
        return {_eval(k, names): _defined(_eval(v, names)) for k, v in node[1]}
    if kind == "if":
        if _defined(_eval(node[1], names)):
            return _eval(node[2], names)
        return _eval(node[3], names) if node[3] is not None else None
    if kind == "call":
        function = names.get(node[1]) or PURE_FUNCTIONS.get(node[1])
        if function is None or not callable(function):
            raise ExpressionError(f"{node[1]}() is not available here")
        args = [_defined(_eval(a, names)) for a in node[2]]
        kwargs = {k: _defined(_eval(v, names)) for k, v in node[3].items()}
        return function(*args, **kwargs)
    if kind == "filter":
        value = _eval(node[2], names)
        args = [_defined(_eval(a, names)) for a in node[3]]
        kwargs = {k: _defined(_eval(v, names)) for k, v in node[4].items()}
        return FILTERS[node[1]](value, *args, **kwargs)
    if kind == "test":
        value = _eval(node[2], names)
        args = [_defined(_eval(a, names)) for a in node[3]]
        return TESTS[node[1]](value, *args)
    if kind == "concat":
        return "".join(_to_str(_eval(part, names)) for part in node[1])
    raise ExpressionError(f"unknown expression node {kind!r}")


_OPS = {
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


def _describe(value: Any) -> str:
    if value is None:
        return "none"
    return f"{type(value).__name__} {value!r}"


def names_used(node: Node) -> set[str]:
    """Every top-level name an expression reads or calls."""
    found: set[str] = set()

    def walk(item: Any) -> None:
        if isinstance(item, list) and item and isinstance(item[0], str):
            if item[0] == "name":
                found.add(item[1])
                return
            if item[0] == "call":
                found.add(item[1])
            for child in item[1:]:
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)
        elif isinstance(item, dict):
            for child in item.values():
                walk(child)

    walk(node)
    return found
