"""Jinja2's list filters for expressions, as plain Python (DSL v2).

`selectattr`, `rejectattr`, `map`, `select`, `reject`, `sum`, `min`, `max`, `unique`
and `sort` mean what they mean in Jinja2, with the evaluator's rules: an attribute that
an item does not have is an error naming it (unless the test is `defined` or `undefined`,
or `map` has a `default`), never a silent false; and numbers sent as text
count as numbers where numbers are compared, ordered or added (`"4"` sums with `5`,
`["4", "10"] | max` is `"10"`).

Registered into `journeyman.dsl.evaluate.FILTERS` by that module; pure and
deterministic, so the journey workflow may run it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from journeyman.dsl.evaluate import FILTERS, TESTS
from journeyman.dsl.values import (
    ExpressionError,
    Undefined,
    defined,
    number_from_text,
    ordered,
)


def _items(value: Any, what: str) -> list[Any]:
    value = defined(value)
    if value is None:
        raise ExpressionError(f"{what} needs a list, got none")
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ExpressionError(f"{what} needs a list, got {type(value).__name__} {value!r}")
    return list(value)


def attribute_of(item: Any, path: str) -> Any:
    """`item.price`, or with a dotted path `item.size.eu`; Undefined when it is missing."""
    value = item
    for part in str(path).split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return Undefined(f"an item's {path}")
    return value


def _test(name: Any, what: str) -> Callable[..., bool]:
    if name not in TESTS:
        raise ExpressionError(
            f"{what}: unknown test {name!r}; available: {', '.join(sorted(TESTS))}"
        )
    return TESTS[name]


def _passes(value: Any, test: Any, args: tuple[Any, ...], what: str) -> bool:
    if test is None:
        return bool(defined(value))
    return bool(_test(test, what)(value, *args))


def _select(value: Any, test: Any = None, *args: Any, keep: bool, what: str) -> list[Any]:
    return [x for x in _items(value, what) if _passes(x, test, args, what) is keep]


def _selectattr(
    value: Any, attr: Any = None, test: Any = None, *args: Any, keep: bool, what: str
) -> list[Any]:
    if not isinstance(attr, str) or not attr:
        raise ExpressionError(f"{what} needs the attribute's name: {what}('price', 'lt', 10)")
    return [
        x for x in _items(value, what) if _passes(attribute_of(x, attr), test, args, what) is keep
    ]


def _map(value: Any, *args: Any, **kwargs: Any) -> list[Any]:
    items = _items(value, "map")
    if "attribute" in kwargs:
        path = kwargs.pop("attribute")
        has_default = "default" in kwargs
        default = kwargs.pop("default", None)
        if kwargs or args:
            raise ExpressionError("map(attribute=...) takes only attribute= and default=")
        found = [attribute_of(x, path) for x in items]
        return [default if has_default and isinstance(x, Undefined) else defined(x) for x in found]
    if not args:
        raise ExpressionError("map needs attribute='name' or a filter: map('upper')")
    name, rest = args[0], args[1:]
    if name not in FILTERS:
        raise ExpressionError(f"map: unknown filter {name!r}")
    return [FILTERS[name](x, *rest, **kwargs) for x in items]


def _key(attr: Any, case_sensitive: bool) -> Callable[[Any], Any]:
    def key(item: Any) -> Any:
        value = defined(attribute_of(item, attr)) if attr is not None else item
        number = number_from_text(value)
        if number is not None:  # prices sent as text sort as the numbers they are
            return number
        return value.lower() if isinstance(value, str) and not case_sensitive else value

    return key


def _compare(key: Callable[[Any], Any]) -> Callable[[Any, Any], int]:
    def compare(a: Any, b: Any) -> int:
        left, right = key(a), key(b)
        if ordered(left, right, "lt"):
            return -1
        return 1 if ordered(left, right, "gt") else 0

    return compare


def _sort(
    value: Any, reverse: bool = False, case_sensitive: bool = False, attribute: Any = None
) -> list[Any]:
    items = _items(value, "sort")
    order = functools.cmp_to_key(_compare(_key(attribute, case_sensitive)))
    return sorted(items, key=order, reverse=bool(reverse))


def _extreme(pick: str) -> Callable[..., Any]:
    def extreme(value: Any, case_sensitive: bool = False, attribute: Any = None) -> Any:
        items = _items(value, pick)
        if not items:
            return None
        order = functools.cmp_to_key(_compare(_key(attribute, case_sensitive)))
        return (min if pick == "min" else max)(items, key=order)

    return extreme


def _sum(value: Any, attribute: Any = None, start: Any = 0) -> Any:
    total = start
    for item in _items(value, "sum"):
        amount = defined(attribute_of(item, attribute)) if attribute else item
        number = number_from_text(amount)
        total = total + (number if number is not None else amount)
    return total


def _unique(value: Any, case_sensitive: bool = False, attribute: Any = None) -> list[Any]:
    key = _key(attribute, case_sensitive)
    seen: list[Any] = []
    kept: list[Any] = []
    for item in _items(value, "unique"):
        marker = key(item)
        if marker not in seen:
            seen.append(marker)
            kept.append(item)
    return kept


LIST_FILTERS: dict[str, Callable[..., Any]] = {
    "select": functools.partial(_select, keep=True, what="select"),
    "reject": functools.partial(_select, keep=False, what="reject"),
    "selectattr": functools.partial(_selectattr, keep=True, what="selectattr"),
    "rejectattr": functools.partial(_selectattr, keep=False, what="rejectattr"),
    "map": _map,
    "sum": _sum,
    "min": _extreme("min"),
    "max": _extreme("max"),
    "unique": _unique,
    "sort": _sort,
}
# Filters whose first argument names a test (select, reject) or, after the attribute,
# the test (selectattr, rejectattr), or a filter (map): checked when compiled.
TEST_ARGUMENT = {"select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}
FILTER_ARGUMENT = {"map": 0}
