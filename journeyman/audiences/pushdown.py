"""The part of a segment that SQL can answer: a prefilter, never the verdict.

A tick used to evaluate the segment in Python for every profile. `prefilter` turns the
compiled expression into a SQL predicate that every customer the segment matches, and
every customer whose evaluation fails, satisfies; the tick reads only those rows and
evaluates the segment on them in Python, as before. The SQL narrows, Python decides, so
entries, matches and errors are the same whatever the SQL could not read.

Each sub-expression is read three ways (`Outcome`): where it *may* be truthy, where it
*may* be falsy, where it *may* fail; a failure is never a false (it is counted against
the customer, journeyman/audiences/segments.py), so the prefilter is `true or error` of
the whole segment. What is pushed down:

- comparisons of a profile field (`profile.tier`, `profile['tier']`: a JSON trait or a
  column) with a value known before the tick (literals, `now - days(30)`, `journey.id`),
  per JSON kind of the trait and with DSL v2's numbers sent as text; numbers are
  compared with a margin (`MARGIN`) so that rounding in SQL never decides: a value
  within it of the bound is left to Python;
- `last(name)`, `last(name).at` (or `.timestamp`) compared with an instant, `count(name,
  within=...)` compared with a number, over the events index;
- `and`, `or`, `not`, `is defined`, `is none`, and the truthiness of a trait.

Anything else (filters, `today`, `anniversary()`, property filters, arithmetic over
history, chained comparisons) is "may be anything" and leaves the rows to Python.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, func
from sqlalchemy.sql.elements import ColumnElement

from journeyman.audiences.formula import (
    ROW_COST,
    SUBQUERY_COST,
    Atom,
    Formula,
    conj,
    disj,
    neg,
    to_sql,
)
from journeyman.audiences.reader import KINDS, Reader
from journeyman.dsl.evaluate import (
    PURE_FUNCTIONS,
    ExpressionError,
    evaluate,
    names_used,
)
from journeyman.dsl.values import instant_from_text, number_from_text
from journeyman.storage.models import Customer

Node = list[Any]
# Relative margin around a number bound: SQL reads numbers as decimals or doubles, Python
# as ints and doubles; they differ by far less than this.
MARGIN = 1e-9
# The profile fields that are columns, not traits (`profile_of`); `push_tokens` is a list.
COLUMNS = ("id", "email", "phone", "timezone", "locale")
_JSON_NUMBER_TEXT = re.compile(r"[-+0-9.eE]*")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_FLIP = {"eq": "eq", "ne": "ne", "lt": "gt", "gt": "lt", "lteq": "gteq", "gteq": "lteq"}
_NOT = {"eq": "ne", "ne": "eq", "lt": "gteq", "gteq": "lt", "gt": "lteq", "lteq": "gt"}
# More events of one name than a customer can have: no SQL integer overflows on a bound.
MAX_COUNT = 2**62
# A prefilter with more atoms than this (deeply nested segments) is not worth its SQL.
MAX_ATOMS = 400


@dataclass(frozen=True)
class Outcome:
    """Where a sub-expression may be truthy, falsy, or fail (supersets, never less)."""

    true: Formula
    false: Formula
    error: Formula


UNKNOWN = Outcome(True, True, True)
FAILS = Outcome(False, False, True)


def prefilter(
    tree: Node, *, at: datetime, journey: dict[str, Any], dialect: str
) -> ColumnElement[bool] | None:
    """A predicate on `customers` true for every customer the segment may match or fail
    for at `at`; None when SQL can narrow nothing."""
    outcome = Pushdown(Reader(dialect, at), at, journey).outcome(tree)
    where = disj(outcome.true, outcome.error)
    if where is True or _atoms(where) > MAX_ATOMS:
        return None
    return to_sql(where)


def _atoms(formula: Formula) -> int:
    if isinstance(formula, bool):
        return 0
    if isinstance(formula, Atom):
        return 1
    members = (formula.of,) if not isinstance(formula.of, frozenset) else formula.of
    return sum(_atoms(member) for member in members)


@dataclass(frozen=True)
class Field:
    name: str  # a column of COLUMNS, or a trait


@dataclass(frozen=True)
class LastAt:
    event: str


@dataclass(frozen=True)
class Count:
    event: str
    within: timedelta | None


@dataclass(frozen=True)
class Constant:
    value: Any
    fails: bool = False


Operand = Field | LastAt | Count | Constant


class Pushdown:
    def __init__(self, reader: Reader, at: datetime, journey: dict[str, Any]) -> None:
        self.sql = reader
        self.at = at
        self.constants = {"now": at, "journey": journey}

    def outcome(self, node: Node) -> Outcome:
        constant = self.constant(node)
        if constant is not None:
            return _truth(constant)
        kind = node[0]
        if kind in ("and", "or"):
            a, b = self.outcome(node[1]), self.outcome(node[2])
            return _and(a, b) if kind == "and" else _or(a, b)
        if kind == "not":
            inner = self.outcome(node[1])
            return Outcome(inner.false, inner.true, inner.error)
        if kind == "cmp" and len(node[2]) == 1:
            ((op, right),) = node[2]
            return self.compare(node[1], op, right)
        if kind == "test" and not node[3]:
            return self.test(node[1], node[2])
        last = _history_call(node, "last")
        if last is not None:
            some = self.sql.events(last[0], None)
            return Outcome(some, neg(some), False)
        operand = self.operand(node)
        if operand is not None:
            return self.truthiness(operand)
        return UNKNOWN

    # -- values known before the tick ------------------------------------------------

    def constant(self, node: Node) -> Constant | None:
        """The value of a sub-expression that reads only `now`, `journey` and literals."""
        if not names_used(node) <= {*self.constants, *PURE_FUNCTIONS}:
            return None
        try:
            return Constant(evaluate(node, self.constants))
        except ExpressionError:
            return Constant(None, fails=True)
        except Exception:  # not ours to judge: Python will, on every row
            return None

    def operand(self, node: Node) -> Operand | None:
        constant = self.constant(node)
        if constant is not None:
            return constant
        key = _profile_key(node)
        if key is not None:
            return Field(key) if key in COLUMNS or _KEY.fullmatch(key) else None
        if node[0] == "attr" and node[2] in ("at", "timestamp"):
            last = _history_call(node[1], "last")
            return LastAt(last[0]) if last is not None else None
        name = _history_call(node, "count")
        if name is not None:
            within = self.constant(name[1]) if name[1] is not None else Constant(None)
            if within is None or within.fails:
                return None
            if within.value is None or isinstance(within.value, timedelta):
                return Count(name[0], within.value)
        return None

    # -- comparisons -----------------------------------------------------------------

    def compare(self, left_node: Node, op: str, right_node: Node) -> Outcome:
        if op not in _FLIP:
            return UNKNOWN
        left, right = self.operand(left_node), self.operand(right_node)
        if left is None or right is None:
            return UNKNOWN
        if isinstance(left, Constant) and not isinstance(right, Constant):
            left, op, right = right, _FLIP[op], left
        if isinstance(left, Constant) or not isinstance(right, Constant):
            return UNKNOWN
        if right.fails:
            return FAILS
        if isinstance(left, Field):
            return self.field_compare(left.name, op, right.value)
        if isinstance(left, Count):
            return self.count_compare(left, op, right.value)
        return self.last_compare(left.event, op, right.value)

    def field_compare(self, name: str, op: str, value: Any) -> Outcome:
        if isinstance(value, list | dict):
            return UNKNOWN
        number = _numeric(value)
        outcomes: dict[str, Outcome] = {}
        for kind in self._kinds(name):
            if kind == "number":
                outcomes[kind] = (
                    _representative(0, op, value)
                    if number is None
                    else self._numbers(("trait", name), self._number(name), op, number)
                )
            elif kind == "string":
                outcomes[kind] = self._string_compare(name, op, value)
            elif kind == "missing":
                outcomes[kind] = FAILS
            else:
                outcomes[kind] = _representative(_SAMPLES[kind], op, value)
        outcome = self._by_kind(name, outcomes)
        if op == "eq" and isinstance(value, str) and _only_text_reads_as(value):
            # Only a string trait reads as this text: the kind need not be checked, and
            # each row parses its JSON once less.
            text = self.sql.text(value)
            equal = _atom(("text", name, op, value), _compare_text(self._text(name), op, text))
            return Outcome(equal, outcome.false, outcome.error)
        return outcome

    def _string_compare(self, name: str, op: str, value: Any) -> Outcome:
        text = self._text(name)
        if isinstance(value, str):
            true = _compare_text(text, op, self.sql.text(value))
            false = _compare_text(text, _NOT[op], self.sql.text(value))
            return Outcome(
                _atom(("text", name, op, value), true),
                _atom(("text", name, _NOT[op], value), false),
                False,
            )
        no_digit = _atom(("no-digit", name), self.sql.without_digit(text))
        plain = _representative("x", op, value)
        if isinstance(value, bool) or not isinstance(value, int | float | datetime):
            return plain  # text never meets these as a number or an instant
        if isinstance(value, datetime):
            return _union(_restrict(plain, no_digit), _restrict(UNKNOWN, neg(no_digit)))
        decimal = _atom(("decimal", name), self.sql.decimal(text))
        other = _restrict(UNKNOWN, conj(neg(no_digit), neg(decimal)))
        spelled = self._numbers(("text-number", name), self.sql.text_number(text), op, value)
        return _union(_restrict(plain, no_digit), _restrict(spelled, decimal), other)

    def _numbers(self, what: tuple[Any, ...], sql: Any, op: str, bound: float) -> Outcome:
        """`value op bound` for numbers read by SQL, with MARGIN either side of the bound."""
        try:
            margin = MARGIN * max(1.0, abs(float(bound)))
            low, high = float(bound) - margin, float(bound) + margin
        except OverflowError:
            return UNKNOWN
        below = _atom((*what, "<", high), sql < self.sql.number(high))
        above = _atom((*what, ">", low), sql > self.sql.number(low))
        near = conj(below, above)
        if op in ("lt", "lteq"):
            return Outcome(below, above, False)
        if op in ("gt", "gteq"):
            return Outcome(above, below, False)
        return Outcome(near, True, False) if op == "eq" else Outcome(True, near, False)

    def count_compare(self, count: Count, op: str, value: Any) -> Outcome:
        number = _numeric(value)
        if number is None:
            return _representative(0, op, value)
        exists = self.sql.events(count.event, _since(self.at, count.within))
        sql = self.sql.count(count.event, count.within)

        def at_least(k: int) -> Formula:
            if k <= 0:
                return True
            if k > MAX_COUNT:
                return False
            if k == 1:
                return exists
            return _atom(("count", count.event, count.within, ">=", k), sql >= k, SUBQUERY_COST)

        if op in ("gt", "gteq"):
            k = math.floor(number) + 1 if op == "gt" else math.ceil(number)
            return Outcome(at_least(k), neg(at_least(k)), False)
        if op in ("lt", "lteq"):
            k = math.ceil(number) if op == "lt" else math.floor(number) + 1
            return Outcome(neg(at_least(k)), at_least(k), False)
        if number != math.floor(number) or number < 0:
            equal: Formula = False
        else:
            k = int(number)
            equal = conj(at_least(k), neg(at_least(k + 1)))
        return (
            Outcome(equal, neg(equal), False) if op == "eq" else Outcome(neg(equal), equal, False)
        )

    def last_compare(self, event: str, op: str, value: Any) -> Outcome:
        some = self.sql.events(event, None)
        if isinstance(value, str) and instant_from_text(value) is not None:
            value = instant_from_text(value)
        if not isinstance(value, datetime) or value.tzinfo is None:
            found = _representative(self.at, op, value)
            return Outcome(
                conj(some, found.true),
                conj(some, found.false),
                disj(neg(some), conj(some, found.error)),
            )
        later = self.sql.events(event, value)  # an event after the bound
        from_bound = self.sql.events(event, value, inclusive=True)
        true = {
            "lt": conj(some, neg(from_bound)),
            "lteq": conj(some, neg(later)),
            "gt": later,
            "gteq": from_bound,
            "eq": conj(from_bound, neg(later)),
            "ne": some,
        }[op]
        false = {
            "lt": from_bound,
            "lteq": later,
            "gt": conj(some, neg(later)),
            "gteq": conj(some, neg(from_bound)),
            "eq": some,
            "ne": conj(from_bound, neg(later)),
        }[op]
        return Outcome(true, false, neg(some))

    # -- tests and truthiness --------------------------------------------------------

    def test(self, name: str, node: Node) -> Outcome:
        operand = self.operand(node)
        if not isinstance(operand, Field) or name not in ("defined", "undefined", "none"):
            return UNKNOWN
        outcomes: dict[str, Outcome] = {}
        for kind in self._kinds(operand.name):
            if name == "none":
                value = FAILS if kind == "missing" else _known(kind == "null")
            else:
                value = _known((kind == "missing") == (name == "undefined"))
            outcomes[kind] = value
        return self._by_kind(operand.name, outcomes)

    def truthiness(self, operand: Operand) -> Outcome:
        if isinstance(operand, Count):
            exists = self.sql.events(operand.event, _since(self.at, operand.within))
            return Outcome(exists, neg(exists), False)
        if not isinstance(operand, Field):
            return UNKNOWN
        outcomes: dict[str, Outcome] = {}
        for kind in self._kinds(operand.name):
            if kind == "string":
                filled = _atom(("text", operand.name, "ne", ""), self._text(operand.name) != "")
                empty = _atom(("text", operand.name, "eq", ""), self._text(operand.name) == "")
                outcomes[kind] = Outcome(filled, empty, False)
            elif kind in ("number", "array", "object"):
                outcomes[kind] = Outcome(True, True, False)
            else:
                outcomes[kind] = FAILS if kind == "missing" else _known(kind == "true")
        return self._by_kind(operand.name, outcomes)

    # -- profile fields --------------------------------------------------------------

    def _kinds(self, name: str) -> tuple[str, ...]:
        return ("null", "string") if name in COLUMNS else KINDS

    def _kind_is(self, name: str, kind: str) -> Formula:
        if name in COLUMNS:
            column = getattr(Customer, name)
            if name == "id":
                return kind == "string"
            sql = column.is_(None) if kind == "null" else column.is_not(None)
            return _atom(("column-kind", name, kind), sql)
        return _atom(("kind", name, kind), self.sql.trait_kind(name, kind))

    def _text(self, name: str) -> Any:
        return getattr(Customer, name) if name in COLUMNS else self.sql.trait_text(name)

    def _number(self, name: str) -> Any:
        return self.sql.trait_number(name)

    def _by_kind(self, name: str, outcomes: dict[str, Outcome]) -> Outcome:
        """One outcome from each kind's, each restricted to the profiles of that kind."""
        return _union(*(_restrict(o, self._kind_is(name, kind)) for kind, o in outcomes.items()))


