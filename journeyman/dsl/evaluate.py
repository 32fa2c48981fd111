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
import re
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
# The size of any text or list an expression builds (repetition, `+`, `~`, `join`,
# `replace`, list literals): checked before the value is made, so a limit is an
# ExpressionError naming the expression, never a MemoryError.
MAX_TEXT = 1_000_000
MAX_ITEMS = 10_000


class LimitError(ExpressionError):
    """A value an expression would build is over MAX_TEXT characters or MAX_ITEMS items."""


def _check_size(size: int, kind: type) -> None:
    if kind is str and size > MAX_TEXT:
        raise LimitError(f"the text would be {size} characters, more than the {MAX_TEXT} allowed")
    if kind is list and size > MAX_ITEMS:
        raise LimitError(f"the list would have {size} items, more than the {MAX_ITEMS} allowed")


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | list) and isinstance(times, int) and not isinstance(times, bool):
            if times > MAX_REPEAT:
                raise LimitError(f"cannot repeat a value more than {MAX_REPEAT} times")
            _check_size(len(seq) * max(times, 0), type(seq))
    return a * b


def _add(a: Any, b: Any) -> Any:
    for kind in (str, list):
        if isinstance(a, kind) and isinstance(b, kind):
            _check_size(len(a) + len(b), kind)
    return a + b


def _mod(a: Any, b: Any) -> Any:
    """`%` is the remainder of two numbers, never Python's string formatting."""
    for value in (a, b):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ExpressionError(f"'%' takes two numbers, not {_describe(value)}")
    return a % b


def _concat_text(parts: list[str]) -> str:
    _check_size(sum(len(p) for p in parts), str)
    return "".join(parts)


def _join(value: Any, sep: str = "") -> str:
    texts = [_to_str(x) for x in _defined(value)]
    separator = _to_str(sep)
    _check_size(sum(len(t) for t in texts) + len(separator) * max(len(texts) - 1, 0), str)
    return separator.join(texts)


def _replace(value: Any, old: Any, new: Any) -> str:
    text, old_text, new_text = _to_str(value), _to_str(old), _to_str(new)
    times = text.count(old_text) if old_text else len(text) + 1
    _check_size(len(text) + times * (len(new_text) - len(old_text)), str)
    return text.replace(old_text, new_text)


def _bounded_list(items: list[Any]) -> list[Any]:
    _check_size(len(items), list)
    return items


def _pow(a: Any, b: Any) -> Any:
    if isinstance(b, int | float) and abs(b) > MAX_POWER:
        raise ExpressionError(f"an exponent must be at most {MAX_POWER}, got {b!r}")
    return a**b


_BIN: dict[str, Callable[[Any, Any], Any]] = {
    "add": _add,
    "sub": lambda a, b: a - b,
    "mul": _mul,
    "div": lambda a, b: a / b,
    "floordiv": lambda a, b: a // b,
    "mod": _mod,
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
    "join": _join,
    "first": lambda v: next(iter(_defined(v)), None),
    "last": lambda v: list(_defined(v))[-1] if _defined(v) else None,
    "list": lambda v: _bounded_list(list(_defined(v))),
    "replace": _replace,
}
FILTERS["d"] = FILTERS["default"]
# v1's meaning of the filters DSL v2 redefined (numbers as text, `attribute=`), kept for
# runs recorded before patch `v2a-condition-errors`.
_V1_FILTERS: dict[str, Callable[..., Any]] = {
    "min": lambda v: min(_defined(v)),
    "max": lambda v: max(_defined(v)),
    "sum": lambda v: sum(_defined(v)),
}


def _ordered(left: Any, right: Any, op: str) -> bool:
    a, b = _as_numbers(left, right)
    try:
        return bool(_CMP[op](a, b))
    except TypeError:
        raise ExpressionError(
            f"cannot compare {_describe(a)} with {_describe(b)} using '{_OPS[op]}'"
        ) from None


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
    # Comparisons, as Jinja2 names them, for `select` and `selectattr`.
    "eq": lambda v, other: values_equal(_defined(v), other),
    "ne": lambda v, other: not values_equal(_defined(v), other),
    "lt": lambda v, other: _ordered(_defined(v), other, "lt"),
    "le": lambda v, other: _ordered(_defined(v), other, "lteq"),
    "gt": lambda v, other: _ordered(_defined(v), other, "gt"),
    "ge": lambda v, other: _ordered(_defined(v), other, "gteq"),
    "in": lambda v, seq: _defined(v) in seq,
}
for _alias, _test in {
    "equalto": "eq",
    "==": "eq",
    "!=": "ne",
    "lessthan": "lt",
    "<": "lt",
    "<=": "le",
    "greaterthan": "gt",
    ">": "gt",
    ">=": "ge",
}.items():
    TESTS[_alias] = TESTS[_test]


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
# `secret('CRM_TOKEN')`: supplied by the webhook activity alone
# (journeyman/messaging/journey_secrets.py).
SECRET_FUNCTIONS = ("secret",)
CUSTOMER_CLOCK_FUNCTIONS = ("local", "anniversary")
# Lookups in catalogs (journeyman/messaging/catalogs.py), also supplied by an activity.
CATALOG_FUNCTIONS = ("catalog", "viewed_products")


