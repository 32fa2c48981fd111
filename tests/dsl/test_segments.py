"""Segment entries in the journey file: `entry: {segment, every}` and `{segment, once_at}`,
and the expression functions audiences use, checked at validation time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from journeyman.dsl.plan import Plan
from journeyman.dsl.schedule import parse_every
from tests.dsl.conftest import Workspace


def write_entry(ws: Workspace, *lines: str) -> Path:
    body = "\n".join(f"  {line}" for line in lines)
    return ws.write(
        "id: test_journey\nname: Test\nentry:\n" + body + "\nsteps:\n  - {id: done, end: true}\n"
    )


def test_a_segment_checked_every_day_compiles(ws: Workspace) -> None:
    path = write_entry(
        ws,
        "segment: \"last('order_placed') and last('order_placed').at < now - days(60)\"",
        "every: 1d",
        "reentry: after 90d",
    )

    entry = ws.compile(path).plan.journey.entry

    assert entry.kind == "schedule"
    assert entry.every == "1d"
    assert entry.segment is not None and entry.segment.needs_activity


def test_a_cron_schedule_is_kept_normalized(ws: Workspace) -> None:
    path = write_entry(ws, 'segment: "anniversary(profile.birthday)"', 'every: "0  9 * * MON-FRI"')

    assert ws.compile(path).plan.journey.entry.every == "0 9 * * mon-fri"


def test_a_broadcast_needs_a_time_with_its_zone(ws: Workspace) -> None:
    path = write_entry(ws, 'segment: "true"', "once_at: 2026-12-01T09:00:00+01:00")

    entry = ws.compile(path).plan.journey.entry

    assert entry.kind == "broadcast"
    assert entry.once_at == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_a_broadcast_time_without_a_zone_is_refused(ws: Workspace) -> None:
    path = write_entry(ws, 'segment: "true"', 'once_at: "2026-12-01T09:00:00"')

    assert ws.problems(path) == [
        "5:12: once_at 2026-12-01T09:00:00 needs a time zone: add Z (UTC) or an offset "
        "such as +01:00"
    ]


def test_a_segment_plan_round_trips_through_its_json(ws: Workspace) -> None:
    # The workflow receives the plan as JSON and validates it again, every field spelled out.
    path = write_entry(ws, "segment: \"count('order_placed', within=days(30)) == 0\"", "every: 6h")
    plan = ws.compile(path).plan

    again = Plan.model_validate_json(plan.model_dump_json())

    assert again == plan


def test_an_event_plan_round_trips_with_the_segment_fields_empty(ws: Workspace) -> None:
    path = ws.steps("- {id: done, end: true}")
    plan = ws.compile(path).plan

    assert Plan.model_validate_json(plan.model_dump_json()) == plan


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (
            ['segment: "event.properties.total > 10"', "every: 1d"],
            "4:12: a segment has no event: it is checked for each customer on a schedule; "
            "use profile, last(), count(), now and today",
        ),
        (
            ["segment: \"trigger.name == 'x'\"", "every: 1d"],
            "4:12: a segment has no trigger: it is checked for each customer on a schedule; "
            "use profile, last(), count(), now and today",
        ),
        (
            ['segment: "true"'],
            "4:3: a segment needs every (how often it is checked: 1d, or a cron line) or "
            "once_at (a broadcast, e.g. 2026-12-01T09:00:00Z)",
        ),
        (
            ['segment: "true"', "every: 1d", "once_at: 2026-12-01T09:00:00Z"],
            "6:12: a segment is checked either every ... or once_at, not both",
        ),
        (
            ['segment: "true"', "every: 1d", 'when: "profile.vip"'],
            "6:9: when goes with event; with a segment, put it all in segment",
        ),
        (
            ['segment: "true"', "every: 1d", 'key: "profile.id"'],
            "6:8: key goes with event; a segment enters a customer once at a time",
        ),
        (["event: signed_up", "every: 1d"], "5:10: every goes with segment, not with event"),
        (
            ["event: signed_up", 'segment: "true"', "every: 1d"],
            "4:3: entry takes either an event or a segment, not both",
        ),
        (['segment: "true"', "every: 30s"], "5:10: every must be at least 1m, got '30s'"),
        (
            ['segment: "true"', "every: 10"],
            "5:10: a duration needs a unit: write '10s', '10m', '10h' or '10d'; every takes a "
            'duration (1d, 6h) or a cron line in quotes ("0 9 * * *")',
        ),
    ],
)
def test_segment_entry_mistakes_are_named_where_they_are(
    ws: Workspace, lines: list[str], problem: str
) -> None:
    assert ws.problems(write_entry(ws, *lines)) == [problem]


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("0 25 * * *", "cron hour field: 25 is outside 0-23"),
        ("0 9 * *", "a cron line has 5 fields (minute hour day-of-month month day-of-week), "),
        ("0 9 * * funday", "cron day of week field: 'funday' is not a number or a name"),
        ("0 9 31-1 * *", "cron day of month field: the range '31-1' goes backwards"),
        ("*/0 * * * *", "cron minute field: the step in '*/0' must be at least 1"),
        ("@fortnightly", "unknown cron shortcut '@fortnightly'"),
        ("0 9 ? * *", "cron day of month field: '?' is not a value, range, list or */step"),
    ],
)
def test_a_bad_cron_line_says_which_field_is_wrong(ws: Workspace, cron: str, problem: str) -> None:
    [found] = ws.problems(write_entry(ws, 'segment: "true"', f'every: "{cron}"'))

    assert found.startswith("5:10: ") and problem in found


@pytest.mark.parametrize(
    ("text", "interval", "cron"),
    [
        ("1d", timedelta(days=1), None),
        ("PT6H", timedelta(hours=6), None),
        ("0 9 * * 1-5", None, "0 9 * * 1-5"),
        ("0,30 8-18/2 1,15 jan-jun sun", None, "0,30 8-18/2 1,15 jan-jun sun"),
        ("@daily", None, "@daily"),
    ],
)
def test_every_reads_durations_and_cron_lines(
    text: str, interval: timedelta | None, cron: str | None
) -> None:
    every = parse_every(text)

    assert (every.interval, every.cron) == (interval, cron)


@pytest.mark.parametrize(
    ("segment", "problem"),
    [
        (
            "count('order_placed', within=30) > 0",
            "count(within=...) takes a duration such as days(30), hours(6) or minutes(15)",
        ),
        (
            "anniversary()",
            "anniversary() takes a date: anniversary(profile.birthday) is true on its month "
            "and day, on the customer's clock",
        ),
        (
            "local(now, 'x').hour > 8",
            "local() takes a date and time: local(now).hour is the hour on the customer's clock",
        ),
        ("date() < today", "date() takes one value: date(profile.birthday)"),
        ("last('order_placed', 3)", "last() takes one event name and optionally property filters"),
        ("birthday(profile.birthday)", "unknown function birthday(); available: anniversary"),
        ("tomorrow > now", "unknown name 'tomorrow'"),
    ],
)
def test_validate_knows_the_audience_functions_and_their_arguments(
    ws: Workspace, segment: str, problem: str
) -> None:
    [found] = ws.problems(write_entry(ws, f'segment: "{segment}"', "every: 1d"))

    assert problem in found


def test_functions_of_the_customer_clock_make_a_condition_an_activity_one(
    ws: Workspace,
) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - when: "local(now).hour < 12"
              goto: done
            - goto: done
        - {id: done, end: true}
        """
    )

    [case, _] = ws.compile(path).plan.journey.steps[0].branch  # type: ignore[union-attr]

    # The workflow cannot know the customer's time zone: an activity evaluates it.
    assert case.when is not None and case.when.needs_activity


def test_schedules_read_as_people_say_them() -> None:
    from journeyman.dsl.schedule import describe_every

    assert describe_every("1h") == "every 1h"
    assert describe_every("0 8 * * *", "Europe/Paris") == 'on cron "0 8 * * *" (Europe/Paris)'
    assert describe_every("@daily") == 'on cron "@daily"'
