"""The Mermaid flowchart of a journey: its nodes, its edges, and safe labels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from journeyman.dsl.graph import escape, mermaid
from tests.dsl.conftest import Workspace

EDGE = re.compile(r'^\s+(\w+) -->(?:\|"(.*)"\|)? (\w+)$')
NODE = re.compile(r'^\s+(\w+)(?:\(\[|\(\(|\[/|\[|\{|>)"(.*)"')


def nodes(chart: str) -> dict[str, str]:
    """Node id -> label text, for every node declared in the chart."""
    return {m[1]: m[2] for line in chart.splitlines() if (m := NODE.match(line))}


def edges(chart: str) -> list[tuple[str, str | None, str]]:
    """(source, label, target) for every edge, in order."""
    return [(m[1], m[2], m[3]) for line in chart.splitlines() if (m := EDGE.match(line))]


@pytest.fixture
def chart(ws: Workspace, example: Path) -> str:
    return mermaid(ws.compile(example).plan)


def test_chart_is_a_top_down_flowchart(chart: str) -> None:
    assert chart.splitlines()[0] == "flowchart TD"


def test_entry_node_shows_event_and_condition_and_leads_to_the_first_step(chart: str) -> None:
    assert nodes(chart)["entry"] == (
        "entry: cart_abandoned<br/>when event.properties.cart_total #gt;= 20<br/>holdout 10%"
    )
    assert ("entry", None, "step_wait_an_hour") in edges(chart)


@pytest.mark.parametrize(
    ("node", "label"),
    [
        ("step_wait_an_hour", "wait_an_hour<br/>wait 1h"),
        ("step_first_reminder", "first_reminder<br/>send cart_reminder via push, email, sms"),
        ("step_wait_for_open", "wait_for_open<br/>wait_for email_opened ≤1d"),
        ("step_vip_check", "vip_check<br/>branch"),
        ("step_vip_offer", "vip_offer<br/>split"),
        ("step_done", "done<br/>end"),
    ],
)
def test_each_step_is_a_node_with_its_id_and_what_it_does(
    chart: str, node: str, label: str
) -> None:
    assert nodes(chart)[node] == label


def test_fall_through_and_goto_are_unlabelled_edges(chart: str) -> None:
    assert ("step_wait_an_hour", None, "step_first_reminder") in edges(chart)
    assert ("step_sms_nudge", None, "step_done") in edges(chart)  # goto
    assert ("step_offer_b", None, "step_done") in edges(chart)  # falls through


def test_wait_for_has_an_event_edge_and_a_timeout_edge(chart: str) -> None:
    assert ("step_wait_for_open", "event", "step_vip_check") in edges(chart)
    assert ("step_wait_for_open", "timeout", "step_sms_nudge") in edges(chart)


def test_branch_cases_are_labelled_with_their_condition(chart: str) -> None:
    assert [e for e in edges(chart) if e[0] == "step_vip_check"] == [
        ("step_vip_check", "profile.lifetime_value #gt; 500", "step_vip_offer"),
        ("step_vip_check", "otherwise", "step_done"),
    ]


def test_split_arms_are_labelled_with_their_share(chart: str) -> None:
    assert [e for e in edges(chart) if e[0] == "step_vip_offer"] == [
        ("step_vip_offer", "50%", "step_offer_a"),
        ("step_vip_offer", "50%", "step_offer_b"),
    ]


def test_end_step_has_no_way_out(chart: str) -> None:
    assert [e for e in edges(chart) if e[0] == "step_done"] == []
    assert "finish" not in nodes(chart)


def test_goal_and_exits_are_notes_apart_from_the_flow(chart: str) -> None:
    labels = nodes(chart)

    assert labels["goal"] == (
        "goal: order_placed<br/>when event.properties.cart_id == trigger.properties.cart_id"
    )
    assert labels["exit_0"] == "exit: cart_emptied"
    assert '    goal>"' in chart
    assert "    class goal,exit_0 note" in chart
    assert not [e for e in edges(chart) if "goal" in (e[0], e[2])]


def test_every_node_id_is_mermaid_safe(chart: str) -> None:
    used = {n for e in edges(chart) for n in (e[0], e[2])} | set(nodes(chart))

    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in used)
    assert used <= set(nodes(chart))


def test_step_called_end_does_not_clash_with_the_mermaid_keyword(ws: Workspace) -> None:
    chart = mermaid(ws.compile(ws.steps("- {id: end, end: true}")).plan)

    assert nodes(chart)["step_end"] == "end<br/>end"
    assert ("entry", None, "step_end") in edges(chart)


def test_last_step_without_end_leads_to_the_end_of_the_journey(ws: Workspace) -> None:
    chart = mermaid(ws.compile(ws.steps("- {id: pause, wait: {until: '09:00'}}")).plan)

    assert nodes(chart)["step_pause"] == "pause<br/>wait until 09:00"
    assert nodes(chart)["finish"] == "end of journey"
    assert ("step_pause", None, "finish") in edges(chart)


def test_branch_without_a_default_falls_through_otherwise(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - {when: "event.properties.vip", goto: done}
        - id: pause
          wait: 1d
        - id: done
          end: true
        """
    )

    chart = mermaid(ws.compile(path).plan)

    assert ("step_check", "event.properties.vip", "step_done") in edges(chart)
    assert ("step_check", "otherwise", "step_pause") in edges(chart)


