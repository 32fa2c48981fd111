"""The SQL prefilter of a segment tick changes nothing a tick decides.

A tick with the prefilter (`pages(narrow=True)`) and one evaluating every profile in
Python (`narrow=False`, the evaluator before it) must agree on every count and every
entry: the customers evaluated, matched and entered, the reasons others were skipped,
and each expression error, for random segments over random profiles and histories, on
SQLite and, on the PostgreSQL pass, on PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from journeyman.audiences.pushdown import prefilter
from journeyman.audiences.segments import pages
from journeyman.dsl.compiler import compile_file
from journeyman.dsl.expressions import compile_expression
from journeyman.dsl.model import Expr
from journeyman.dsl.plan import Plan
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event, JourneyRun

NOW = datetime(2036, 6, 10, 9, 0, tzinfo=UTC)
JOURNEY = """\
id: lapsed
name: Lapsed
entry:
  segment: "profile.tier == 'gold'"
  every: 1d
  reentry: after 30d
steps:
  - {id: done, end: true}
"""

# -- random profiles and histories -----------------------------------------------------

KEYS = ("tier", "score", "age")
VALUES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [None, True, False, 0, 1, 5, -3, 4.5, 5.0, 5.0000000001, 10**20, 1e-300, [], [1], {}]
    ),
    st.sampled_from(["gold", "silver", "Gold", "", "5", " 5 ", "5.0", "+5", ".5", "5.", "1e3"]),
    st.sampled_from(["abc", "x9", "true", "null", "[1]", "2036-06-01T00:00:00Z", "é", "\xa05"]),
    st.integers(-10, 10),
    st.floats(-10, 10, allow_nan=False),
)
TRAITS = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3)
EVENT = st.tuples(st.sampled_from(["order_placed", "visit"]), st.integers(-400 * 24, 48))
CUSTOMER = st.tuples(
    TRAITS,
    st.sampled_from([None, "a@example.com", "5"]),
    st.lists(EVENT, max_size=4),
)
CUSTOMERS = st.lists(CUSTOMER, min_size=1, max_size=12)

# -- random segments -------------------------------------------------------------------

FIELDS = [f"profile.{key}" for key in KEYS] + ["profile.email", "profile['tier']", "profile.gone"]
LITERALS = [
    "'gold'", "'silver'", "'5'", "' 5'", "'abc'", "''", "5", "5.0", "4.5", "0", "-1",
    "true", "false", "none", "1e3", "[1]", "now", "now - days(30)", "'2036-06-01T00:00:00Z'",
    "journey.id", "trigger.x",
]  # fmt: skip
OPS = ["==", "!=", "<", "<=", ">", ">="]
HISTORY = [
    "last('order_placed')",
    "last('visit')",
    "count('visit')",
    "count('order_placed', within=days(30))",
    "count('visit', within=days(7))",
]
INSTANTS = ["now - days(30)", "now - hours(5)", "now", "'2036-06-01T00:00:00Z'", "5", "'soon'"]


def comparisons() -> st.SearchStrategy[str]:
    field = st.sampled_from(FIELDS)
    literal = st.sampled_from(LITERALS)
    op = st.sampled_from(OPS)
    return st.one_of(
        st.builds(lambda f, o, v: f"{f} {o} {v}", field, op, literal),
        st.builds(lambda f, o, v: f"{v} {o} {f}", field, op, literal),
        st.builds(lambda f, t: f"{f} is {t}", field, st.sampled_from(["defined", "none"])),
        field,
        st.sampled_from(HISTORY),
        st.builds(
            lambda e, o, v: f"last('{e}').at {o} {v}",
            st.sampled_from(["order_placed", "visit"]),
            op,
            st.sampled_from(INSTANTS),
        ),
        st.builds(
            lambda h, o, v: f"{h} {o} {v}",
            st.sampled_from(HISTORY[2:]),
            op,
            st.sampled_from(["0", "1", "2", "1.5", "'1'", "'x'", "none"]),
        ),
        st.sampled_from(["profile.tier | lower == 'gold'", "today.day > 0", "1 < 2", "x > 1"]),
    )


SEGMENTS = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a}) and ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) or ({b})", inner, inner),
        st.builds(lambda a: f"not ({a})", inner),
    ),
    max_leaves=5,
)


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    root = tmp_path_factory.mktemp("project")
    (root / "journeys").mkdir()
    (root / "templates").mkdir()
    (root / "journeys" / "lapsed.yaml").write_text(JOURNEY)
    return compile_file(root / "journeys" / "lapsed.yaml", root / "templates").plan


def with_segment(plan: Plan, text: str) -> Plan:
    segment = Expr(text=text, tree=compile_expression(text), needs_activity=True)
    entry = plan.journey.entry.model_copy(update={"segment": segment})
    return plan.model_copy(update={"journey": plan.journey.model_copy(update={"entry": entry})})


def store(db: Database, customers: list[Any]) -> None:
    with db.session() as session:
        session.execute(delete(Event))
        session.execute(delete(JourneyRun))
        session.execute(delete(Customer))
        rows, events = [], []
        for index, (traits, email, history) in enumerate(customers):
            customer_id = f"c{index:02d}"
            rows.append({"id": customer_id, "email": email, "traits": traits, "push_tokens": []})
            events += [
                {
                    "message_id": f"{customer_id}-{number}",
                    "type": "track",
                    "customer_id": customer_id,
                    "name": name,
                    "properties": {},
                    "timestamp": NOW + timedelta(hours=hours),
                    "attempts": 0,
                }
                for number, (name, hours) in enumerate(history)
            ]
        # An anonymous profile merged into a known one is no customer of its own.
        rows.append({"id": "c00-anonymous", "merged_into": "c00", "traits": {"tier": "gold"}})
        session.execute(insert(Customer), rows)
        if events:
            session.execute(insert(Event), events)
    with db.session() as session:
        session.add(  # one customer ran the journey lately: reentry skips them
            JourneyRun(
                workflow_id="lapsed/c01",
                run_id="r1",
                journey_id="lapsed",
                version="v",
                customer_id="c01",
                entry_key="",
                status="completed",
                started_at=NOW - timedelta(days=3),
            )
        )


def tick(db: Database, plan: Plan, *, narrow: bool, page_size: int) -> dict[str, Any]:
    outcome: dict[str, Any] = {"evaluated": 0, "matched": 0, "entered_already": 0}
    enter: list[str] = []
    errors: list[str] = []
    skipped: Counter[str] = Counter()
    cursors = []
    for page in pages(db, plan, NOW, tick_id="t", narrow=narrow, page_size=page_size):
        outcome["evaluated"] += page.evaluated
        outcome["matched"] += page.matched
        outcome["entered_already"] += page.entered_already
        enter += page.enter
        errors += page.errors
        skipped.update(page.skipped)
        cursors.append(page.cursor)
    assert cursors == sorted(cursors), "pages go forward in customer id order"
    return {**outcome, "enter": enter, "errors": errors, "skipped": dict(skipped)}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(customers=CUSTOMERS, segment=SEGMENTS, page_size=st.sampled_from([1, 2, 500]))
def test_the_prefilter_changes_no_entry_count_or_error(
    db: Database, plan: Plan, customers: list[Any], segment: str, page_size: int
) -> None:
    store(db, customers)
    segmented = with_segment(plan, segment)
    expected = tick(db, segmented, narrow=False, page_size=page_size)
    assert tick(db, segmented, narrow=True, page_size=page_size) == expected
    assert expected["evaluated"] == len(customers)


def test_a_segment_sql_cannot_read_reads_every_profile(plan: Plan) -> None:
    tree = with_segment(plan, "profile.tier | lower == 'gold' or today.day > 3").journey
    assert tree.entry.segment is not None
    assert prefilter(tree.entry.segment.tree, at=NOW, journey={}, dialect="sqlite") is None


def test_customers_the_segment_fails_for_are_read_and_counted(db: Database, plan: Plan) -> None:
    """A failure is not a false: a profile without the trait is kept by the prefilter,
    and its error counted, as when every profile was evaluated in Python."""
    store(db, [({"score": 7}, None, []), ({}, None, []), ({"score": "8"}, None, [])])
    segmented = with_segment(plan, "profile.score > 6.5")
    result = tick(db, segmented, narrow=True, page_size=500)
    assert result["matched"] == 2  # 7, and "8": a number sent as text compares as one
    assert result["errors"] == ["c01: profile.score is not defined"]
    assert result == tick(db, segmented, narrow=False, page_size=500)


def test_pages_stand_for_every_customer_between_cursors(db: Database, plan: Plan) -> None:
    """With few matching, a page stands for many customers: the cursor moves past the
    customers that cannot match, and they are counted as evaluated."""
    store(db, [({"tier": "gold" if i % 5 == 0 else "silver"}, None, []) for i in range(30)])
    segmented = with_segment(plan, "profile.tier == 'gold'")
    walked = list(pages(db, segmented, NOW, tick_id="t", page_size=2))
    assert [page.evaluated for page in walked] == [6, 10, 10, 4]
    assert [page.matched for page in walked] == [2, 2, 2, 0]
    assert walked[-1].cursor == "c29"


def test_the_sql_keeps_rows_in_code_point_order(db: Database, plan: Plan, tmp_path: Path) -> None:
    """Text compares as Python compares it (code points), whatever the database's
    collation: 'Z' < 'a' < 'é'."""
    store(db, [({"tier": t}, None, []) for t in ["Z", "a", "é", "b"]])
    segmented = with_segment(plan, "profile.tier > 'a'")
    result = tick(db, segmented, narrow=True, page_size=500)
    assert result["matched"] == 2
    assert result == tick(db, segmented, narrow=False, page_size=500)
