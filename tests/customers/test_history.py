"""Expressions over a customer's stored history and clock, as activities evaluate them:
`last()`, `count(within=)`, `recent()`, `days()`/`hours()`/`minutes()`, and `today`,
`local()`, `anniversary()` in the customer's own time zone, at the edges of their day.
A segment's page-wide history (`PageHistory`) must answer exactly as the per-customer one.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journeyman.audiences.segments import PageHistory
from journeyman.contracts import CustomerEvent, ExprContext
from journeyman.customers.profiles import expression_names, history_functions
from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.expressions import compile_expression
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def add_customer(db: Database, customer_id: str, **columns: Any) -> None:
    traits = columns.pop("traits", {})
    with db.session() as session:
        session.add(Customer(id=customer_id, traits=traits, push_tokens=[], **columns))


def add_event(db: Database, customer_id: str, name: str, at: datetime, **properties: Any) -> None:
    with db.session() as session:
        count = session.query(Event).count()
        session.add(
            Event(
                message_id=f"m{count}-{customer_id}-{name}",
                type="track",
                customer_id=customer_id,
                name=name,
                properties=properties,
                timestamp=at,
            )
        )


def value(db: Database, text: str, customer_id: str = "c1", now: datetime = NOW) -> Any:
    """The expression evaluated for the customer at `now`, as the evaluate activity does."""
    event = CustomerEvent(message_id="x", name="check", timestamp=now)
    context = ExprContext(event=event, trigger=event, journey={"id": "j"}, now=now)
    with db.session() as session:
        names = expression_names(session, customer_id, context, default_timezone="UTC")
        return evaluate(compile_expression(text), names)


# -- last, count, recent --------------------------------------------------------------


def test_last_is_the_latest_such_event_until_now(db: Database) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=90), order_id="o1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=10), order_id="o2")
    add_event(db, "c1", "order_placed", NOW + timedelta(days=1), order_id="future")
    add_event(db, "c1", "cart_abandoned", NOW - timedelta(days=1))

    assert value(db, "last('order_placed').properties.order_id") == "o2"
    assert value(db, "last('order_placed').at") == NOW - timedelta(days=10)
    assert value(db, "last('never_happened')") is None
    assert value(db, "last('never_happened') and last('never_happened').at < now") is None


def test_last_of_two_events_at_the_same_instant_is_the_one_stored_last(db: Database) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=1), order_id="first")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=1), order_id="second")

    assert value(db, "last('order_placed').properties.order_id") == "second"


def test_lapsed_customer_condition_reads_the_last_order_against_now(db: Database) -> None:
    add_customer(db, "lapsed")
    add_customer(db, "recent")
    add_customer(db, "never")
    add_event(db, "lapsed", "order_placed", NOW - timedelta(days=61))
    add_event(db, "recent", "order_placed", NOW - timedelta(days=59))
    lapsed = "last('order_placed') and last('order_placed').at < now - days(60)"

    assert value(db, lapsed, "lapsed") is True
    assert value(db, lapsed, "recent") is False
    assert not value(db, lapsed, "never")


def test_count_within_is_a_window_that_ends_now_and_excludes_its_start(db: Database) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=30))  # exactly 30 days: out
    add_event(db, "c1", "order_placed", NOW - timedelta(days=30) + timedelta(seconds=1))
    add_event(db, "c1", "order_placed", NOW - timedelta(hours=5, minutes=59))
    add_event(db, "c1", "order_placed", NOW)  # now itself: in
    add_event(db, "c1", "order_placed", NOW + timedelta(seconds=1))  # the future: out

    assert value(db, "count('order_placed')") == 4
    assert value(db, "count('order_placed', within=days(30))") == 3
    assert value(db, "count('order_placed', within=hours(6))") == 2
    assert value(db, "count('order_placed', within=minutes(1))") == 1
    assert value(db, "count('other')") == 0


def test_recent_is_newest_first_within_its_window_and_limit(db: Database) -> None:
    add_customer(db, "c1")
    for days in (1, 2, 3, 9):
        add_event(db, "c1", "product_viewed", NOW - timedelta(days=days), sku=f"s{days}")

    latest = value(db, "recent('product_viewed', within=days(7), limit=2)")

    assert [event["properties"]["sku"] for event in latest] == ["s1", "s2"]
    assert len(value(db, "recent('product_viewed')")) == 4


def test_durations_compute_with_dates(db: Database) -> None:
    add_customer(db, "c1")

    assert value(db, "now - days(1.5)") == NOW - timedelta(hours=36)
    assert value(db, "now + hours(2) - minutes(30)") == NOW + timedelta(minutes=90)
    assert value(db, "days(7).hours") == 168


def test_history_of_a_merged_visitor_is_read_through_the_known_customer(db: Database) -> None:
    add_customer(db, "c1")
    add_customer(db, "anon-7", merged_into="c1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=3))

    assert value(db, "count('order_placed')", customer_id="anon-7") == 1


def test_a_duration_computed_wrongly_is_an_error_not_a_false(db: Database) -> None:
    add_customer(db, "c1", traits={"days_back": "thirty"})

    with pytest.raises(ExpressionError, match="'thirty' is not a number"):
        value(db, "count('order_placed', within=days(profile.days_back))")


# -- the customer's clock ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "instant", "today"),
    [
        # The same instant is already 1 December in Auckland and still 30 November in LA.
        ("Pacific/Auckland", datetime(2026, 11, 30, 11, 0, tzinfo=UTC), "2026-12-01"),
        ("America/Los_Angeles", datetime(2026, 11, 30, 11, 0, tzinfo=UTC), "2026-11-30"),
        # One second either side of local midnight in Paris (UTC+1 in winter).
        ("Europe/Paris", datetime(2026, 11, 30, 22, 59, 59, tzinfo=UTC), "2026-11-30"),
        ("Europe/Paris", datetime(2026, 11, 30, 23, 0, 0, tzinfo=UTC), "2026-12-01"),
        # Summer time: Paris is UTC+2, so local midnight is 22:00 UTC.
        ("Europe/Paris", datetime(2026, 7, 14, 21, 59, 59, tzinfo=UTC), "2026-07-14"),
        ("Europe/Paris", datetime(2026, 7, 14, 22, 0, 0, tzinfo=UTC), "2026-07-15"),
        # No zone on the profile: the service's default (UTC here).
        (None, datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "2026-11-30"),
        # A zone that does not exist: the default too, never an error.
        ("Mars/Olympus_Mons", datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "2026-11-30"),
    ],
)
def test_today_is_the_date_on_the_customers_own_clock(
    db: Database, zone: str | None, instant: datetime, today: str
) -> None:
    add_customer(db, "c1", timezone=zone)

    assert str(value(db, "today", now=instant)) == today


@pytest.mark.parametrize(
    ("zone", "instant", "birthday", "is_today"),
    [
        ("Pacific/Auckland", datetime(2026, 11, 30, 10, 59, tzinfo=UTC), "1990-12-01", False),
        ("Pacific/Auckland", datetime(2026, 11, 30, 11, 0, tzinfo=UTC), "1990-12-01", True),
        ("America/Los_Angeles", datetime(2026, 12, 1, 7, 59, tzinfo=UTC), "1990-12-01", False),
        ("America/Los_Angeles", datetime(2026, 12, 1, 8, 0, tzinfo=UTC), "1990-12-01", True),
        ("America/Los_Angeles", datetime(2026, 12, 2, 7, 59, tzinfo=UTC), "1990-12-01", True),
        ("America/Los_Angeles", datetime(2026, 12, 2, 8, 0, tzinfo=UTC), "1990-12-01", False),
        # A 29 February birthday is celebrated on the 28th when the year has no 29th...
        ("UTC", datetime(2027, 2, 28, 12, 0, tzinfo=UTC), "2000-02-29", True),
        ("UTC", datetime(2027, 3, 1, 12, 0, tzinfo=UTC), "2000-02-29", False),
        # ...and on the 29th itself when it has one.
        ("UTC", datetime(2028, 2, 28, 12, 0, tzinfo=UTC), "2000-02-29", False),
        ("UTC", datetime(2028, 2, 29, 12, 0, tzinfo=UTC), "2000-02-29", True),
    ],
)
def test_anniversary_turns_at_the_customers_midnight(
    db: Database, zone: str, instant: datetime, birthday: str, is_today: bool
) -> None:
    add_customer(db, "c1", timezone=zone, traits={"birthday": birthday})

    assert value(db, "anniversary(profile.birthday)", now=instant) is is_today


def test_local_gives_the_hour_and_weekday_on_the_customers_clock_across_dst(
    db: Database,
) -> None:
    add_customer(db, "c1", timezone="Europe/Paris")
    # 29 March 2026: Paris moves from UTC+1 to UTC+2 at 01:00 UTC.
    before = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    after = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)

    assert value(db, "local(now).hour", now=before) == 1
    assert value(db, "local(now).hour", now=after) == 3
    assert value(db, "local(now).weekday", now=after) == 6  # Sunday
    assert value(db, "local('2026-03-29T01:30:00Z').hour") == 3


def test_dates_compare_with_today_and_compute_with_days(db: Database) -> None:
    add_customer(db, "c1", timezone="Asia/Tokyo", traits={"signed_up": "2025-12-01"})
    instant = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 1 December 00:00 in Tokyo

    assert value(db, "date(profile.signed_up) <= today - days(365)", now=instant) is True
    assert value(db, "date(profile.signed_up) < today - days(365)", now=instant) is False
    assert value(db, "date(last('x') or '2026-01-01').month", now=instant) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("anniversary(profile.birthday)", "profile.birthday is not defined"),
        ("anniversary('December 1st')", "'December 1st' is not a date: write dates as"),
        ("local('2026-12-01 09:00')", "is not a date and time with a time zone"),
    ],
)
def test_a_bad_date_is_an_error_for_this_customer(db: Database, text: str, problem: str) -> None:
    add_customer(db, "c1")

    with pytest.raises(ExpressionError, match=problem):
        value(db, text)


# -- a page of customers at once --------------------------------------------------------


def test_page_history_answers_as_each_customers_own_history(db: Database) -> None:
    """The segment tick's batched queries against the per-customer functions the
    journey activities use, over varied random histories."""
    rng = random.Random(7)
    ids = [f"c{n:03d}" for n in range(60)]
    for customer_id in ids:
        add_customer(db, customer_id)
    with db.session() as session:
        for n in range(600):
            customer_id = rng.choice(ids[:50])  # some customers have no events at all
            name = rng.choice(["order_placed", "email_opened", "cart_abandoned"])
            at = NOW - timedelta(minutes=rng.randrange(-600, 200 * 24 * 60))
            session.add(
                Event(
                    message_id=f"r{n}",
                    type="track",
                    customer_id=customer_id,
                    name=name,
                    properties={"n": n},
                    timestamp=at,
                )
            )
    windows = [None, timedelta(days=1), timedelta(days=30), timedelta(days=90)]
    with db.session() as session:
        page = PageHistory(session, ids, NOW)
        for customer_id in ids:
            batched = page.functions(customer_id)
            own = history_functions(session, customer_id, NOW)
            for name in ("order_placed", "email_opened", "cart_abandoned", "none"):
                assert batched["last"](name) == own["last"](name), (customer_id, name)
                for within in windows:
                    assert batched["count"](name, within=within) == own["count"](
                        name, within=within
                    ), (customer_id, name, within)


def test_a_customer_with_no_profile_yet_has_every_contact_field_empty(db: Database) -> None:
    # No row: nothing has identified them. `profile.email is none` is true, not an error.
    assert value(db, "profile.email is none and profile.phone is none", "stranger") is True
    assert value(db, "profile.id", "stranger") == "stranger"
    assert value(db, "profile.push_tokens", "stranger") == []


# -- property filters (DSL v2) ------------------------------------------------------------


def test_count_with_a_property_filter_counts_only_that_products_views(db: Database) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=2), sku="shoe-1")
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=5), sku="shoe-1")
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=3), sku="hat-9")
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=30), sku="shoe-1")
    text = "count('product_viewed', within=hours(24), sku='shoe-1')"
    assert value(db, text) == 2
    assert value(db, "count('product_viewed', sku='shoe-1')") == 3
    assert value(db, "count('product_viewed', within=hours(24))") == 3


def test_property_filters_match_numbers_sent_as_text_and_several_filters_all_apply(
    db: Database,
) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=3), store=12, channel="web")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=2), store="12", channel="app")
    add_event(db, "c1", "order_placed", NOW - timedelta(days=1), store=13, channel="app")
    assert value(db, "count('order_placed', store=12)") == 2
    assert value(db, "count('order_placed', store='12', channel='app')") == 1
    assert value(db, "count('order_placed', gift=true)") == 0


def test_last_with_a_filter_is_the_latest_matching_event(db: Database) -> None:
    add_customer(db, "c1")
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=4), sku="shoe-1", price=80)
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=1), sku="hat-9", price=20)
    assert value(db, "last('product_viewed', sku='shoe-1').properties.price") == 80
    assert value(db, "last('product_viewed', sku='sock-2')") is None


def test_a_segment_page_answers_filtered_history_as_the_customer_does(db: Database) -> None:
    for customer in ("c1", "c2"):
        add_customer(db, customer)
    add_event(db, "c1", "product_viewed", NOW - timedelta(hours=1), sku="shoe-1")
    add_event(db, "c2", "product_viewed", NOW - timedelta(hours=1), sku="hat-9")
    tree = compile_expression("count('product_viewed', within=days(1), sku='shoe-1')")
    with db.session() as session:
        page = PageHistory(session, ["c1", "c2"], NOW)
        found = {c: evaluate(tree, page.functions(c)) for c in ("c1", "c2")}
    assert found == {"c1": 1, "c2": 0}