def test_uneven_split_shows_percentages(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: coin
          split:
            - {weight: 1, goto: a}
            - {weight: 2, goto: b}
        - {id: a, end: true}
        - {id: b, end: true}
        """
    )

    chart = mermaid(ws.compile(path).plan)

    assert ("step_coin", "33.3%", "step_a") in edges(chart)
    assert ("step_coin", "66.7%", "step_b") in edges(chart)


def test_update_profile_and_webhook_are_described(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: tag
          update_profile: {set: {nudged: true, tier: gold}}
        - id: crm
          webhook:
            url: "https://crm.example.com/contacts/{{ profile.id }}"
            body: {id: "{{ profile.id }}"}
        """
    )

    labels = nodes(mermaid(ws.compile(path).plan))

    assert labels["step_tag"] == "tag<br/>update profile: nudged, tier"
    assert labels["step_crm"] == "crm<br/>webhook POST crm.example.com"


def test_condition_text_is_escaped_inside_labels(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - when: 'event.properties.note | default("#1") == "<b>"'
              goto: done
        - {id: done, end: true}
        """
    )

    chart = mermaid(ws.compile(path).plan)

    [(_, label, _)] = [e for e in edges(chart) if e[2] == "step_done" and e[1] != "otherwise"]
    assert (
        label == "event.properties.note #124; default(#quot;#35;1#quot;) == #quot;#lt;b#gt;#quot;"
    )


def test_long_conditions_are_shortened(ws: Workspace) -> None:
    condition = " and ".join(f"event.properties.flag_{n}" for n in range(10))
    path = ws.steps(
        f"""
        - id: check
          branch:
            - {{when: "{condition}", goto: done}}
        - {{id: done, end: true}}
        """
    )

    chart = mermaid(ws.compile(path).plan)

    [label] = [e[1] for e in edges(chart) if e[2] == "step_done" and e[1] != "otherwise"]
    assert label is not None
    assert len(label) == 60
    assert label.endswith("…")


def test_step_name_is_shown_under_its_id(ws: Workspace) -> None:
    path = ws.steps("- {id: pause, name: Let them think, wait: 2d}")

    assert (
        nodes(mermaid(ws.compile(path).plan))["step_pause"]
        == "pause<br/>Let them think<br/>wait 2d"
    )


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ('say "hi"', "say #quot;hi#quot;"),
        ("a | b", "a #124; b"),
        ("1 < 2 > 0", "1 #lt; 2 #gt; 0"),
        ("#tag", "#35;tag"),
        ("`code`", "#96;code#96;"),
        ("two\nlines", "two lines"),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


def test_on_error_is_an_edge_labelled_error_and_wait_at_shows_its_expression(
    ws: Workspace,
) -> None:
    path = ws.steps(
        """
        - id: until_delivery
          wait: {at: "trigger.properties.delivered_at + days(3)"}
          on_error: review
        - id: done
          end: true
        - id: review
          update_profile: {set: {review: true}}
        """
    )
    chart = mermaid(ws.compile(path).plan)
    assert nodes(chart)["step_until_delivery"] == (
        "until_delivery<br/>wait until trigger.properties.delivered_at + days(3)"
    )
    assert ("step_until_delivery", "error", "step_review") in edges(chart)
    assert ("step_until_delivery", None, "step_done") in edges(chart)
