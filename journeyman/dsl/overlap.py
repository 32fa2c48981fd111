"""Two enabled journeys that one event can both start: a warning, not an error.

Journeys entered on the same event, with the same subscription topic, whose entry
conditions can both hold, both take the customer: the shipped `order_ready_for_pickup`
and a marketer's new pickup journey would both text them. `validate` and `deploy` warn.

Conditions are compared conservatively: two are *exclusive* only when each is a chain
of `and`-ed comparisons and one comparison of each, on the same value
(`event.properties.store`), cannot hold together (`== 'north'` and `== 'south'`,
`>= 20` and `< 20`, `in ['a', 'b']` and `== 'c'`). Anything else may overlap, and is
warned about: a false alarm costs a look, a missed one a doubled message.
"""

from __future__ import annotations

import json
import math
from itertools import combinations
from pathlib import Path
from typing import Any

from journeyman.dsl.compiler import Compiled
from journeyman.dsl.errors import Problem

Atom = tuple[str, str, Any]  # (the value compared, as JSON; operator; literal)
_FLIPPED = {"lt": "gt", "lteq": "gteq", "gt": "lt", "gteq": "lteq", "eq": "eq", "ne": "ne"}


def overlap_warnings(compiled: list[Compiled]) -> list[Problem]:
    """One warning per pair of enabled journeys one event can both start."""
    entering = [
        c
        for c in compiled
        if c.plan.journey.entry.event is not None and getattr(c.plan.journey, "enabled", True)
    ]
    problems = []
    for first, second in combinations(sorted(entering, key=lambda c: c.plan.journey.id), 2):
        a, b = first.plan.journey, second.plan.journey
        if a.entry.event != b.entry.event or a.topic != b.topic:
            continue
        when_a = a.entry.when.tree if a.entry.when is not None else None
        when_b = b.entry.when.tree if b.entry.when is not None else None
        if exclusive(when_a, when_b):
            continue
        topic = f" with topic {a.topic}" if a.topic else ""
        message = (
            f"journeys {a.id} and {b.id} both enter on `{a.entry.event}`{topic} and their "
            "entry conditions can both hold: one event starts both (one customer gets both "
            "journeys' messages); make the conditions exclusive, or switch one off"
        )
        line = _entry_line(second.path)
        problems.append(Problem(str(second.path), line, 1, message, "warning"))
    return problems


def exclusive(a: Any, b: Any) -> bool:
    """Whether conditions `a` and `b` (trees; None: always true) cannot both hold."""
    if a is None or b is None:
        return False
    atoms_a, atoms_b = _conjuncts(a), _conjuncts(b)
    return any(_contradict(x, y) for x in atoms_a for y in atoms_b if x[0] == y[0])


def _conjuncts(tree: Any) -> list[Atom]:
    """The comparisons a condition requires all of (the ones this module understands)."""
    if isinstance(tree, list) and tree and tree[0] == "and":
        return _conjuncts(tree[1]) + _conjuncts(tree[2])
    atom = _atom(tree)
    return [atom] if atom is not None else []


def _atom(tree: Any) -> Atom | None:
    if _is_path(tree):  # `profile.vip`
        return (json.dumps(tree), "truthy", None)
    if isinstance(tree, list) and len(tree) == 2 and tree[0] == "not" and _is_path(tree[1]):
        return (json.dumps(tree[1]), "falsy", None)
    if not (isinstance(tree, list) and len(tree) == 3 and tree[0] == "cmp"):
        return None
    left, operations = tree[1], tree[2]
    if len(operations) != 1:
        return None
    op, right = operations[0]
    if _is_literal(right) and _is_path(left):
        return (json.dumps(left), op, _literal(right))
    if _is_literal(left) and _is_path(right) and op in _FLIPPED:
        return (json.dumps(right), _FLIPPED[op], _literal(left))
    return None


def _is_path(tree: Any) -> bool:
    if not isinstance(tree, list) or not tree:
        return False
    if tree[0] == "name":
        return True
    if tree[0] == "attr":
        return _is_path(tree[1])
    if tree[0] == "item":
        return _is_path(tree[1]) and _is_literal(tree[2])
    return False


def _is_literal(tree: Any) -> bool:
    if not isinstance(tree, list) or not tree:
        return False
    if tree[0] == "lit":
        return True
    return tree[0] == "list" and all(_is_literal(item) for item in tree[1])


def _literal(tree: Any) -> Any:
    if tree[0] == "lit":
        return tree[1]
    return [_literal(item) for item in tree[1]]


def _contradict(x: Atom, y: Atom) -> bool:
    """Whether comparisons x and y of one value cannot both hold."""
    return _excludes(x, y) or _excludes(y, x)


def _excludes(x: Atom, y: Atom) -> bool:
    _, op_x, value_x = x
    _, op_y, value_y = y
    if {op_x, op_y} == {"truthy", "falsy"}:
        return True
    if "truthy" in (op_x, op_y) or "falsy" in (op_x, op_y):
        return False
    if op_x == "eq":
        return not _holds(value_x, op_y, value_y)
    if op_x == "in" and isinstance(value_x, list):
        return all(not _holds(v, op_y, value_y) for v in value_x)
    interval_x, interval_y = _interval(op_x, value_x), _interval(op_y, value_y)
    if interval_x is None or interval_y is None:
        return False
    (low_x, low_open_x), (high_x, high_open_x) = interval_x
    (low_y, low_open_y), (high_y, high_open_y) = interval_y
    low = max(low_x, low_y)
    low_open = (low_x == low and low_open_x) or (low_y == low and low_open_y)
    high = min(high_x, high_y)
    high_open = (high_x == high and high_open_x) or (high_y == high and high_open_y)
    return low > high or (low == high and (low_open or high_open))


def _holds(value: Any, op: str, literal: Any) -> bool:
    """Whether `value <op> literal` holds (True when it cannot be told: may overlap)."""
    try:
        if op == "eq":
            return bool(value == literal)
        if op == "ne":
            return bool(value != literal)
        if op == "in":
            return value in literal if isinstance(literal, list) else True
        if op == "notin":
            return value not in literal if isinstance(literal, list) else True
        if not _number(value) or not _number(literal):
            return True
        return bool(
            {
                "lt": value < literal,
                "lteq": value <= literal,
                "gt": value > literal,
                "gteq": value >= literal,
            }.get(op, True)
        )
    except TypeError:
        return True


def _interval(op: str, value: Any) -> tuple[tuple[float, bool], tuple[float, bool]] | None:
    """A numeric comparison as ((low, open), (high, open)); None for other comparisons."""
    if not _number(value):
        return None
    infinite = math.inf
    return {
        "lt": ((-infinite, True), (value, True)),
        "lteq": ((-infinite, True), (value, False)),
        "gt": ((value, True), (infinite, True)),
        "gteq": ((value, False), (infinite, True)),
    }.get(op)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _entry_line(path: Path) -> int:
    """The line of `entry:` in the file (1 when it cannot be read)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return 1
    return next((n for n, text in enumerate(lines, 1) if text.startswith("entry:")), 1)
