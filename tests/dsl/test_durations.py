"""Durations, percentages and clock times as marketers write them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journeyman.dsl.durations import (
    format_duration,
    format_percent,
    parse_clock,
    parse_duration,
    parse_percent,
    parse_window,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_short_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT30M", timedelta(minutes=30)),
        ("P2D", timedelta(days=2)),
        ("P1W", timedelta(weeks=1)),
        ("P1DT12H", timedelta(hours=36)),
        ("pt45s", timedelta(seconds=45)),
    ],
)
def test_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_both_spellings_of_an_hour_are_the_same_duration() -> None:
    assert parse_duration("1h") == parse_duration("PT1H")


@pytest.mark.parametrize("text", ["1hour", "h", "PT", "P1DT", "", "-1h", "1 fortnight"])
def test_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P1M", "P1Y", "p1y2m3d", "P6MT12H", "2mo", "3 months", "1 year"])
def test_months_and_years_are_refused_saying_why_and_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="months and years have no fixed length") as error:
        parse_duration(text)
    assert "write days (30d, 365d or P30D)" in str(error.value)


def test_a_number_without_a_unit_asks_for_one() -> None:
    with pytest.raises(ValueError, match="a duration needs a unit: write '90s', '90m'"):
        parse_duration(90)


def test_a_zero_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="longer than zero"):
        parse_duration("PT0S")


def test_an_absurdly_long_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("99999999999999w")


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(hours=1), "1h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(days=14), "2w"),
        (timedelta(seconds=1_000_000.5), "1000000.5s"),
    ],
)
def test_format_duration_picks_the_largest_exact_unit(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


@pytest.mark.parametrize(("text", "fraction"), [("10%", 0.1), ("0%", 0.0), ("12.5%", 0.125)])
def test_percentages_are_fractions(text: str, fraction: float) -> None:
    assert parse_percent(text) == fraction


@pytest.mark.parametrize("text", ["10%", "0.07%", "33.333333333333%", "100%"])
def test_format_percent_reads_back_exactly(text: str) -> None:
    assert format_percent(parse_percent(text)) == text


def test_a_bare_number_is_not_a_percentage() -> None:
    with pytest.raises(ValueError, match="write a percentage with a % sign, like 10%"):
        parse_percent(10)


def test_clock_time() -> None:
    assert parse_clock("09:30") == (9, 30)
    assert parse_clock("7:05") == (7, 5)


def test_clock_time_yaml_read_as_a_number_asks_for_quotes() -> None:
    with pytest.raises(ValueError, match=r'write clock times in quotes, like "09:30"'):
        parse_clock(570)


def test_window_may_wrap_past_midnight() -> None:
    assert parse_window("21:00-08:00") == ((21, 0), (8, 0))


def test_window_must_not_be_empty() -> None:
    with pytest.raises(ValueError, match="must not start and end at the same time"):
        parse_window("08:00-08:00")
