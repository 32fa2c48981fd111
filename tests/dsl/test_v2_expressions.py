"""DSL v2 expressions: numbers sent as text, Jinja2's list filters, durations from events.

Pure evaluation, as the workflow and the activities run it: a comparison of a number
with text that spells a number compares the numbers, and a list filter means what it
means in Jinja2, with the evaluator's rule that a missing attribute is an error.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from journeyman.dsl.evaluate import ExpressionError, evaluate
from journeyman.dsl.expressions import compile_expression

ITEMS = [
    {"sku": "shoe-1", "name": "Trail shoe", "price": "79.5", "was": 99, "tags": ["sale"]},
    {"sku": "hat-9", "name": "Wool hat", "price": 25, "was": 25, "tags": []},
    {"sku": "sock-2", "name": "Socks", "price": 9, "was": 12, "tags": ["sale"]},
]


def run(text: str, **properties: Any) -> Any:
    names = {"event": {"name": "e", "properties": properties}, "now": None}
    return evaluate(compile_expression(text), names)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event.properties.score <= 6", True),
        ("event.properties.score > 6", False),
        ("event.properties.score == 4", True),
        ("4 == event.properties.score", True),
        ("event.properties.score != 4", False),
        ("3 < event.properties.score < 5", True),
        ("event.properties.score == '4'", True),
    ],
)
def test_a_number_sent_as_text_compares_as_the_number(text: str, expected: bool) -> None:
    assert run(text, score="4") is expected


def test_v1_meaning_is_kept_for_runs_recorded_before_the_patch() -> None:
    tree = compile_expression("event.properties.score == 4")
    names = {"event": {"properties": {"score": "4"}}}
    assert evaluate(tree, names, numeric_text=False) is False
    with pytest.raises(ExpressionError, match="cannot compare"):
        evaluate(compile_expression("event.properties.score <= 6"), names, numeric_text=False)


def test_text_that_is_no_number_still_fails_to_compare_with_a_number() -> None:
    with pytest.raises(ExpressionError, match="cannot compare str 'four' with int 6"):
        run("event.properties.score <= 6", score="four")
    assert run("event.properties.score == 4", score="four") is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "event.properties.items | selectattr('price', 'lt', 30) | map(attribute='sku') | list",
            ["hat-9", "sock-2"],
        ),
        (
            "event.properties.items | rejectattr('price', '<', 30) | map(attribute='sku') | list",
            ["shoe-1"],
        ),
        (
            "event.properties.items | selectattr('tags') | map(attribute='sku') | list",
            ["shoe-1", "sock-2"],
        ),
        ("event.properties.items | map(attribute='price') | sum", 113.5),
        ("event.properties.items | sum(attribute='was')", 136),
        ("event.properties.items | map(attribute='price') | min", 9),
        ("event.properties.items | max(attribute='price')", ITEMS[0]),
        ("event.properties.items | map(attribute='name') | map('upper') | first", "TRAIL SHOE"),
        ("event.properties.items | map(attribute='name') | last", "Socks"),
        ("event.properties.items | length", 3),
        (
            "event.properties.items | sort(attribute='price') | map(attribute='sku') | list",
            ["sock-2", "hat-9", "shoe-1"],
        ),
        ("event.properties.items | sort(attribute='price', reverse=true) | first", ITEMS[0]),
        ("['b', 'A', 'a', 'b'] | unique | list", ["b", "A"]),
        ("[3, 1, 2] | select('odd') | list", [3, 1]),
        ("[3, 1, 2] | reject('odd') | list", [2]),
        ("event.properties.items | selectattr('price', 'eq', 25) | length", 1),
    ],
)
def test_list_filters_mean_what_they_mean_in_jinja(text: str, expected: Any) -> None:
    assert run(text, items=ITEMS) == expected


def test_a_missing_attribute_in_a_list_filter_is_an_error_naming_it() -> None:
    with pytest.raises(ExpressionError, match="an item's colour is not defined"):
        run("event.properties.items | map(attribute='colour') | list", items=ITEMS)
    with pytest.raises(ExpressionError, match="an item's colour is not defined"):
        run("event.properties.items | selectattr('colour', 'eq', 'red') | list", items=ITEMS)
    assert run(
        "event.properties.items | map(attribute='colour', default='none') | unique | list",
        items=ITEMS,
    ) == ["none"]


def test_a_list_filter_on_something_that_is_no_list_is_an_error() -> None:
    with pytest.raises(ExpressionError, match="selectattr needs a list, got int 5"):
        run("event.properties.items | selectattr('price') | list", items=5)


def test_durations_accept_numbers_from_events_even_as_text() -> None:
    assert run("days(event.properties.n)", n="3") == timedelta(days=3)
    assert run("hours(event.properties.n)", n=1.5) == timedelta(hours=1.5)
    with pytest.raises(ExpressionError, match="'soon' is not a number"):
        run("minutes(event.properties.n)", n="soon")


def test_v1_runs_keep_the_old_min_max_and_sum() -> None:
    names = {"event": {"properties": {"xs": ["4", "10"]}}}
    tree = compile_expression("event.properties.xs | sum")
    assert evaluate(tree, names) == 14
    with pytest.raises(ExpressionError):
        evaluate(tree, names, numeric_text=False)
    assert evaluate(compile_expression("event.properties.xs | max"), names) == "10"
    assert (
        evaluate(compile_expression("event.properties.xs | max"), names, numeric_text=False) == "4"
    )
