"""The names expressions and templates read for one customer: profile and history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, tzinfo
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from journeyman.contracts import ExprContext
from journeyman.customers.clock import zone
from journeyman.customers.identity import MERGE_DEPTH as MERGE_DEPTH  # intake's bound too
from journeyman.customers.identity import customer_behind
from journeyman.dsl.evaluate import (
    ExpressionError,
    is_anniversary,
    number_from_text,
    to_datetime,
    values_equal,
)
from journeyman.messaging.catalogs import lookup_functions
from journeyman.storage.models import Customer, Event, profile_of


def find_customer(session: Session, customer_id: str) -> Customer | None:
    """The customer behind `customer_id`, following a merge of an anonymous id.

    A run that started under an anonymous id keeps that id after the visitor
    identified; it reads the known customer's profile and history from here on.
    """
    return customer_behind(session, customer_id)


def expression_names(
    session: Session, customer_id: str, context: ExprContext, default_timezone: str = "UTC"
) -> dict[str, Any]:
    """Everything expressions and templates may read, for one customer at one moment.
    `default_timezone`: the customer's clock when their profile has no (known) zone."""
    customer = find_customer(session, customer_id)
    # A customer with no row yet (nothing identified them) still has every field.
    profile = (
        customer.as_profile()
        if customer
        else profile_of(customer_id, None, None, None, None, None, None)
    )
    history_id = customer.id if customer else customer_id
    tz = zone(customer.timezone if customer else None, default_timezone)
    return {
        "profile": profile,
        "event": context.event.as_names(),
        "trigger": context.trigger.as_names(),
        "journey": context.journey,
        "now": context.now,
        "steps": context.steps,
        **history_functions(session, history_id, context.now),
        **clock_names(context.now, tz),
        **lookup_functions(session, history_id, context.now),
    }


def clock_names(now: datetime, tz: tzinfo) -> dict[str, Any]:
    """The customer's clock: `today` (their local date), `local(instant)` (that instant on
    their clock: `local(now).hour`) and `anniversary(date)` (its month and day is today)."""
    today = now.astimezone(tz).date()
    return {
        "today": today,
        "local": lambda value: to_datetime(value).astimezone(tz),
        "anniversary": lambda value: is_anniversary(value, today),
    }


def history_functions(
    session: Session, customer_id: str, now: datetime
) -> dict[str, Callable[..., Any]]:
    """`last(name, **props)` and `count(name, within=..., **props)` over the customer's
    stored events; `props` keep the events whose properties equal them (DSL v2)."""

    def last(name: str, **props: Any) -> dict[str, Any] | None:
        query = select(Event).where(
            Event.customer_id == customer_id, Event.name == name, Event.timestamp <= now
        )
        query = _with_properties(query, props).order_by(Event.timestamp.desc(), Event.id.desc())
        if not props:
            row = session.scalar(query.limit(1))
            return None if row is None else _event_names(row)
        for row in session.scalars(query.execution_options(yield_per=HISTORY_BATCH)):
            if _has_properties(row, props):
                return _event_names(row)
        return None

    def count(name: str, within: timedelta | None = None, **props: Any) -> int:
        where = [Event.customer_id == customer_id, Event.name == name, Event.timestamp <= now]
        if within is not None:
            where.append(Event.timestamp > now - _duration(within))
        if not props:
            return int(session.scalar(select(func.count()).where(*where)) or 0)
        query = _with_properties(select(Event.properties).where(*where), props)
        rows = session.scalars(query.execution_options(yield_per=HISTORY_BATCH))
        return sum(1 for properties in rows if _properties_match(properties, props))

    def recent(name: str, within: timedelta | None = None, limit: int = 10) -> list[dict[str, Any]]:
        """The latest such events, newest first: for "still thinking about these?"."""
        query = select(Event).where(
            Event.customer_id == customer_id, Event.name == name, Event.timestamp <= now
        )
        if within is not None:
            query = query.where(Event.timestamp > now - within)
        limit = max(1, min(int(limit), 100))
        rows = session.scalars(query.order_by(Event.timestamp.desc(), Event.id.desc()).limit(limit))
        return [_event_names(row) for row in rows]

    return {"last": last, "count": count, "recent": recent}


# Rows fetched at a time when property filters are checked in Python.
HISTORY_BATCH = 500


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    raise ExpressionError(f"within= takes a duration such as days(30) or hours(24), got {value!r}")


def _with_properties(query: Any, props: dict[str, Any]) -> Any:
    """Narrow the query in SQL by the filters that are plain text: `properties ->> key`
    reads the same on SQLite and PostgreSQL. Numbers (which may be stored as text),
    booleans and none are checked in Python, by `_properties_match`, on every row."""
    for key, value in props.items():
        if isinstance(value, str) and number_from_text(value) is None:
            query = query.where(Event.properties[key].as_string() == value)
    return query


def _has_properties(row: Event, props: dict[str, Any]) -> bool:
    return _properties_match(row.properties, props)


def _properties_match(properties: Any, props: dict[str, Any]) -> bool:
    """Each filter equals the event's property, as `==` in an expression would have it
    (a number sent as text equals the number)."""
    if not isinstance(properties, dict):
        return False
    return all(key in properties and values_equal(properties[key], v) for key, v in props.items())


def _event_names(row: Event) -> dict[str, Any]:
    return {
        "event": row.name,
        "name": row.name,
        "properties": row.properties,
        "at": row.timestamp,
        "timestamp": row.timestamp,
    }
