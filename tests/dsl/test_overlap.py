"""Two enabled journeys one event can both start: `validate` and `deploy` warn."""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyman.dsl.compiler import compile_dir
from journeyman.dsl.expressions import compile_expression
from journeyman.dsl.overlap import exclusive, overlap_warnings


@pytest.mark.parametrize(
    ("a", "b", "exclusive_"),
    [
        ("event.properties.store == 'north'", "event.properties.store == 'south'", True),
        ("event.properties.store == 'north'", "event.properties.store == 'north'", False),
        ("'north' == event.properties.store", "event.properties.store != 'north'", True),
        ("event.properties.total >= 20", "event.properties.total < 20", True),
        ("event.properties.total > 20", "event.properties.total <= 20", True),
        ("event.properties.total >= 20", "event.properties.total <= 20", False),
        ("event.properties.total > 20 and profile.vip", "event.properties.total > 50", False),
        ("event.properties.total > 20 and profile.vip", "not profile.vip", True),
        ("event.properties.s in ['a', 'b']", "event.properties.s == 'c'", True),
        ("event.properties.s in ['a', 'b']", "event.properties.s == 'a'", False),
        # What cannot be told apart may overlap: warned about.
        ("event.properties.a == 1 or event.properties.a == 2", "event.properties.a == 3", False),
        ("event.properties.total > profile.limit", "event.properties.total < 1", False),
        ("event.properties.total >= 20", "event.properties.total == 'x'", False),
    ],
)
def test_conditions_are_exclusive_only_when_they_provably_are(
    a: str, b: str, exclusive_: bool
) -> None:
    assert exclusive(compile_expression(a), compile_expression(b)) is exclusive_
    assert exclusive(compile_expression(b), compile_expression(a)) is exclusive_


def journey(journey_id: str, entry: str, extra: str = "") -> str:
    return (
        f"id: {journey_id}\nname: {journey_id}\n{extra}entry: {entry}\nsteps:\n"
        "  - id: tell\n    send: {template: t, channels: [sms]}\n"
    )


def test_two_pickup_journeys_on_one_event_are_warned_about_once(tmp_path: Path) -> None:
    journeys, templates = tmp_path / "journeys", tmp_path / "templates"
    journeys.mkdir()
    (templates / "t").mkdir(parents=True)
    (templates / "t" / "sms.txt").write_text("Your order is ready")
    (journeys / "order_ready_for_pickup.yaml").write_text(
        journey("order_ready_for_pickup", "{event: order_ready}", "topic: orders\n")
    )
    (journeys / "pickup_text.yaml").write_text(
        journey(
            "pickup_text",
            "{event: order_ready, when: \"event.properties.store == 'north'\"}",
            "topic: orders\n",
        )
    )
    # Exclusive conditions, another topic, another event, or switched off: no warning.
    (journeys / "north_only.yaml").write_text(
        journey("north_only", "{event: shipped, when: \"event.properties.store == 'north'\"}")
    )
    (journeys / "south_only.yaml").write_text(
        journey("south_only", "{event: shipped, when: \"event.properties.store == 'south'\"}")
    )
    (journeys / "other_topic.yaml").write_text(
        journey("other_topic", "{event: order_ready}", "topic: news\n")
    )
    (journeys / "switched_off.yaml").write_text(
        journey("switched_off", "{event: order_ready}", "topic: orders\nenabled: false\n")
    )

    (warning,) = overlap_warnings(compile_dir(journeys, templates))

    assert (warning.file, warning.line, warning.severity) == (
        str(journeys / "pickup_text.yaml"),
        4,
        "warning",
    )
    assert warning.message.startswith(
        "journeys order_ready_for_pickup and pickup_text both enter on `order_ready` with "
        "topic orders and their entry conditions can both hold"
    )


def test_the_shipped_journeys_do_not_overlap() -> None:
    root = Path(__file__).resolve().parents[2]
    assert overlap_warnings(compile_dir(root / "journeys", root / "templates")) == []