def evaluate(node: Node, names: Mapping[str, Any], *, numeric_text: bool = True) -> Any:
    """The value of a compiled expression given the names it may read.

    `numeric_text`: a number compared with text that is a number compares the numbers
    (`"4" <= 6`, DSL v2); False keeps v1's meaning for runs recorded before it (patch
    `v2a-condition-errors` in the journey workflow).
    """
    if not numeric_text:
        names = {**names, LEGACY_TEXT_NUMBERS: True}
    try:
        return _defined(_eval(node, names))
    except LimitError as exc:
        raise LimitError(f"{source(node)}: {exc}") from None
    except ExpressionError:
        raise
    except MemoryError:
        raise LimitError(f"{source(node)}: the value is too large to build") from None
    except RecursionError:
        raise ExpressionError("expression is nested too deeply") from None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, AttributeError) as exc:
        raise ExpressionError(str(exc)) from None


def evaluate_condition(node: Node, names: Mapping[str, Any], *, numeric_text: bool = True) -> bool:
    return bool(evaluate(node, names, numeric_text=numeric_text))


# A key no expression can name (it is no identifier): present in the names, it keeps
# v1's comparisons, where text never equals a number and ordering them is an error.
LEGACY_TEXT_NUMBERS = "numbers as text are text"
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_MEMBER = ("in", "notin")


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


def _is_number(value: Any) -> bool:
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


def _as_instants(left: Any, right: Any) -> tuple[Any, Any]:
    """ISO text as an instant beside a duration or a datetime (event sources send dates
    as text: `trigger.properties.delivered_at + days(3)`); otherwise both as they are."""
    for this, other in ((left, right), (right, left)):
        if isinstance(other, timedelta | datetime) and isinstance(this, str):
            instant = instant_from_text(this)
            if instant is not None:
                return (instant, right) if this is left else (left, instant)
    return left, right


def _as_numbers(left: Any, right: Any) -> tuple[Any, Any]:
    """Both sides as numbers when one is a number and the other text spelling one, as
    event sources often send (`"4"`); ISO text beside a datetime as that instant;
    otherwise both as they are."""
    if isinstance(left, datetime) or isinstance(right, datetime):
        return _as_instants(left, right)
    if _is_number(left) and isinstance(right, str):
        number = number_from_text(right)
        return (left, number) if number is not None else (left, right)
    if _is_number(right) and isinstance(left, str):
        number = number_from_text(left)
        return (number, right) if number is not None else (left, right)
    return left, right


def values_equal(left: Any, right: Any) -> bool:
    """Equality as `==` in an expression: numbers sent as text equal the numbers."""
    a, b = _as_numbers(left, right)
    return bool(a == b)


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
        numeric_text = LEGACY_TEXT_NUMBERS not in names
        for op, right_node in node[2]:
            right = _defined(_eval(right_node, names))
            a, b = _as_numbers(left, right) if numeric_text and op not in _MEMBER else (left, right)
            try:
                if not _CMP[op](a, b):
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
            return _concat_text([_to_str(left), _to_str(right)])
        if LEGACY_TEXT_NUMBERS not in names and node[1] in ("add", "sub"):
            left, right = _as_instants(left, right)
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
        return _bounded_list([_defined(_eval(item, names)) for item in node[1]])
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
        if LEGACY_TEXT_NUMBERS in names and node[1] in _V1_FILTERS:
            return _V1_FILTERS[node[1]](value, *args, **kwargs)
        return FILTERS[node[1]](value, *args, **kwargs)
    if kind == "test":
        value = _eval(node[2], names)
        args = [_defined(_eval(a, names)) for a in node[3]]
        return TESTS[node[1]](value, *args)
    if kind == "concat":
        return _concat_text([_to_str(_eval(part, names)) for part in node[1]])
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


# Jinja2's list filters live in their own module, which reads this one's names.
from journeyman.dsl.sequences import LIST_FILTERS  # noqa: E402

FILTERS.update(LIST_FILTERS)


def source(node: Node, depth: int = 0) -> str:
    """Readable text of a compiled expression, for error messages (`'a' * 10000`)."""
    if depth > 6:
        return "..."
    kind = node[0]
    if kind == "lit":
        text = repr(node[1])
        return text if len(text) <= 40 else text[:37] + "..."
    if kind in ("name", "attr", "item"):
        return _path(node)
    if kind == "bin":
        left, right = source(node[2], depth + 1), source(node[3], depth + 1)
        return f"{left} {_OPS.get(node[1], node[1])} {right}"
    if kind == "filter":
        return f"{source(node[2], depth + 1)} | {node[1]}"
    if kind == "call":
        return f"{node[1]}(...)"
    if kind == "concat":
        return " ~ ".join(source(part, depth + 1) for part in node[1])
    return "the expression"