def _atom(key: tuple[Any, ...], sql: Any, cost: int = ROW_COST) -> Atom:
    """A predicate made never NULL: NULL under a NOT would drop rows it must keep."""
    return Atom(key, func.coalesce(sql, False, type_=Boolean), cost)


def _compare_text(text: Any, op: str, value: Any) -> Any:
    return {
        "eq": text == value,
        "ne": text != value,
        "lt": text < value,
        "lteq": text <= value,
        "gt": text > value,
        "gteq": text >= value,
    }[op]


def _and(a: Outcome, b: Outcome) -> Outcome:
    return Outcome(
        conj(a.true, b.true),
        disj(a.false, conj(a.true, b.false)),
        disj(a.error, conj(a.true, b.error)),
    )


def _or(a: Outcome, b: Outcome) -> Outcome:
    return Outcome(
        disj(a.true, conj(a.false, b.true)),
        conj(a.false, b.false),
        disj(a.error, conj(a.false, b.error)),
    )


def _restrict(outcome: Outcome, where: Formula) -> Outcome:
    return Outcome(
        conj(where, outcome.true), conj(where, outcome.false), conj(where, outcome.error)
    )


def _union(*outcomes: Outcome) -> Outcome:
    return Outcome(
        disj(*(o.true for o in outcomes)),
        disj(*(o.false for o in outcomes)),
        disj(*(o.error for o in outcomes)),
    )


