"""DSL v2, the events part, as `validate` checks it: `wait_for` with `since`, a list of
events and an `on_event` map, each mistake at its line and column."""

from __future__ import annotations

from journeyman.dsl.graph import mermaid
from tests.dsl.conftest import Workspace


def test_a_list_of_events_with_a_map_compiles_and_is_routed(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: collected
          wait_for:
            event: [picked_up, order_cancelled]
            since: entry
            timeout: 3d
            on_event: {picked_up: thanks, order_cancelled: done}
        - id: thanks
          wait: 1h
        - id: done
          end: true
        """
    )

    plan = ws.compile(path).plan

    spec = plan.journey.steps[0].wait_for  # type: ignore[union-attr]
    assert spec.events == ["picked_up", "order_cancelled"]
    assert spec.since == "entry"
    assert (spec.step_for("picked_up"), spec.step_for("order_cancelled")) == ("thanks", "done")
    assert {"picked_up", "order_cancelled"} <= set(plan.listens)


def test_since_defaults_to_step(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: opened
          wait_for: {event: email_opened, timeout: 1d}
        - id: done
          end: true
        """
    )

    spec = ws.compile(path).plan.journey.steps[0].wait_for  # type: ignore[union-attr]

    assert spec.since == "step"
    assert spec.step_for("email_opened") is None


def test_since_must_be_step_or_entry(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: opened
          wait_for: {event: email_opened, timeout: 1d, since: entri}
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == [
        "7:57: 'entri' is not allowed: 'step' or 'entry'; did you mean 'entry'?"
    ]


def test_an_unknown_step_in_an_on_event_map_has_a_did_you_mean(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: collected
          wait_for:
            event: [picked_up, order_cancelled]
            timeout: 3d
            on_event:
              picked_up: thank_yuo
              order_cancelled: done
        - id: thank_you
          wait: 1h
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["11:20: unknown step 'thank_yuo'; did you mean 'thank_you'?"]


def test_an_on_event_key_must_be_an_awaited_event(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: collected
          wait_for:
            event: [picked_up, order_cancelled]
            timeout: 3d
            on_event: {picked_up: done, order_canceled: done}
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == [
        "10:35: on_event names 'order_canceled', which this step does not wait for "
        "(it waits for picked_up, order_cancelled); did you mean 'order_cancelled'?"
    ]


def test_a_bad_item_in_a_list_of_events_is_pointed_at(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: collected
          wait_for: {event: [picked_up, 5], timeout: 3d}
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["7:35: expected text, got 5"]


def test_a_partial_map_falls_through_for_the_other_events(ws: Workspace) -> None:
    """`order_cancelled` is not in the map: it goes to the next step, which is reachable."""
    path = ws.steps(
        """
        - id: collected
          wait_for:
            event: [picked_up, order_cancelled]
            timeout: 3d
            on_event: {picked_up: done}
            on_timeout: done
        - id: sorry
          wait: 1h
        - id: done
          end: true
        """
    )

    compiled = ws.compile(path)

    assert compiled.warnings == []
    graph = mermaid(compiled.plan)
    assert "picked_up" in graph and "order_cancelled" in graph


def test_a_keyed_exit_on_the_entry_event_warns_that_it_swallows_the_next_entry(
    ws: Workspace,
) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Refill
        entry:
          event: product_purchased
          key: "event.properties.sku"
          reentry: always
        goal:
          event: product_purchased
        exit:
          - event: product_purchased
            when: "event.properties.sku == trigger.properties.sku"
        steps:
          - id: done
            end: true
        """
    )

    warnings = [f"{w.line}:{w.column}: {w.message}" for w in ws.compile(path).warnings]

    assert [w.split(": ", 1)[0] for w in warnings] == ["8:10", "10:12"]
    assert "is its goal: a new product_purchased for a key whose run is still going" in warnings[0]
    assert "then exits that run, so no run follows it and that cycle is swallowed" in warnings[1]
    assert all(w.severity == "warning" for w in ws.compile(path).warnings)


def test_without_a_key_or_with_another_event_there_is_no_warning(ws: Workspace) -> None:
    for entry, exit_event in (("{event: a}", "a"), ("{event: a, key: 'event.properties.k'}", "b")):
        path = ws.write(
            f"""
            id: test_journey
            name: Fine
            entry: {entry}
            exit: [{{event: {exit_event}}}]
            steps:
              - id: done
                end: true
            """
        )
        assert ws.compile(path).warnings == []


def test_the_graph_shows_the_goals_attribution_window(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Window
        entry: {event: cart_abandoned}
        goal: {event: order_placed, within: 7d}
        steps:
          - id: done
            end: true
        """
    )

    graph = mermaid(ws.compile(path).plan)

    assert "goal: order_placed<br/>counts within 1w of entry, even after" in graph
