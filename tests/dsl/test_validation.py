"""Every kind of mistake in a journey file is reported with its line and column.

Each test writes a small journey whose line numbers can be read off the text, and
checks the problem as `line:col: message` (the file name is left out).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from journeyman.dsl import JourneyError, Problem, compile_dir, compile_file, validate
from tests.dsl.conftest import Workspace


def test_a_valid_journey_compiles(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: wait_an_hour
          wait: 1h
        - id: done
          end: true
        """
    )

    compiled = ws.compile(path)

    assert compiled.plan.journey.id == "test_journey"
    assert [step.id for step in compiled.plan.journey.steps] == ["wait_an_hour", "done"]
    assert compiled.warnings == []


def test_problem_prints_as_file_line_column_message() -> None:
    problem = Problem("journeys/x.yaml", 3, 7, "unknown field 'nmae'")

    assert str(problem) == "journeys/x.yaml:3:7: unknown field 'nmae'"


# -- YAML itself -----------------------------------------------------------------------


def test_yaml_syntax_error_names_where_the_parser_stopped(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
          entry: oops
        """
    )

    assert ws.problems(path) == ["3:8: YAML syntax: mapping values are not allowed here"]


def test_unclosed_quote_is_a_yaml_syntax_error(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: "Test
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith("3:1: YAML syntax:")
    assert "quoted scalar" in problem


def test_duplicate_yaml_key_is_an_error_rather_than_last_one_wins(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          event: order_placed
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:3: duplicate key 'event'"]


def test_value_yaml_cannot_build_is_reported_not_raised(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: 2026-13-45
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith("2:7: YAML syntax: cannot read '2026-13-45'")


def test_python_tags_are_refused(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: !!python/object/apply:os.system ["true"]
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith("2:7: YAML syntax:")


def test_an_alias_inside_itself_is_reported(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: &loop [*loop]
        """
    )

    assert ws.problems(path) == ["2:7: YAML syntax: an alias refers to itself"]


def test_yaml_nested_deeper_than_any_journey_is_reported_not_raised(ws: Workspace) -> None:
    # Found by tests/fuzz: PyYAML composes recursively, so this was a RecursionError.
    path = ws.write("id: test_journey\nname: " + "[" * 3000 + "\n")

    assert ws.problems(path) == ["2:70: YAML: the document is nested more than 64 levels deep"]


def test_aliases_that_nest_deeper_than_any_journey_are_reported(ws: Workspace) -> None:
    # Each node is shallow in the text; the value the alias builds is not.
    deep = "[" * 40 + "]" * 40
    path = ws.write(f"x: &deep {deep}\nname: {'[' * 40}*deep{']' * 40}\n")

    assert ws.problems(path) == ["1:34: YAML: the document is nested more than 64 levels deep"]


def test_a_file_that_is_not_a_mapping_is_reported(ws: Workspace) -> None:
    path = ws.write("- just\n- a list\n")

    assert ws.problems(path) == ["1:1: a journey file must be a mapping of fields"]


def test_an_empty_file_is_reported(ws: Workspace) -> None:
    path = ws.write("")

    assert ws.problems(path) == ["1:1: a journey file must be a mapping of fields"]


def test_a_missing_file_is_reported(ws: Workspace) -> None:
    with pytest.raises(JourneyError) as caught:
        compile_file(ws.journeys / "nowhere.yaml", ws.templates)

    assert [p.message for p in caught.value.problems] == ["no such file"]


# -- fields ----------------------------------------------------------------------------