def _known(value: bool) -> Outcome:
    return Outcome(value, not value, False)


def _truth(constant: Constant) -> Outcome:
    return FAILS if constant.fails else _known(bool(constant.value))


# A value of each JSON kind whose comparison with a literal does not depend on which value
# of the kind it is (`None < 5` fails for every none): see `_representative`.
_SAMPLES: dict[str, Any] = {"null": None, "true": True, "false": False, "array": [], "object": {}}


def _representative(sample: Any, op: str, value: Any) -> Outcome:
    """The outcome of `sample op value` with the evaluator itself, for a kind of values
    that all compare with `value` alike (none, a boolean, text with no digit...)."""
    try:
        return _known(bool(evaluate(["cmp", ["lit", sample], [[op, ["lit", value]]]], {})))
    except ExpressionError:
        return FAILS
    except Exception:  # unforeseen: Python will judge, on every row
        return UNKNOWN


def _only_text_reads_as(value: str) -> bool:
    """Whether no trait but a string reads as `value` in SQL: not the text of a JSON
    number, boolean, none, list or object (`->>` on PostgreSQL, `json_extract` on SQLite)."""
    return not (
        _JSON_NUMBER_TEXT.fullmatch(value)
        or value in ("true", "false", "null")
        or value.startswith(("[", "{"))
    )


def _numeric(value: Any) -> float | int | None:
    """The number a value compares as against a number (DSL v2: text spelling one)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, date | timedelta):
        return None
    return number_from_text(value)


def _since(at: datetime, within: timedelta | None) -> datetime | None:
    return None if within is None else at - within


def _profile_key(node: Node) -> str | None:
    if len(node) < 3 or node[1] != ["name", "profile"]:
        return None
    if node[0] == "attr":
        return str(node[2])
    if node[0] == "item" and node[2][0] == "lit" and isinstance(node[2][1], str):
        return str(node[2][1])
    return None


def _history_call(node: Node, function: str) -> tuple[str, Node | None] | None:
    """The event name (and the `within` node) of `last('x')` / `count('x', within=...)`
    called with a literal name and nothing else."""
    if node[0] != "call" or node[1] != function:
        return None
    args, kwargs = node[2], node[3]
    if not args or args[0][0] != "lit" or not isinstance(args[0][1], str):
        return None
    within = args[1] if len(args) == 2 else kwargs.get("within")
    if len(args) > 2 or set(kwargs) - {"within"} or (len(args) == 2 and kwargs):
        return None
    if function == "last" and (len(args) > 1 or kwargs):
        return None
    return args[0][1], within
