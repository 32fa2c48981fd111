"""A small boolean algebra over SQL predicates, for the segment prefilter (pushdown.py).

Predicates are kept as formulas until the end so that what the three-valued reading of a
segment produces (`x and not x` in an error branch, the same `EXISTS` on both sides of
an `or`) is simplified before PostgreSQL or SQLite sees it: a contradiction is dropped,
a conjunct common to every branch of an `or` is factored out (the planner turns a
top-level `EXISTS` into a semi-join, never one inside an `OR`), and the cheap tests on
the profile's own row come before subqueries over the events.

`Atom`s are compared by `key` alone: two atoms with one key are the same predicate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement

# A reading of "cheap": a test on the customer's row against a subquery over the events.
ROW_COST = 1
SUBQUERY_COST = 20


@dataclass(frozen=True)
class Atom:
    key: tuple[Any, ...]
    sql: ColumnElement[bool] = field(compare=False, hash=False, repr=False)
    cost: int = field(default=ROW_COST, compare=False)


@dataclass(frozen=True)
class Not:
    of: Formula


@dataclass(frozen=True)
class All:
    of: frozenset[Formula]


@dataclass(frozen=True)
class Some:
    of: frozenset[Formula]


Formula = bool | Atom | Not | All | Some


def neg(formula: Formula) -> Formula:
    if isinstance(formula, bool):
        return not formula
    if isinstance(formula, Not):
        return formula.of
    return Not(formula)


def conj(*formulas: Formula) -> Formula:
    """`a and b and ...`, simplified."""
    members: set[Formula] = set()
    for formula in formulas:
        if formula is False:
            return False
        if formula is True:
            continue
        members.update(formula.of if isinstance(formula, All) else (formula,))
    if any(neg(member) in members for member in members):
        return False
    return _single(members, All, empty=True)


def disj(*formulas: Formula) -> Formula:
    """`a or b or ...`, simplified, with the conjuncts common to every branch factored out."""
    members: set[Formula] = set()
    for formula in formulas:
        if formula is True:
            return True
        if formula is False:
            continue
        members.update(formula.of if isinstance(formula, Some) else (formula,))
    if any(neg(member) in members for member in members):
        return True
    if len(members) > 1:
        parts = [set(m.of) if isinstance(m, All) else {m} for m in members]
        common = parts[0].intersection(*parts[1:])
        if common:
            return conj(*common, disj(*(conj(*(part - common)) for part in parts)))
    return _single(members, Some, empty=False)


def _single(members: set[Formula], kind: type[All] | type[Some], *, empty: bool) -> Formula:
    if not members:
        return empty
    if len(members) == 1:
        return next(iter(members))
    return kind(frozenset(members))


def cost(formula: Formula) -> int:
    if isinstance(formula, bool):
        return 0
    if isinstance(formula, Atom):
        return formula.cost
    if isinstance(formula, Not):
        return cost(formula.of)
    return sum(cost(member) for member in formula.of)


def to_sql(formula: Formula) -> ColumnElement[bool]:
    """The formula as a SQLAlchemy predicate; cheaper members first in `and`/`or`."""
    if isinstance(formula, bool):
        return true() if formula else not_(true())
    if isinstance(formula, Atom):
        return formula.sql
    if isinstance(formula, Not):
        return not_(to_sql(formula.of))
    members = sorted(formula.of, key=lambda m: (cost(m), repr(m)))
    combine = and_ if isinstance(formula, All) else or_
    return combine(*(to_sql(member) for member in members))
