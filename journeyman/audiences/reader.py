"""What SQL reads of a profile and of its history, the same on SQLite and PostgreSQL.

Every predicate made here is TRUE or FALSE, never NULL, for the rows it is meant for
(a trait's comparisons for the profiles whose trait has the kind they read), and
wrapped so that no row makes the database raise: text is cast to a number only under a
`CASE` that has checked it spells one, since PostgreSQL does not promise the order in
which it evaluates the members of an `AND`.

The JSON kinds of a trait: `missing` (no such key), `null`, `true`, `false`, `number`,
`string`, `array`, `object`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Float, Numeric, String, case, cast, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from journeyman.audiences.formula import SUBQUERY_COST, Atom
from journeyman.storage.models import Customer, Event

KINDS = ("missing", "null", "true", "false", "number", "string", "array", "object")
# The whitespace both Python's `str.strip()` and these trims remove (Python removes more:
# text with other spaces around a number is left to Python, see `decimal`).
WHITESPACE = " \t\n\r\f\v"
# `number_from_text` reads at most this many characters (journeyman/dsl/evaluate.py).
MAX_NUMBER_TEXT = 40
_SQLITE_KIND = {
    "null": "null",
    "true": "true",
    "false": "false",
    "integer": "number",
    "real": "number",
    "text": "string",
    "array": "array",
    "object": "object",
}


class Reader:
    """SQL for one dialect (`sqlite` or `postgresql`) and one tick's time `at`."""

    def __init__(self, dialect: str, at: datetime) -> None:
        self.postgres = dialect == "postgresql"
        self.at = at

    # -- traits ----------------------------------------------------------------------

    def trait_kind(self, key: str, kind: str) -> ColumnElement[bool]:
        """Whether the trait is of `kind`, one of KINDS (never NULL)."""
        if self.postgres:
            if kind == "missing":  # `->` is NULL for no such key only (JSON null is 'null')
                return Customer.traits[key].is_(None)
            typeof = func.json_typeof(Customer.traits[key])
            if kind in ("true", "false"):
                return func.coalesce((typeof == "boolean") & (self.trait_text(key) == kind), False)
            return func.coalesce(typeof == kind, False)
        typeof = func.json_type(Customer.traits, f'$."{key}"')
        if kind == "missing":
            return typeof.is_(None)
        raw = [name for name, known in _SQLITE_KIND.items() if known == kind]
        return func.coalesce(typeof.in_(raw), False)

    def trait_text(self, key: str) -> ColumnElement[Any]:
        """The trait as text (meant for string traits)."""
        if self.postgres:
            return Customer.traits[key].as_string()
        return func.json_extract(Customer.traits, f'$."{key}"')

    def trait_number(self, key: str) -> ColumnElement[Any]:
        """The trait as a number where its kind is `number`, else NULL."""
        number = self.trait_kind(key, "number")
        if self.postgres:
            return case((number, cast(self.trait_text(key), Numeric)), else_=None)
        return case((number, func.json_extract(Customer.traits, f'$."{key}"')))

    # -- text that may spell a number ------------------------------------------------

    def decimal(self, text: ColumnElement[Any]) -> ColumnElement[bool]:
        """Text that `number_from_text` surely reads as a number: at most 40 characters,
        a plain decimal (`4`, `-4.5`, `.5`, `5.`) between ASCII spaces."""
        trimmed = self._trim(text)
        short = func.length(text) <= MAX_NUMBER_TEXT
        if self.postgres:
            return func.coalesce(
                short & trimmed.op("~", is_comparison=True)(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$"),
                False,
            )
        body = case(
            (func.substr(trimmed, 1, 1).in_(["+", "-"]), func.substr(trimmed, 2)), else_=trimmed
        )
        dots = func.length(body) - func.length(func.replace(body, ".", ""))
        return func.coalesce(
            short
            & (body != "")
            & body.op("NOT GLOB", is_comparison=True)("*[^0-9.]*")
            & body.op("GLOB", is_comparison=True)("*[0-9]*")
            & (dots <= 1),
            False,
        )

    def without_digit(self, text: ColumnElement[Any]) -> ColumnElement[bool]:
        """Text with no ASCII digit, which spells no number and no instant."""
        if self.postgres:
            return func.coalesce(text.op("!~", is_comparison=True)("[0-9]"), False)
        return func.coalesce(text.op("NOT GLOB", is_comparison=True)("*[0-9]*"), False)

    def text_number(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        """The number text spells where `decimal(text)` holds, else NULL."""
        kind = Numeric if self.postgres else Float
        return case((self.decimal(text), cast(self._trim(text), kind)), else_=None)

    def _trim(self, text: ColumnElement[Any]) -> ColumnElement[Any]:
        return (func.btrim if self.postgres else func.trim)(text, WHITESPACE)

    def number(self, value: float) -> ColumnElement[Any]:
        """A bound number compared with `trait_number` or `text_number` values."""
        if self.postgres:
            return literal(Decimal(repr(value)), Numeric)
        return literal(value, Float)

    def text(self, value: str) -> ColumnElement[Any]:
        """A bound text compared in code point order, as Python compares strings."""
        if self.postgres:
            return literal(value, String).collate("C")
        return literal(value, String)

    # -- history ---------------------------------------------------------------------

    def events(self, name: str, after: datetime | None, *, inclusive: bool = False) -> Atom:
        """Whether the customer has a `name` event at or before `at`, after `after`
        (or at it, `inclusive`)."""
        where = [Event.customer_id == Customer.id, Event.name == name, Event.timestamp <= self.at]
        if after is not None:
            where.append(Event.timestamp >= after if inclusive else Event.timestamp > after)
        sql = select(literal(1)).where(*where).exists()
        return Atom(("events", name, after, inclusive), sql, SUBQUERY_COST)

    def count(self, name: str, within: timedelta | None) -> ColumnElement[Any]:
        """How many `name` events within `within` before `at` (all, with None)."""
        where = [Event.customer_id == Customer.id, Event.name == name, Event.timestamp <= self.at]
        if within is not None:
            where.append(Event.timestamp > self.at - within)
        return select(func.count()).where(*where).scalar_subquery()
