"""Evaluate compiled expressions: pure Python, deterministic, safe inside a workflow.

`journeyman.dsl.expressions` turns Jinja2 expression text into a small JSON tree (lists
whose first element names the node). This module walks that tree, one function per
kind of node, with the filters, tests and functions an expression may use; the values
they compute with follow journeyman/dsl/values.py. It imports nothing but the standard
library and those pure modules, so the journey workflow can evaluate conditions that
only read `event`, `trigger`, `journey` and `now` without an activity; expressions that
read `profile` or history run in an activity with the very same code.

A name or attribute that does not exist is an `ExpressionError` saying which one,
never a silent false; `x is defined` and `x | default(y)` are the ways to allow it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from journeyman.dsl.values import (
    ARITHMETIC,
    COMPARE,
    MAX_ITEMS,
    MAX_TEXT,
    SYMBOLS,
    ExpressionError,
    LimitError,
    Undefined,
    as_instants,
    as_numbers,
    bounded_list,
    check_size,
    concat_text,
    defined,
    describe,
    get_attribute,
    get_item,
    is_anniversary,
    length_of,
    number_from_text,
    ordered,
    to_date,
    to_datetime,
    to_number,
    to_text,
    values_equal,
)

# What other modules read from here, though it is defined in journeyman/dsl/values.py.
__all__ = [
    "MAX_ITEMS",
    "MAX_TEXT",
    "ExpressionError",
    "Undefined",
    "is_anniversary",
    "number_from_text",
    "to_datetime",
    "values_equal",
]

Node = list[Any]


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


def _join(value: Any, sep: str = "") -> str:
    texts = [to_text(x) for x in defined(value)]
    separator = to_text(sep)
    check_size(sum(len(t) for t in texts) + len(separator) * max(len(texts) - 1, 0), str)
    return separator.join(texts)


def _replace(value: Any, old: Any, new: Any) -> str:
    text, old_text, new_text = to_text(value), to_text(old), to_text(new)
    times = text.count(old_text) if old_text else len(text) + 1
    check_size(len(text) + times * (len(new_text) - len(old_text)), str)
    return text.replace(old_text, new_text)


def _round(value: Any, precision: int = 0, method: str = "common") -> float:
    value = to_number(value, float)
    if method == "ceil":
        return math.ceil(value * 10**precision) / 10**precision
    if method == "floor":
        return math.floor(value * 10**precision) / 10**precision
    return round(value, precision)


FILTERS: dict[str, Callable[..., Any]] = {
    "lower": lambda v: to_text(v).lower(),
    "upper": lambda v: to_text(v).upper(),
    "title": lambda v: to_text(v).title(),
    "capitalize": lambda v: to_text(v).capitalize(),
    "trim": lambda v: to_text(v).strip(),
    "string": to_text,
    "length": length_of,
    "count": length_of,
    "int": lambda v, default=0: to_number(v, float).__int__() if v not in ("", None) else default,
    "float": lambda v, default=0.0: to_number(v, float) if v not in ("", None) else default,
    "abs": lambda v: abs(to_number(v, float)) if not isinstance(v, int) else abs(v),
    "round": _round,
    "default": lambda v, default="", boolean=False: (
        default if isinstance(v, Undefined) or (boolean and not v) else v
    ),
    "join": _join,
    "first": lambda v: next(iter(defined(v)), None),
    "last": lambda v: list(defined(v))[-1] if defined(v) else None,
    "list": lambda v: bounded_list(list(defined(v))),
    "replace": _replace,
}
FILTERS["d"] = FILTERS["default"]
# v1's meaning of the filters DSL v2 redefined (numbers as text, `attribute=`), kept for
# runs recorded before patch `v2a-condition-errors`.
_V1_FILTERS: dict[str, Callable[..., Any]] = {
    "min": lambda v: min(defined(v)),
    "max": lambda v: max(defined(v)),
    "sum": lambda v: sum(defined(v)),
}


TESTS: dict[str, Callable[..., bool]] = {
    "defined": lambda v: not isinstance(v, Undefined),
    "undefined": lambda v: isinstance(v, Undefined),
    "none": lambda v: defined(v) is None,
    "number": lambda v: isinstance(defined(v), int | float) and not isinstance(v, bool),
    "string": lambda v: isinstance(defined(v), str),
    "mapping": lambda v: isinstance(defined(v), Mapping),
    "sequence": lambda v: isinstance(defined(v), list | tuple | str),
    "boolean": lambda v: isinstance(defined(v), bool),
    "true": lambda v: defined(v) is True,
    "false": lambda v: defined(v) is False,
    "even": lambda v: to_number(v, int) % 2 == 0,
    "odd": lambda v: to_number(v, int) % 2 == 1,
    "divisibleby": lambda v, n: to_number(v, int) % n == 0,
    # Comparisons, as Jinja2 names them, for `select` and `selectattr`.
    "eq": lambda v, other: values_equal(defined(v), other),
    "ne": lambda v, other: not values_equal(defined(v), other),
    "lt": lambda v, other: ordered(defined(v), other, "lt"),
    "le": lambda v, other: ordered(defined(v), other, "lteq"),
    "gt": lambda v, other: ordered(defined(v), other, "gt"),
    "ge": lambda v, other: ordered(defined(v), other, "gteq"),
    "in": lambda v, seq: defined(v) in seq,
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


# Functions every expression may call. History functions (`last`, `count`, `recent`)
# are supplied per evaluation by whoever can read history (an activity), and so are
# the customer's clock: the name `today` and `local()`, `anniversary()`, which need the
# customer's time zone.
PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "days": lambda n: timedelta(days=to_number(n, float)),
    "hours": lambda n: timedelta(hours=to_number(n, float)),
    "minutes": lambda n: timedelta(minutes=to_number(n, float)),
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
        return defined(_eval(node, names))
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
_MEMBER = ("in", "notin")


def _eval(node: Node, names: Mapping[str, Any]) -> Any:
    kind = node[0]
    try:
        handler = _NODES[kind]
    except (KeyError, TypeError):  # TypeError: a kind that is no text
        raise ExpressionError(f"unknown expression node {kind!r}") from None
    return handler(node, names)


# One function per kind of node, each given the node and the names it may read.


def _eval_name(node: Node, names: Mapping[str, Any]) -> Any:
    name = node[1]
    if name in names:
        return names[name]
    if name in PURE_FUNCTIONS:
        return PURE_FUNCTIONS[name]
    return Undefined(name)


def _eval_compare(node: Node, names: Mapping[str, Any]) -> bool:
    left = defined(_eval(node[1], names))
    numeric_text = LEGACY_TEXT_NUMBERS not in names
    for op, right_node in node[2]:
        right = defined(_eval(right_node, names))
        a, b = as_numbers(left, right) if numeric_text and op not in _MEMBER else (left, right)
        try:
            if not COMPARE[op](a, b):
                return False
        except TypeError:
            raise ExpressionError(
                f"cannot compare {describe(left)} with {describe(right)} using '{SYMBOLS[op]}'"
            ) from None
        left = right
    return True


def _eval_and(node: Node, names: Mapping[str, Any]) -> Any:
    left = defined(_eval(node[1], names))
    return defined(_eval(node[2], names)) if left else left


def _eval_or(node: Node, names: Mapping[str, Any]) -> Any:
    left = defined(_eval(node[1], names))
    return left if left else defined(_eval(node[2], names))


def _eval_binary(node: Node, names: Mapping[str, Any]) -> Any:
    left = defined(_eval(node[2], names))
    right = defined(_eval(node[3], names))
    if node[1] == "concat":
        return concat_text([to_text(left), to_text(right)])
    if LEGACY_TEXT_NUMBERS not in names and node[1] in ("add", "sub"):
        left, right = as_instants(left, right)
    try:
        return ARITHMETIC[node[1]](left, right)
    except TypeError:
        raise ExpressionError(
            f"cannot apply '{SYMBOLS[node[1]]}' to {describe(left)} and {describe(right)}"
        ) from None


def _eval_if(node: Node, names: Mapping[str, Any]) -> Any:
    if defined(_eval(node[1], names)):
        return _eval(node[2], names)
    return _eval(node[3], names) if node[3] is not None else None


def _arguments(
    args: list[Node], kwargs: dict[str, Node], names: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    return (
        [defined(_eval(a, names)) for a in args],
        {k: defined(_eval(v, names)) for k, v in kwargs.items()},
    )


def _eval_call(node: Node, names: Mapping[str, Any]) -> Any:
    function = names.get(node[1]) or PURE_FUNCTIONS.get(node[1])
    if function is None or not callable(function):
        raise ExpressionError(f"{node[1]}() is not available here")
    args, kwargs = _arguments(node[2], node[3], names)
    return function(*args, **kwargs)


def _eval_filter(node: Node, names: Mapping[str, Any]) -> Any:
    value = _eval(node[2], names)
    args, kwargs = _arguments(node[3], node[4], names)
    if LEGACY_TEXT_NUMBERS in names and node[1] in _V1_FILTERS:
        return _V1_FILTERS[node[1]](value, *args, **kwargs)
    return FILTERS[node[1]](value, *args, **kwargs)


def _eval_test(node: Node, names: Mapping[str, Any]) -> bool:
    value = _eval(node[2], names)
    args = [defined(_eval(a, names)) for a in node[3]]
    return TESTS[node[1]](value, *args)


_NODES: dict[str, Callable[[Node, Mapping[str, Any]], Any]] = {
    "lit": lambda node, names: node[1],
    "name": _eval_name,
    "attr": lambda node, names: get_attribute(_eval(node[1], names), node[2], _path(node[1])),
    "item": lambda node, names: get_item(
        _eval(node[1], names), _eval(node[2], names), _path(node[1])
    ),
    "cmp": _eval_compare,
    "and": _eval_and,
    "or": _eval_or,
    "not": lambda node, names: not defined(_eval(node[1], names)),
    "bin": _eval_binary,
    "neg": lambda node, names: -defined(_eval(node[1], names)),
    "pos": lambda node, names: +defined(_eval(node[1], names)),
    "list": lambda node, names: bounded_list([defined(_eval(i, names)) for i in node[1]]),
    "dict": lambda node, names: {_eval(k, names): defined(_eval(v, names)) for k, v in node[1]},
    "if": _eval_if,
    "call": _eval_call,
    "filter": _eval_filter,
    "test": _eval_test,
    "concat": lambda node, names: concat_text([to_text(_eval(p, names)) for p in node[1]]),
}


def subtrees(tree: Any) -> Iterator[Node]:
    """Every node of a compiled tree (a list headed by its kind), each before the nodes
    inside it, in the order they are written."""
    pending = [tree]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            if item and isinstance(item[0], str):
                yield item
            pending.extend(reversed(item))
        elif isinstance(item, dict):
            pending.extend(reversed(item.values()))


def names_used(node: Node) -> set[str]:
    """Every top-level name an expression reads or calls."""
    return {item[1] for item in subtrees(node) if item[0] in ("name", "call")}


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
        return f"{left} {SYMBOLS.get(node[1], node[1])} {right}"
    if kind == "filter":
        return f"{source(node[2], depth + 1)} | {node[1]}"
    if kind == "call":
        return f"{node[1]}(...)"
    if kind == "concat":
        return " ~ ".join(source(part, depth + 1) for part in node[1])
    return "the expression"
