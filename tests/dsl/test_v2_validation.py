"""`validate` knows the DSL v2 additions of part A and checks them as it checks the rest:
each problem at file:line:col, with a did-you-mean where a near name exists."""

from __future__ import annotations

from tests.dsl.conftest import Workspace


def test_on_error_must_name_a_step_and_makes_its_target_reachable(ws: Workspace) -> None:
    ws.template("cart_reminder")
    good = ws.steps(
        """
        - id: check
          branch:
            - when: "event.properties.total > 10"
              goto: remind
          on_error: oops
        - id: remind
          send: {template: cart_reminder, channels: [email]}
          goto: done
        - id: oops
          update_profile: {set: {broken: true}}
        - id: done
          end: true
        """
    )
    assert ws.compile(good).plan.journey.steps[0].on_error == "oops"
    bad = ws.steps(
        """
        - id: check
          branch:
            - when: "event.properties.total > 10"
              goto: done
          on_error: opps
        - id: oops
          update_profile: {set: {broken: true}}
        - id: done
          end: true
        """
    )
    assert "10:15: unknown step 'opps'; did you mean 'oops'?" in ws.problems(bad)


def test_wait_for_takes_its_own_on_error(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: wait_review
          wait_for: {event: review_submitted, when: "event.properties.stars >= 4",
                     timeout: 3d, on_error: unclear}
        - id: done
          end: true
        - id: unclear
          update_profile: {set: {review: unclear}}
        """
    )
    assert ws.compile(path).plan.journey.steps[0].wait_for.on_error == "unclear"


def test_a_default_case_that_is_not_last_is_warned_about(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - goto: done
            - when: "event.properties.total > 10"
              goto: big
        - id: big
          update_profile: {set: {big: true}}
        - id: done
          end: true
        """
    )
    compiled = ws.compile(path)
    assert [f"{w.line}:{w.column}: {w.message}" for w in compiled.warnings] == [
        "8:9: the default case (no when) is case 1 of 2: it is always taken, so the 1 case "
        "after it never will be; put the default case last"
    ]
    assert compiled.warnings[0].severity == "warning"


SENDS = """
- id: first_try
  send: {template: cart_reminder, channels: [push]}
- id: check
  branch:
    - when: "{expression}"
      goto: sms
    - goto: done
- id: sms
  send: {template: cart_reminder, channels: [sms]}
- id: done
  end: true
"""


def sends(ws: Workspace, expression: str) -> list[str]:
    ws.template("cart_reminder")
    path = ws.steps(SENDS.replace("{expression}", expression))
    try:
        ws.compile(path)
    except Exception:
        return ws.problems(path)
    return []


def test_steps_reads_what_an_earlier_send_did(ws: Workspace) -> None:
    assert sends(ws, "steps.first_try.channel != 'push'") == []
    assert sends(ws, "steps.first_try.outcome == 'skipped'") == []


def test_steps_of_no_send_step_is_an_error_with_a_did_you_mean(ws: Workspace) -> None:
    assert sends(ws, "steps.first_tyr.channel != 'push'") == [
        "10:15: steps.first_tyr: 'first_tyr' is not a step; did you mean steps.first_try?; "
        "steps.<id> reads what a send step did"
    ]
    assert sends(ws, "steps.check.channel != 'push'") == [
        "10:15: steps.check: 'check' is not a send step; steps.<id> reads what a send step did"
    ]


def test_steps_of_a_send_that_comes_later_is_an_error(ws: Workspace) -> None:
    assert sends(ws, "steps.sms.outcome == 'sent'") == [
        "10:15: steps.sms: step 'sms' cannot have run before step 'check' "
        "(it comes later on every path)"
    ]


def test_steps_reads_only_channel_outcome_and_reason(ws: Workspace) -> None:
    assert sends(ws, "steps.first_try.chanel == 'push'") == [
        "10:15: steps.first_try.chanel: a send step leaves channel, outcome and reason; "
        "did you mean steps.first_try.channel?"
    ]


def test_an_unknown_filter_is_an_error_where_it_is_written(ws: Workspace) -> None:
    assert sends(ws, "event.properties['items'] | mapp(attribute='sku') | length > 1") == [
        "10:15: unknown filter 'mapp'; did you mean 'map'?"
    ]


WEBHOOK = """
- id: callback
  webhook:
    url: "https://helpdesk.example.com/api/callbacks"
    headers: {Authorization: "Bearer {{ secret('HELPDESK_TOKEN') }}"}
    body: {customer: "{{ profile.id }}", key: "{{ secret('HELPDESK_KEY') }}"}
- id: done
  end: true
"""


def test_validate_lists_the_secrets_a_journey_reads(ws: Workspace) -> None:
    compiled = ws.compile(ws.steps(WEBHOOK))
    assert sorted(compiled.secrets) == ["HELPDESK_KEY", "HELPDESK_TOKEN"]
    assert compiled.secrets["HELPDESK_TOKEN"] == (9, 32)


def test_a_secret_outside_a_webhook_is_an_error(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: keep
          update_profile: {set: {token: "{{ secret('HELPDESK_TOKEN') }}"}}
        """
    )
    assert ws.problems(path) == [
        "7:35: secret('HELPDESK_TOKEN') may only be used in a webhook's url, headers or body, "
        "where it goes to the system it is for and nowhere else"
    ]


def test_a_secret_must_be_named_in_capitals_and_not_be_a_service_setting(ws: Workspace) -> None:
    lower = ws.steps(WEBHOOK.replace("HELPDESK_KEY", "helpdesk_key"))
    assert "a secret's name is written in capitals" in ws.problems(lower)[0]
    own = ws.steps(WEBHOOK.replace("HELPDESK_KEY", "JOURNEYMAN_ADMIN_TOKEN"))
    assert "one of the service's own settings" in ws.problems(own)[0]


def test_on_error_inside_a_branch_case_says_where_it_goes(ws: Workspace) -> None:
    path = ws.steps(
        """
        - id: check
          branch:
            - when: "event.properties.total > 10"
              goto: done
              on_error: done
        - id: done
          end: true
        """
    )
    assert ws.problems(path) == [
        "10:9: on_error does not go here: it goes on the step, beside its action "
        "(on_error: <step id>), or inside wait_for"
    ]
