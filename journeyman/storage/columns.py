"""Column types and values the tables share: timezone-aware UTC datetimes, the serial id
and made-at columns, and the fixed values some text columns may hold (as `Literal`s,
checked by mypy where code writes them; stored as plain text)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from sqlalchemy import ColumnElement, DateTime, Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def one_of(column: ColumnElement[Any], name: str, postgres: bool) -> ColumnElement[bool]:
    """`column` is one of the values of the list bound as `name`. On PostgreSQL,
    `= ANY(array)`: one parameter however long the list, so the statement's text stays
    the same and psycopg prepares it once, where an expanding `IN` renders a placeholder
    per value and, for each length, a new text that SQLAlchemy renders and the server
    parses and plans anew (issue 19: the hot statements of intake and the dispatcher).
    Elsewhere (SQLite) an expanding `IN`. Statements using it are built once for each
    (`postgres` True or False) and picked by the connection's dialect."""
    if postgres:
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# The values a column may hold, where they are a fixed few (stored as text).
RunStatus = Literal["running", "completed"]
ConsentScope = Literal["channel", "topic"]
# Why an address takes no more messages: a hard bounce, a spam report, a number or
# address a provider refused for good.
SuppressionReason = Literal["bounced", "spam_report", "invalid"]
ContactChannel = Literal["email", "sms"]
ConfirmedBy = Literal["link", "server"]
OperatorActionKind = Literal["skip_wait", "move_to", "end_run", "pause", "resume"]
TickKind = Literal["schedule", "broadcast"]

# Columns of many tables, declared once: a table's own serial id, and the time a row
# was made (or, for some, last set), filled in by the application when not given.
Serial = Annotated[int, mapped_column(Integer, primary_key=True, autoincrement=True)]
Stamped = Annotated[datetime, mapped_column(default=utcnow)]
