"""What expressions mean: compiled from Jinja2 text, evaluated by plain Python.

The evaluator runs inside the workflow, so these tests pin down its semantics without
Jinja2 at run time: a name that does not exist is an error naming it, never a false.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from journeyman.dsl.evaluate import ExpressionError, evaluate, evaluate_condition
from journeyman.dsl.expressions import (
    ExpressionSyntaxError,
    compile_expression,
    compile_value,
    needs_activity,
    unknown_names,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def names() -> dict[str, Any]:
    return {
        "event": {
            "name": "cart_abandoned",
            "properties": {"cart_total": 42.5, "coupon": None, "items": ["shoe", "sock"]},
        },
        "trigger": {"name": "cart_abandoned", "properties": {"cart_id": "c-1"}},
        "profile": {"first_name": "Ana", "tier": "GOLD", "lifetime_value": 620},
        "journey": {"id": "abandoned_cart", "version": "abc", "entered_at": NOW - timedelta(2)},
        "now": NOW,
    }


def run(text: str, names: dict[str, Any]) -> Any:
    return evaluate(compile_expression(text), names)


# -- comparisons and logic -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event.properties.cart_total >= 20", True),
        ("event.properties.cart_total < 20", False),
        ("profile.lifetime_value == 620", True),
        ("profile.lifetime_value != 620", False),
        ("10 < event.properties.cart_total < 50", True),
        ("'sock' in event.properties.items", True),
        ("'hat' not in event.properties.items", True),
        ("event.properties.coupon == none", True),
    ],
)
def test_comparisons(text: str, expected: bool, names: dict[str, Any]) -> None:
    assert run(text, names) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("profile.lifetime_value > 500 and event.properties.cart_total > 20", True),
        ("profile.lifetime_value > 500 and event.properties.cart_total > 100", False),
        ("profile.lifetime_value > 1000 or event.properties.cart_total > 20", True),
        ("not profile.lifetime_value > 500", False),
        ("not (profile.lifetime_value > 1000 or event.properties.cart_total > 100)", True),
    ],
)
def test_and_or_not(text: str, expected: bool, names: dict[str, Any]) -> None:
    assert run(text, names) is expected


def test_and_does_not_evaluate_its_right_side_when_the_left_is_false(
    names: dict[str, Any],
) -> None:
    assert run("profile.unknown_trait is defined and profile.unknown_trait > 3", names) is False


def test_or_does_not_evaluate_its_right_side_when_the_left_is_true(
    names: dict[str, Any],
) -> None:
    assert run("profile.tier == 'GOLD' or profile.unknown_trait > 3", names) is True


def test_arithmetic(names: dict[str, Any]) -> None:
    assert run("event.properties.cart_total * 2 - 5", names) == 80.0


def test_string_concatenation_with_tilde(names: dict[str, Any]) -> None:
    assert run("profile.first_name ~ '!' ~ 3", names) == "Ana!3"


def test_condition_is_truthiness_of_the_value(names: dict[str, Any]) -> None:
    assert evaluate_condition(compile_expression("event.properties.items"), names) is True
    assert evaluate_condition(compile_expression("event.properties.coupon"), names) is False


# -- filters and tests -----------------------------------------------------------------


def test_default_filter_replaces_a_missing_value(names: dict[str, Any]) -> None:
    assert run("profile.nickname | default('friend')", names) == "friend"


def test_default_filter_keeps_a_present_value(names: dict[str, Any]) -> None:
    assert run("profile.first_name | default('friend')", names) == "Ana"


def test_lower_filter(names: dict[str, Any]) -> None:
    assert run("profile.tier | lower == 'gold'", names) is True


def test_length_filter(names: dict[str, Any]) -> None:
    assert run("event.properties.items | length", names) == 2


def test_filter_with_arguments(names: dict[str, Any]) -> None:
    assert run("event.properties.items | join(', ')", names) == "shoe, sock"


def test_is_defined_tells_a_present_attribute_from_a_missing_one(names: dict[str, Any]) -> None:
    assert run("profile.first_name is defined", names) is True
    assert run("profile.nickname is defined", names) is False
    assert run("profile.nickname is not defined", names) is True


# -- errors ----------------------------------------------------------------------------


def test_missing_attribute_is_an_error_naming_it(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"^profile\.birthday is not defined$"):
        run("profile.birthday > 3", names)


def test_missing_attribute_deep_in_a_path_names_the_first_missing_part(
    names: dict[str, Any],
) -> None:
    with pytest.raises(ExpressionError, match=r"^event\.properties\.shipping is not defined$"):
        run("event.properties.shipping.country == 'FR'", names)


def test_attribute_of_none_is_an_error_saying_it_is_empty(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"event\.properties\.coupon is empty \(none\)"):
        run("event.properties.coupon.code", names)


def test_missing_item_is_an_error_naming_it(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"event\.properties\.items\[5\] is not defined"):
        run("event.properties.items[5] == 'hat'", names)


def test_type_mismatch_in_a_comparison_is_an_error(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"^cannot compare str 'GOLD' with int 3 using '>'$"):
        run("profile.tier > 3", names)


def test_type_mismatch_in_arithmetic_is_an_error(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"^cannot apply '\+' to str 'Ana' and int 1$"):
        run("profile.first_name + 1", names)


def test_division_by_zero_is_an_error(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match="division by zero"):
        run("event.properties.cart_total / 0", names)


def test_a_name_not_provided_at_run_time_is_an_error(names: dict[str, Any]) -> None:
    del names["profile"]

    with pytest.raises(ExpressionError, match=r"^profile is not defined$"):
        run("profile.tier == 'GOLD'", names)


def test_history_function_not_provided_is_an_error() -> None:
    with pytest.raises(ExpressionError, match=r"^last\(\) is not available here$"):
        evaluate(compile_expression("last('order_placed')"), {})


def test_huge_repetition_is_refused(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match="cannot repeat a value more than"):
        run("'x' * 100000000", names)


def test_huge_exponent_is_refused(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match="an exponent must be at most"):
        run("2 ** 100000", names)


# -- time ------------------------------------------------------------------------------


def test_days_subtracted_from_now_is_a_datetime(names: dict[str, Any]) -> None:
    assert run("now - days(60)", names) == NOW - timedelta(days=60)


def test_hours_and_minutes_make_durations(names: dict[str, Any]) -> None:
    assert run("hours(1) + minutes(30)", names) == timedelta(minutes=90)


def test_datetimes_compare_with_arithmetic_on_both_sides(names: dict[str, Any]) -> None:
    assert run("journey.entered_at + hours(47) < now", names) is True
    assert run("journey.entered_at < now - days(3)", names) is False


def test_difference_of_datetimes_reads_in_days(names: dict[str, Any]) -> None:
    assert run("(now - journey.entered_at).days", names) == 2


def test_parts_of_a_datetime(names: dict[str, Any]) -> None:
    assert run("now.hour == 12 and now.weekday == 6", names) is True


def test_history_functions_are_supplied_by_the_caller(names: dict[str, Any]) -> None:
    placed = {"name": "order_placed", "at": NOW - timedelta(days=90), "properties": {}}
    names["last"] = lambda event_name: placed if event_name == "order_placed" else None
    names["count"] = lambda event_name, within=None: 3

    assert run("last('order_placed').at < now - days(60)", names) is True
    assert run("last('never_happened') is none", names) is True
    assert run("count('order_placed', within=days(30)) >= 3", names) is True


# -- templated values ------------------------------------------------------------------


def test_text_around_an_expression_makes_a_string(names: dict[str, Any]) -> None:
    assert evaluate(compile_value("Hi {{ profile.first_name }}"), names) == "Hi Ana"


def test_a_lone_expression_keeps_its_type(names: dict[str, Any]) -> None:
    assert evaluate(compile_value("{{ 3 * 2 }}"), names) == 6
    assert evaluate(compile_value("{{ profile.lifetime_value > 500 }}"), names) is True


def test_a_value_without_braces_is_a_literal(names: dict[str, Any]) -> None:
    assert evaluate(compile_value("profile.first_name"), names) == "profile.first_name"
    assert evaluate(compile_value(7), names) == 7


def test_values_nested_in_mappings_and_lists_are_evaluated(names: dict[str, Any]) -> None:
    body = {"customer": "{{ profile.first_name }}", "tags": ["vip", "{{ 1 + 1 }}"]}

    assert evaluate(compile_value(body), names) == {"customer": "Ana", "tags": ["vip", 2]}


def test_missing_name_in_a_templated_value_is_an_error(names: dict[str, Any]) -> None:
    with pytest.raises(ExpressionError, match=r"^profile\.nickname is not defined$"):
        evaluate(compile_value("Hi {{ profile.nickname }}"), names)


# -- compiling -------------------------------------------------------------------------


def test_braces_around_a_condition_are_optional(names: dict[str, Any]) -> None:
    assert compile_expression("{{ profile.tier }}") == compile_expression("profile.tier")


def test_compiled_tree_is_plain_json_data() -> None:
    assert compile_expression("event.properties.cart_total >= 20") == [
        "cmp",
        ["attr", ["attr", ["name", "event"], "properties"], "cart_total"],
        [["gteq", ["lit", 20]]],
    ]


def test_unknown_names_finds_typos_but_not_known_names_or_functions() -> None:
    tree = compile_expression("profle.tier == 'x' and count('order_placed') > 0 and now")

    assert unknown_names(tree) == ["profle"]


def test_reading_profile_or_history_needs_an_activity() -> None:
    assert needs_activity(compile_expression("profile.tier == 'GOLD'"))
    assert needs_activity(compile_expression("count('order_placed') > 0"))
    assert not needs_activity(compile_expression("event.properties.cart_total > now.hour"))


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "expected an expression, got an empty value"),
        ("event.properties.total >", "expression does not parse"),
        ("event.name.upper()", "only functions can be called"),
        ("event._secret", "attribute '_secret' is not allowed"),
        ("event.items[1:2]", "slices are not supported"),
        ("days(1, 2)", "days() takes one number"),
        ("last()", "last() takes one event name"),
        ("count()", "count() takes an event name, optionally within= and property filters"),
        ("last('x', within=days(1))", "last() takes one event name and optionally property"),
        ("x | mapp(attribute='a')", "unknown filter 'mapp'; did you mean 'map'?"),
        ("cuont('x')", "unknown function cuont(); did you mean count()?"),
        ("x | days", "days is a function, not a filter: write days(...)"),
        ("x | selectattr('a', 'equalsto', 1)", "did you mean 'equalto'?"),
        ("x | map('uper')", "map: unknown filter 'uper'; did you mean 'upper'?"),
        # Found by tests/fuzz: Jinja2's lexer raised SyntaxError for these numbers.
        ("\u0660.5", "expression does not parse: invalid character '\u0660'"),
        ("\u0663e5 > 1", "expression does not parse: invalid character '\u0663'"),
    ],
)
def test_what_is_not_an_expression(text: str, reason: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        compile_expression(text)


@pytest.mark.parametrize(
    "text",
    [
        "(" * 3000 + "1" + ")" * 3000,
        "not " * 3000 + "true",
        "event" + " + 1" * 3000,
        "event" + ".a" * 3000,
        "event" + " | lower" * 3000,
        "event" + " + 1" * 150,
    ],
)
def test_nesting_deeper_than_any_condition_is_refused_not_raised(text: str) -> None:
    # Found by tests/fuzz: parsing or converting these raised RecursionError; a tree
    # that converts but is this deep would fail when evaluated instead.
    with pytest.raises(ExpressionSyntaxError, match="nested more than 100 levels deep"):
        compile_expression(text)


def test_a_number_in_other_digits_in_a_templated_value_is_refused_not_raised() -> None:
    with pytest.raises(ExpressionSyntaxError, match="template value does not parse"):
        compile_value("Total: {{ \u0660.5 }}")


def test_nesting_in_a_templated_value_is_refused_not_raised() -> None:
    with pytest.raises(ExpressionSyntaxError, match="nested more than 100 levels deep"):
        compile_value("Hi {{ " + "(" * 3000 + "1" + ")" * 3000 + " }}")


def test_a_long_expression_within_the_nesting_limit_compiles(names: dict[str, Any]) -> None:
    assert run("1" + " + 1" * 60, names) == 61
