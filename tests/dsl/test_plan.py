"""The compiled plan: what the workflow runs, how it routes, how it is versioned."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from journeyman.dsl import Plan
from journeyman.dsl.model import (
    BranchStep,
    EndStep,
    Reentry,
    SendStep,
    SplitStep,
    WaitForStep,
    WaitStep,
    WaitUntil,
)
from tests.dsl.conftest import Workspace


def test_the_contract_example_compiles_into_typed_steps(ws: Workspace, example: Path) -> None:
    journey = ws.compile(example).plan.journey

    assert [type(step) for step in journey.steps] == [
        WaitStep,
        SendStep,
        WaitForStep,
        BranchStep,
        SendStep,
        SplitStep,
        SendStep,
        SendStep,
        EndStep,
    ]


def test_short_values_are_parsed_into_structured_ones(ws: Workspace, example: Path) -> None:
    journey = ws.compile(example).plan.journey

    assert journey.entry.reentry == Reentry(mode="after", after=timedelta(days=7))
    assert journey.entry.holdout == 0.1
    assert journey.settings.quiet_hours == "21:00-08:00"
    assert journey.settings.frequency_cap is not None
    assert journey.settings.frequency_cap.count == 3
    assert journey.settings.frequency_cap.per == timedelta(days=1)
    assert journey.steps[0].wait == timedelta(hours=1)


def test_entry_defaults_are_one_run_ever_and_no_holdout(ws: Workspace) -> None:
    entry = ws.compile(ws.steps("- {id: done, end: true}")).plan.journey.entry

    assert entry.reentry == Reentry(mode="never")
    assert entry.holdout == 0.0
    assert entry.when is None
    assert entry.key is None


def test_wait_until_a_clock_time(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: morning
          wait: {until: "09:00"}
        """
    )

    [step] = ws.compile(path).plan.journey.steps
    assert step.wait == WaitUntil(until="09:00")


