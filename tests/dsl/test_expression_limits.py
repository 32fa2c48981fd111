"""Every value an expression builds is bounded: a limit is an ExpressionError naming the
expression, checked before the value is made (never a MemoryError, never 100 MB)."""

from __future__ import annotations

import resource
from typing import Any

import pytest

from journeyman.dsl.evaluate import MAX_ITEMS, MAX_TEXT, ExpressionError, evaluate
from journeyman.dsl.expressions import compile_expression, compile_value

NAMES: dict[str, Any] = {
    "event": {"properties": {"pattern": "%0500000000d", "word": "ab", "n": 7}},
}


def run(text: str) -> Any:
    return evaluate(compile_expression(text), NAMES)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    "text",
    [
        "'a' * 10000 * 10000",  # each multiplier under the old check, the result 100 MB
        "('a' * 10000) * 1000",
        "('a' * 10000 * 100) ~ ('a' * 10000 * 100)",
        "('a' * 10000 * 100) + ('b' * 10000 * 100)",
        "('a' * 1000) | replace('a', 'b' * 10000)",
        "[('a' * 10000 * 100), ('a' * 10000 * 100)] | join('')",
        "[1] * 10000 * 2",
        "[1] * 10000 + [1] * 10000",
    ],
)
def test_a_result_over_the_limit_is_an_error_naming_the_expression(text: str) -> None:
    before = peak_rss_mb()
    with pytest.raises(ExpressionError, match=r"allowed|more than") as caught:
        run(text)
    message = str(caught.value)
    assert message.split(":")[0].strip(), message  # names the expression
    assert any(part in message for part in ("'a'", "'b'", "[1]", "10000")), message
    assert peak_rss_mb() - before < 50  # nothing near the 100 MB was ever built


def test_a_text_value_with_interpolations_is_bounded_too() -> None:
    big = {"event": {"properties": {"s": "x" * 600_000}}}
    node = compile_value("{{ event.properties.s }}{{ event.properties.s }}")
    with pytest.raises(ExpressionError, match=str(MAX_TEXT)):
        evaluate(node, big)


def test_results_within_the_limits_are_unchanged() -> None:
    assert run("'ab' * 3 ~ 'c'") == "abababc"
    assert run("[1, 2] + [3]") == [1, 2, 3]
    assert run("['a', 'b'] | join('-')") == "a-b"
    assert run("'a-b' | replace('-', '+')") == "a+b"
    assert len(run(f"'a' * {MAX_TEXT // 1000} * 1000")) == MAX_TEXT
    assert len(run(f"[0] * {MAX_ITEMS}")) == MAX_ITEMS


def test_percent_is_the_remainder_of_numbers_never_string_formatting() -> None:
    assert run("7 % 3") == 1
    assert run("event.properties.n % 2") == 1
    assert run("7.5 % 2") == 1.5
    before = peak_rss_mb()
    with pytest.raises(ExpressionError, match="'%' takes two numbers"):
        run("event.properties.pattern % 5")  # was Python formatting: 512 MB
    with pytest.raises(ExpressionError, match="'%' takes two numbers"):
        run("'%s' % event.properties.word")
    assert peak_rss_mb() - before < 50
