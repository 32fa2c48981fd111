"""`RouteResult`: why an event entered no journey, as typed data and as the words shown."""

from __future__ import annotations

from journeyman.events.routing import EntryFailure, RouteResult, Skipped


def test_a_skip_reads_as_the_journey_then_why_not():
    failure = EntryFailure("'cart_total' is not a property of the event")
    result = RouteResult(
        skipped=[Skipped("cart", "already in the journey"), Skipped("welcome", str(failure))]
    )
    assert [str(skip) for skip in result.skipped] == [
        "cart: already in the journey",
        "welcome: entry expression failed: 'cart_total' is not a property of the event",
    ]
    assert failure.error == "'cart_total' is not a property of the event"


def test_the_reason_for_one_journey_is_read_without_cutting_text():
    result = RouteResult(skipped=[Skipped("a: b", "journey off"), Skipped("a", "held")])
    assert result.reason("a") == "held"
    assert result.reason("a: b") == "journey off"
    assert result.reason("c") is None


def test_results_of_events_routed_one_after_another_add_up_in_order():
    first = RouteResult(entered=["j/c1"], skipped=[Skipped("k", "journey off")])
    first.add(RouteResult(delivered=["j/c1"], skipped=[Skipped("m", "held")], attributed=["x"]))
    assert first == RouteResult(
        entered=["j/c1"],
        delivered=["j/c1"],
        skipped=[Skipped("k", "journey off"), Skipped("m", "held")],
        attributed=["x"],
    )