def test_iso_and_short_durations_compile_to_the_same_wait(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: short
          wait: 1h
        - id: iso
          wait: PT1H
        """
    )

    short, iso = ws.compile(path).plan.journey.steps
    assert short.wait == iso.wait == timedelta(hours=1)


def test_expressions_are_compiled_and_marked_for_where_they_can_run(
    ws: Workspace, example: Path
) -> None:
    journey = ws.compile(example).plan.journey

    assert journey.entry.when is not None
    assert journey.entry.when.text == "event.properties.cart_total >= 20"
    assert journey.entry.when.tree[0] == "cmp"
    assert journey.entry.when.needs_activity is False
    vip_check = journey.steps[3]
    assert isinstance(vip_check, BranchStep)
    assert vip_check.branch[0].when is not None
    assert vip_check.branch[0].when.needs_activity is True  # reads profile


# -- routing ---------------------------------------------------------------------------


def test_next_is_the_following_step_or_the_goto(ws: Workspace, example: Path) -> None:
    plan = ws.compile(example).plan

    assert plan.next == {
        "wait_an_hour": "first_reminder",
        "first_reminder": "wait_for_open",
        "wait_for_open": "vip_check",
        "vip_check": "sms_nudge",
        "sms_nudge": "done",  # goto
        "vip_offer": "offer_a",
        "offer_a": "done",  # goto
        "offer_b": "done",
        "done": None,  # end
    }


def test_next_of_the_last_step_ends_the_journey(ws: Workspace) -> None:
    plan = ws.compile(ws.steps("- {id: only, wait: 1h}")).plan

    assert plan.next == {"only": None}


def test_listens_names_goal_exit_and_wait_for_events(ws: Workspace, example: Path) -> None:
    plan = ws.compile(example).plan

    assert plan.listens == ["cart_emptied", "email_opened", "order_placed"]


def test_listens_is_empty_for_a_journey_that_waits_for_nothing(ws: Workspace) -> None:
    plan = ws.compile(ws.steps("- {id: done, end: true}")).plan

    assert plan.listens == []


def test_step_index_finds_a_step_by_id(ws: Workspace, example: Path) -> None:
    plan = ws.compile(example).plan

    assert plan.step_index("vip_check") == 3


# -- versions --------------------------------------------------------------------------


def test_version_is_stable_when_nothing_changes(ws: Workspace, example: Path) -> None:
    assert ws.compile(example).plan.version == ws.compile(example).plan.version


def test_version_changes_when_the_journey_changes(ws: Workspace, example: Path) -> None:
    before = ws.compile(example).plan.version
    example.write_text(example.read_text().replace("wait: 1h", "wait: 2h"))

    assert ws.compile(example).plan.version != before


def test_version_changes_when_a_template_it_uses_changes(ws: Workspace, example: Path) -> None:
    before = ws.compile(example).plan.version
    (ws.templates / "cart_nudge" / "sms.txt").write_text("Your cart misses you")

    assert ws.compile(example).plan.version != before


def test_version_changes_when_a_shared_layout_changes(ws: Workspace, example: Path) -> None:
    layouts = ws.templates / "_layouts"
    layouts.mkdir()
    (layouts / "base.html").write_text("<body>{% block content %}{% endblock %}</body>")
    before = ws.compile(example).plan.version
    (layouts / "base.html").write_text("<body class=new>{% block content %}{% endblock %}</body>")

    assert ws.compile(example).plan.version != before


def test_version_ignores_templates_the_journey_does_not_use(ws: Workspace, example: Path) -> None:
    before = ws.compile(example).plan.version
    ws.template("welcome")

    assert ws.compile(example).plan.version == before


def test_version_covers_binary_files_in_a_template_folder(ws: Workspace, example: Path) -> None:
    logo = ws.templates / "cart_reminder" / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x00")
    compiled = ws.compile(example)
    logo.write_bytes(b"\x89PNG\r\n\x1a\n\xff\x01")

    assert ws.compile(example).plan.version != compiled.plan.version
    assert "cart_reminder/logo.png" not in compiled.templates


def test_compiled_carries_the_template_sources_of_its_version(ws: Workspace, example: Path) -> None:
    templates = ws.compile(example).templates

    assert sorted(templates) == [
        "cart_nudge/sms.txt",
        "cart_reminder/email.html",
        "cart_reminder/push.txt",
        "cart_reminder/sms.txt",
        "vip_offer_a/email.html",
        "vip_offer_b/email.html",
        "vip_offer_b/sms.txt",
    ]


# -- through Temporal ------------------------------------------------------------------


def test_plan_round_trips_through_json_unchanged(ws: Workspace, example: Path) -> None:
    plan = ws.compile(example).plan

    assert Plan.model_validate(plan.model_dump(mode="json")) == plan


def test_plan_round_trips_through_a_json_string_unchanged(ws: Workspace, example: Path) -> None:
    plan = ws.compile(example).plan

    assert Plan.model_validate_json(plan.model_dump_json()) == plan


def test_every_kind_of_step_round_trips(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    path = ws.write(
        """
        id: test_journey
        name: Every step
        entry:
          event: cart_abandoned
          key: "event.properties.cart_id"
          reentry: always
          holdout: 12.5%
        goal: {event: order_placed, when: "event.properties.cart_id == trigger.properties.cart_id"}
        exit: [{event: cart_emptied}]
        settings: {quiet_hours: "22:00-07:30", frequency_cap: 1 per 4h, priority: 3}
        steps:
          - {id: pause, wait: 90m}
          - {id: morning, wait: {until: "08:15"}}
          - {id: opened, wait_for: {event: email_opened, timeout: P1D, on_event: tag}}
          - {id: remind, send: {template: cart_reminder, channels: [email]}}
          - id: tag
            update_profile:
              set: {last_cart: "{{ trigger.properties.cart_id }}", nudged: true, score: 3}
          - id: crm
            webhook:
              url: "https://crm.example.com/c/{{ profile.id }}"
              method: PUT
              headers: {X-Source: journeyman}
              body: {total: "{{ event.properties.cart_total }}", items: [1, 2]}
          - {id: coin, split: [{weight: 1, goto: done}, {weight: 3, goto: check}]}
          - id: check
            branch:
              - {when: "profile.vip", goto: done}
          - {id: done, end: true}
        """
    )
    plan = ws.compile(path).plan
    dumped = plan.model_dump(mode="json")

    assert Plan.model_validate(dumped) == plan
    assert dumped["journey"]["entry"]["holdout"] == "12.5%"
    assert dumped["journey"]["entry"]["reentry"] == "always"
    assert dumped["journey"]["settings"]["frequency_cap"] == "1 per 4h"
    assert dumped["journey"]["steps"][0]["wait"] == "90m"
    assert dumped["journey"]["steps"][2]["wait_for"]["timeout"] == "1d"


def test_serialized_plan_reads_like_the_yaml_it_came_from(ws: Workspace, example: Path) -> None:
    entry = ws.compile(example).plan.model_dump(mode="json")["journey"]["entry"]

    assert entry["reentry"] == "after 1w"
    assert entry["holdout"] == "10%"