def test_unknown_field_points_at_its_name_and_suggests_the_right_one(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        nmae: Test
        entry:
          event: cart_abandoned
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["2:1: unknown field 'nmae'; did you mean 'name'?"]


def test_unknown_field_inside_a_step_suggests_the_right_one(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    path = ws.steps(
        """
        - id: remind
          send:
            template: cart_reminder
            chanels: [email]
        """
    )

    assert ws.problems(path) == ["9:7: unknown field 'chanels'; did you mean 'channels'?"]


def test_misspelt_action_is_named_as_unknown_field_with_a_suggestion(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wiat: 1h
        """
    )

    assert ws.problems(path) == ["7:5: unknown field 'wiat'; did you mean 'wait'?"]


def test_missing_field_is_still_reported_when_an_unrelated_field_is_unknown(
    ws: Workspace,
) -> None:
    path = ws.write(
        """
        id: test_journey
        colour: blue
        entry:
          event: cart_abandoned
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["1:1: missing field 'name'", "2:1: unknown field 'colour'"]


def test_unknown_field_without_a_close_match_has_no_suggestion(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        colour: blue
        entry:
          event: cart_abandoned
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["3:1: unknown field 'colour'"]


def test_missing_required_field_points_at_the_mapping_that_lacks_it(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: wait_for_open
          wait_for:
            event: email_opened
        """
    )

    assert ws.problems(path) == ["8:7: missing field 'timeout'"]


def test_wrong_type_says_what_was_expected(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
        settings:
          priority: high
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["6:13: expected a whole number, got 'high'"]


def test_a_single_channel_must_still_be_a_list(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: email}
        """
    )

    assert ws.problems(path) == ["7:47: expected a list, got 'email'"]


def test_unknown_channel_lists_the_allowed_ones(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email",))
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email, fax]}
        """
    )

    assert ws.problems(path) == [
        "7:55: 'fax' is not allowed: 'email', 'sms', 'push', 'whatsapp' or 'inbox'"
    ]


def test_step_id_must_be_lowercase_letters_digits_and_underscores(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: Wait-An-Hour
          wait: 1h
        """
    )

    assert ws.problems(path) == [
        "6:9: 'Wait-An-Hour' is not a valid id: use lowercase letters, digits and _"
    ]


def test_step_id_longer_than_its_column_is_an_error_not_a_database_failure(
    ws: Workspace,
) -> None:
    path = ws.steps(
        f"""
        - id: {"wait_" * 20}x
          wait: 1h
        """
    )

    assert ws.problems(path) == ["6:9: too long: 101 characters where at most 100 are allowed"]


def test_journey_needs_at_least_one_step(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
        steps: []
        """
    )

    assert ws.problems(path) == ["5:8: must not be empty"]


def test_entry_needs_an_event(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          reentry: always
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["4:3: entry needs an event, or a segment with every or once_at"]


def test_id_must_equal_the_file_name(ws: Workspace) -> None:
    path = ws.write(
        """
        id: abandoned_cart
        name: Test
        entry:
          event: cart_abandoned
        steps:
          - {id: done, end: true}
        """,
        stem="cart_recovery",
    )

    assert ws.problems(path) == [
        "1:5: id 'abandoned_cart' must equal the file name 'cart_recovery'"
    ]


# -- durations, percentages, reentry, clock times --------------------------------------


def test_bad_duration_says_which_spellings_work(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1hour
        """
    )

    assert ws.problems(path) == [
        "7:11: '1hour' is not a duration: use 30s, 15m, 1h, 2d, 1w or ISO 8601 such as PT1H"
    ]


def test_duration_without_a_unit_suggests_units(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: wait_for_open
          wait_for: {event: email_opened, timeout: 5}
        """
    )

    assert ws.problems(path) == ["7:46: a duration needs a unit: write '5s', '5m', '5h' or '5d'"]


def test_zero_duration_is_refused(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 0s
        """
    )

    assert ws.problems(path) == ["7:11: a duration must be longer than zero, got '0s'"]


def test_percentage_over_100_is_refused(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          holdout: 150%
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:12: a percentage must be between 0% and 100%, got '150%'"]


def test_percentage_without_percent_sign_is_refused_as_ambiguous(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          holdout: 0.5
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:12: write a percentage with a % sign, like 0.5%"]


def test_bad_reentry_lists_the_three_forms(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          reentry: sometimes
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == [
        "5:12: reentry must be never, always or \"after <duration>\", got 'sometimes'"
    ]


def test_reentry_after_a_bad_duration_names_the_duration(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          reentry: after a while
        steps:
          - {id: done, end: true}
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith("5:12: 'a while' is not a duration")


def test_unquoted_clock_time_is_explained(ws: Workspace) -> None:
    # YAML 1.1 reads 21:00 as sexagesimal minutes, the number 1260.
    path = ws.steps(
        """
        - id: evening
          wait: {until: 21:00}
        """
    )

    assert ws.problems(path) == [
        '7:19: write clock times in quotes, like "21:00" '
        "(unquoted, YAML reads 21:00 as the number 1260)"
    ]


def test_quoted_clock_time_is_accepted(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: morning
          wait: {until: "9:00"}
        """
    )

    [step] = ws.compile(path).plan.journey.steps
    assert step.wait.until == "09:00"


def test_impossible_clock_time_is_refused(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: morning
          wait: {until: "25:00"}
        """
    )

    assert ws.problems(path) == ["7:19: expected a time of day as \"HH:MM\", got '25:00'"]


def test_bad_frequency_cap_shows_the_form(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
        settings:
          frequency_cap: three a day
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == [
        '6:18: frequency_cap must look like "3 per 1d" (or be "none"), got \'three a day\''
    ]


def test_split_weight_must_be_positive(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: coin
          split:
            - {weight: -1, goto: done}
            - {weight: 50, goto: done}
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["8:18: must be greater than 0, got -1"]


# -- steps and the flow between them ---------------------------------------------------


def test_duplicate_step_id_names_the_first_user(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
        - id: pause
          wait: 2h
        """
    )

    assert ws.problems(path) == ["8:9: duplicate step id 'pause' (first used by step 1)"]


def test_a_list_or_mapping_as_step_id_or_target_is_reported_as_the_wrong_type(
    ws: Workspace,
) -> None:
    # Found by tests/fuzz: the flow checks looked these up in a dict (TypeError).
    path = ws.steps(
        """
        - id: [pause]
          wait: 1h
          goto: {step: done}
        - id: done
          branch: [{goto: [done]}]
        """
    )

    assert ws.problems(path) == [
        "6:9: expected text, got a list",
        "8:11: expected text, got a mapping",
        "9:9: step 'done' can never be reached",
        "10:21: expected text, got a list",
    ]


def test_unknown_goto_target_suggests_a_close_step(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
          goto: dne
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["8:11: unknown step 'dne'; did you mean 'done'?"]


def test_unknown_on_timeout_target_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: wait_for_open
          wait_for:
            event: email_opened
            timeout: 1d
            on_timeout: sms_nudge
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["10:19: unknown step 'sms_nudge'"]


def test_unknown_branch_target_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: vip_check
          branch:
            - when: "event.properties.cart_total > 500"
              goto: vip_offer
            - goto: done
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == ["9:15: unknown step 'vip_offer'"]


def test_step_that_can_never_be_reached_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
        - id: done
          end: true
        - id: orphan
          wait: 1d
        """
    )

    assert ws.problems(path) == ["10:9: step 'orphan' can never be reached"]


def test_step_reached_only_by_goto_is_reachable(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
          goto: later
        - id: skipped_over
          end: true
        - id: later
          end: true
        """
    )

    assert ws.problems(path) == ["9:9: step 'skipped_over' can never be reached"]


def test_steps_behind_an_unreachable_step_are_named_in_its_message(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
        - id: done
          end: true
        - id: offer
          split:
            - {weight: 1, goto: offer_a}
            - {weight: 1, goto: offer_b}
        - {id: offer_a, end: true}
        - {id: offer_b, end: true}
        """
    )

    assert ws.problems(path) == [
        "10:9: step 'offer' can never be reached (and so neither can offer_a, offer_b)"
    ]


def test_loop_with_no_wait_in_it_is_refused(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: pause
          wait: 1h
        - id: check
          branch:
            - when: "event.properties.paid"
              goto: done
            - goto: again
        - id: again
          update_profile:
            set: {nagged: true}
          goto: check
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == [
        "8:9: loop with no wait in it (check -> again -> check): a customer would go round "
        "forever; add a wait or wait_for step to the loop"
    ]


def test_loop_with_a_wait_in_it_is_accepted(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - when: "event.properties.paid"
              goto: done
        - id: pause
          wait: 1d
          goto: check
        - id: done
          end: true
        """
    )

    assert ws.compile(path).plan.next["pause"] == "check"


def test_step_with_two_actions_names_both(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: confused
          wait: 1h
          end: true
        """
    )

    assert ws.problems(path) == ["6:5: a step has exactly one action, this one has 2: wait, end"]


def test_step_with_no_action_lists_the_actions(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: nothing
          goto: nothing
        """
    )

    assert ws.problems(path)[0] == (
        "6:5: a step needs one action: wait, wait_for, send, branch, split, update_profile, "
        "webhook, end"
    )


# -- expressions -----------------------------------------------------------------------


def test_expression_that_does_not_parse_is_reported(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "event.properties.cart_total >="
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:9: expression does not parse: unexpected 'end of expression'"]


def test_misspelt_name_in_expression_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: vip_check
          branch:
            - when: "profle.lifetime_value > 500"
              goto: done
        - id: done
          end: true
        """
    )

    assert ws.problems(path) == [
        "8:15: unknown name 'profle'; did you mean 'profile'? (expressions can use event, "
        "trigger, profile, steps, journey, now, today, last(), count(), recent(), days(), "
        "hours(), minutes(), date(), local(), anniversary())"
    ]


def test_misspelt_name_inside_a_templated_value_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: remember
          update_profile:
            set:
              greeting: "Hi {{ profle.first_name }}"
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith("9:19: unknown name 'profle'")


def test_unknown_function_lists_the_available_ones(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "weeks(2) > hours(1)"
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == [
        "5:9: unknown function weeks(); available: anniversary, catalog, count, date, days, "
        "hours, last, local, minutes, recent, secret, viewed_products"
    ]


def test_unknown_filter_is_reported(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "event.properties.coupon | shout"
        steps:
          - {id: done, end: true}
        """
    )

    [problem] = ws.problems(path)
    assert problem == "5:9: unknown filter 'shout'; did you mean 'sort'?"


def test_private_attributes_are_refused(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "event.__class__"
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:9: attribute '__class__' is not allowed"]


def test_history_function_needs_a_quoted_event_name(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "count(order_placed) == 0"
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:9: count() takes the event name as a quoted string"]


def test_statements_are_not_allowed_in_values(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: remember
          update_profile:
            set:
              tier: "{% if profile.vip %}gold{% endif %}"
        """
    )

    assert ws.problems(path) == ["9:15: only {{ ... }} may appear in values, not {% ... %}"]


def test_expression_nested_deeper_than_python_can_parse_is_reported(ws: Workspace) -> None:
    # Found by tests/fuzz: Jinja2's parser recursed until RecursionError.
    path = ws.write(
        f"""
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "{"(" * 3000}1{")" * 3000}"
        steps:
          - {{id: done, end: true}}
        """
    )

    assert ws.problems(path) == ["5:9: expression is nested more than 100 levels deep"]


def test_an_expression_must_be_text_not_a_mapping(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: {total: 20}
        steps:
          - {id: done, end: true}
        """
    )

    assert ws.problems(path) == ["5:9: expected an expression as text, got {'total': 20}"]


# -- templates -------------------------------------------------------------------------


def test_missing_template_folder_is_reported(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    assert ws.problems(path) == [
        f"7:22: no template 'cart_reminder' (expected folder {ws.templates / 'cart_reminder'})"
    ]


def test_template_name_too_long_for_the_file_system_is_reported(ws: Workspace) -> None:
    # Found by tests/fuzz: looking up the folder raised OSError (file name too long).
    name = "a" * 300
    path = ws.steps(
        f"""
        - id: remind
          send: {{template: {name}, channels: [email]}}
        """
    )

    # Caught by the id's length (the column's) before the folder is looked up.
    assert ws.problems(path) == ["7:22: too long: 300 characters where at most 100 are allowed"]


def test_template_name_that_is_not_an_id_is_not_looked_up(ws: Workspace) -> None:
    outside = ws.templates.parent / "outside"
    outside.mkdir()
    (outside / "email.html").write_text("{% broken")
    path = ws.steps(
        """
        - id: remind
          send: {template: ../outside, channels: [email]}
        """
    )

    assert ws.problems(path) == [
        "7:22: '../outside' is not a valid id: use lowercase letters, digits and _"
    ]


def test_missing_file_for_a_listed_channel_is_reported_at_the_channel(ws: Workspace) -> None:
    ws.template("cart_reminder", ("email", "push"))
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [push, email, sms]}
        """
    )

    sms = ws.templates / "cart_reminder" / "sms.txt"
    assert ws.problems(path) == [
        f"7:61: template 'cart_reminder' has no sms.txt for channel sms ({sms})"
    ]


def test_channel_not_listed_needs_no_template_file(ws: Workspace) -> None:
    ws.template("cart_reminder", ("sms",))
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    assert ws.compile(path).plan.journey.steps[0].id == "remind"


def test_template_syntax_error_names_the_template_file_and_line(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("sms",))
    (folder / "sms.txt").write_text("Hello\n{{ profile.first_name }\n")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith(f"7:22: {folder / 'sms.txt'}:2: template does not parse:")


def test_a_misspelt_name_in_a_template_is_an_error_naming_it_and_its_line(
    ws: Workspace,
) -> None:
    folder = ws.template("cart_reminder", ("sms",))
    (folder / "sms.txt").write_text("Hello\n{{ profle.first_name }}, {{ bogus_fn() }}\n")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    assert ws.problems(path) == [
        f"7:22: {folder / 'sms.txt'}:2: unknown names 'bogus_fn' (line 2),"
        " 'profle' (line 2; did you mean 'profile'?): templates read profile, event, trigger,"
        " journey, now, today, unsubscribe_url and the expression functions"
    ]


def test_an_unknown_filter_in_a_template_is_an_error(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("sms",))
    (folder / "sms.txt").write_text("Hello {{ profile.first_name | titel }}\n")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    assert ws.problems(path) == [
        f"7:22: {folder / 'sms.txt'}:1: template does not parse: No filter named 'titel'."
    ]


def test_names_a_template_or_its_layout_sets_are_known(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("email",))
    layouts = folder.parent / "_layouts"
    layouts.mkdir()
    (layouts / "base.html").write_text(
        "{% set brand = 'Larkspur' %}"
        "{% block subject %}{% endblock %}{% block body %}{% endblock %}"
    )
    (layouts / "parts.html").write_text(
        "{% macro button(url) %}<a href='{{ url }}'>go</a>{% endmacro %}"
    )
    (folder / "email.html").write_text(
        '{% extends "_layouts/base.html" %}{% from "_layouts/parts.html" import button %}'
        "{% set first = profile.first_name %}"
        "{% block subject %}Hi {{ first }} from {{ brand }}{% endblock %}"
        "{% block body %}{% for item in trigger.properties.items_list %}{{ item }}"
        "{{ loop.index }}{% endfor %}{{ button(unsubscribe_url) }}"
        "{{ last('order_placed') }}{{ range(3) | list }}{% endblock %}"
    )
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    ws.compile(path)  # no problem


def test_syntax_error_in_a_locale_variant_is_reported(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("email",))
    (folder / "email.fr.html").write_text("{% block subject %}Panier{% endblock")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith(f"7:22: {folder / 'email.fr.html'}:1: template does not parse:")


def test_syntax_error_in_the_plain_text_email_is_reported(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("email",))
    (folder / "email.txt").write_text("{% if %}")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    [problem] = ws.problems(path)
    assert problem.startswith(f"7:22: {folder / 'email.txt'}:1: template does not parse:")


def test_email_needs_a_subject_block(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("email",))
    (folder / "email.html").write_text("<p>No subject here</p>")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    assert ws.problems(path) == [
        f"7:22: {folder / 'email.html'} has no {{% block subject %}}: email needs one"
    ]


def test_subject_block_may_come_from_the_layout(ws: Workspace) -> None:
    layouts = ws.templates / "_layouts"
    layouts.mkdir()
    (layouts / "base.html").write_text(
        "{% block subject %}News{% endblock %}<body>{% block content %}{% endblock %}</body>"
    )
    folder = ws.templates / "cart_reminder"
    folder.mkdir()
    (folder / "email.html").write_text(
        '{% extends "_layouts/base.html" %}{% block content %}Hi{% endblock %}'
    )
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    assert ws.compile(path).plan.journey.steps[0].id == "remind"


def test_extending_a_missing_layout_is_reported(ws: Workspace) -> None:
    folder = ws.templates / "cart_reminder"
    folder.mkdir()
    (folder / "email.html").write_text('{% extends "_layouts/nope.html" %}')
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [email]}
        """
    )

    layout = ws.templates / "_layouts" / "nope.html"
    assert ws.problems(path) == [
        f"7:22: {folder / 'email.html'}: extends {layout}, which does not exist"
    ]


def test_push_needs_a_title_and_a_body_block(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("push",))
    (folder / "push.txt").write_text("{% block title %}Your cart{% endblock %}")
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [push]}
        """
    )

    assert ws.problems(path) == [
        f"7:22: {folder / 'push.txt'} has no {{% block body %}}: push needs one"
    ]


def test_importing_macros_from_a_missing_file_is_reported(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("sms",))
    (folder / "sms.txt").write_text('{% from "_layouts/macros.txt" import money %}{{ money(1) }}')
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    macros = ws.templates / "_layouts" / "macros.txt"
    assert ws.problems(path) == [f"7:22: {folder / 'sms.txt'}: uses {macros}, which does not exist"]


def test_including_a_file_outside_the_templates_folder_is_reported(ws: Workspace) -> None:
    folder = ws.template("cart_reminder", ("sms",))
    (folder / "sms.txt").write_text('{% include "../../journeys/test_journey.yaml" %}')
    path = ws.steps(
        """
        - id: remind
          send: {template: cart_reminder, channels: [sms]}
        """
    )

    outside = ws.templates / "../../journeys/test_journey.yaml"
    assert ws.problems(path) == [
        f"7:22: {folder / 'sms.txt'}: uses {outside}, outside the templates folder"
    ]


def test_syntax_error_in_a_shared_layout_is_reported_by_each_step_using_it(
    ws: Workspace,
) -> None:
    layouts = ws.templates / "_layouts"
    layouts.mkdir()
    (layouts / "base.html").write_text("{% block subject %}{% endblock %}{% block content %}")
    for name in ("first", "second"):
        folder = ws.templates / name
        folder.mkdir()
        (folder / "email.html").write_text('{% extends "_layouts/base.html" %}')
    path = ws.steps(
        """
        - id: one
          send: {template: first, channels: [email]}
        - id: two
          send: {template: second, channels: [email]}
        """
    )

    problems = ws.problems(path)

    assert [p.split(": ")[0] for p in problems] == ["7:22", "9:22"]
    assert all(f"{layouts / 'base.html'}:1: template does not parse:" in p for p in problems)


# -- all at once -----------------------------------------------------------------------


def test_every_problem_in_a_file_is_reported_at_once_in_file_order(ws: Workspace) -> None:
    path = ws.write(
        """
        id: test_journey
        name: Test
        entry:
          event: cart_abandoned
          when: "profle.vip"
          holdout: 200%
        steps:
          - id: pause
            wait: soon
          - id: remind
            send: {template: cart_reminder, channels: [email]}
            goto: nowhere
          - id: done
            end: true
        """
    )

    lines = [problem.split(":")[0] for problem in ws.problems(path)]

    assert lines == ["5", "6", "9", "11", "12"]


def test_validate_returns_what_compiles_and_every_problem_of_every_file(
    ws: Workspace,
) -> None:
    good = ws.steps("- {id: done, end: true}", stem="good")
    bad = ws.steps("- {id: pause, wait: never}", stem="bad")

    compiled, problems = validate([ws.journeys], ws.templates)

    assert [c.path for c in compiled] == [good]
    assert [p.file for p in problems] == [str(bad)]


def test_compile_dir_raises_with_the_problems_of_all_files(ws: Workspace) -> None:
    ws.steps("- {id: pause, wait: never}", stem="first")
    ws.steps("- {id: pause, wait: later}", stem="second")

    with pytest.raises(JourneyError) as caught:
        compile_dir(ws.journeys, ws.templates)

    assert [Path(p.file).name for p in caught.value.problems] == ["first.yaml", "second.yaml"]


def test_two_files_with_the_same_journey_id_are_both_reported(ws: Workspace) -> None:
    first = ws.steps("- {id: done, end: true}", stem="promo")
    other = ws.journeys / "other"
    other.mkdir()
    second = other / "promo.yml"
    second.write_text(first.read_text())

    compiled, problems = validate([ws.journeys, second], ws.templates)

    assert compiled == []
    assert [str(p) for p in problems] == [
        f"{second}:1:5: journey id 'promo' is also used by {first}",
        f"{first}:1:5: journey id 'promo' is also used by {second}",
    ]
