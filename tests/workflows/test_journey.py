"""The journey interpreter, one behavior per test, on the time-skipping test server."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowHistory

from journeyman.contracts import (
    CURRENT_ERA,
    CustomerEvent,
    JourneyInput,
    JourneyResult,
    RunStatus,
)
from journeyman.dsl.chance import split_choice
from journeyman.names import EVENT_SIGNAL, JOURNEY_WORKFLOW
from journeyman.storage.models import Customer, JourneyRun, StepLog
from tests.harness import actions

CART = """
id: cart
name: Cart
entry:
  event: cart_abandoned
  key: "event.properties.cart_id"
  reentry: {reentry}
goal:
  event: order_placed
  when: "event.properties.cart_id == trigger.properties.cart_id"
exit:
  - event: cart_emptied
steps:
  - id: wait_an_hour
    wait: 1h
  - id: remind
    send: {{template: reminder, channels: [push, email, sms]}}
  - id: wait_for_open
    wait_for: {{event: email_opened, timeout: 1d, on_timeout: nudge}}
  - id: thanks
    send: {{template: reminder, channels: [email]}}
    goto: done
  - id: nudge
    send: {{template: reminder, channels: [sms]}}
  - id: done
    end: true
"""


def cart(reentry: str = "never") -> str:
    return CART.format(reentry=reentry)


async def test_customer_walks_every_step_and_times_out_to_the_nudge(harness):
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    await harness.event("cart_abandoned", cart_id="k1")
    result = await harness.result("cart/c1/k1")
    assert actions(result) == [
        ("entry", "entered"),
        ("wait_an_hour", "waited"),
        ("remind", "sent"),
        ("wait_for_open", "timeout"),
        ("nudge", "sent"),
        ("done", "ended"),
    ]
    assert result.outcome == "ended"
    assert [m.channel for m in harness.outbox()] == ["email", "sms"]


async def test_wait_for_event_takes_the_event_path(harness):
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+15550001")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(hours=2))
    routed = await harness.event("email_opened")
    assert routed.delivered == ["cart/c1/k1"]
    result = await harness.result("cart/c1/k1")
    assert ("wait_for_open", "event") in actions(result)
    assert ("thanks", "sent") in actions(result)
    assert ("nudge", "sent") not in actions(result)


async def test_event_before_wait_for_starts_does_not_count(harness):
    """wait_for waits for the *next* matching event, not one already past."""
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com", phone="+1555")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.event("email_opened")  # during the first hour's wait
    result = await harness.result("cart/c1/k1")
    assert ("wait_for_open", "timeout") in actions(result)


@pytest.mark.parametrize(
    ("after", "interrupted_step"),
    [
        (timedelta(minutes=10), "wait_an_hour"),  # during a wait
        (timedelta(hours=5), "wait_for_open"),  # during a wait_for
    ],
)
async def test_goal_converts_at_any_wait(harness, after, interrupted_step):
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(after)
    await harness.event("order_placed", cart_id="k1")
    result = await harness.result("cart/c1/k1")
    assert result.outcome == "converted"
    assert result.path[-1].step == interrupted_step
    assert result.path[-1].action == "converted"


async def test_goal_condition_compares_with_the_trigger(harness):
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(minutes=10))
    await harness.event("order_placed", cart_id="another_cart")
    result = await harness.result("cart/c1/k1")
    assert result.outcome == "ended"


async def test_exit_event_ends_the_run_during_a_wait(harness):
    await harness.journey(cart())
    harness.customer("c1", email="ana@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(minutes=30))
    await harness.event("cart_emptied")
    result = await harness.result("cart/c1/k1")
    assert result.outcome == "exited"
    assert harness.outbox() == []


@pytest.mark.clock_sensitive
async def test_goal_interrupts_a_send_deferred_by_quiet_hours(harness):
    await harness.journey(
        """
        id: quiet
        name: Quiet
        entry: {event: signed_up}
        goal: {event: order_placed}
        settings: {quiet_hours: "21:00-08:00"}
        steps:
          - id: evening
            wait: {until: "22:00"}
          - id: text
            send: {template: hello, channels: [sms]}
        """
    )
    harness.customer("c1", phone="+15550001", timezone="UTC")
    await harness.event("signed_up")
    await harness.sleep_past("22:00", by=timedelta(hours=1))  # the text held until 08:00
    status = await harness.handle("quiet/c1").query("state", result_type=RunStatus)
    assert [p.action for p in status.path][-1] == "deferred"
    await harness.event("order_placed")
    result = await harness.result("quiet/c1")
    assert result.outcome == "converted"
    assert harness.outbox() == []


@pytest.mark.clock_sensitive
async def test_quiet_hours_delay_sms_until_the_window_ends(harness):
    await harness.journey(
        """
        id: quiet
        name: Quiet
        entry: {event: signed_up}
        settings: {quiet_hours: "21:00-08:00"}
        steps:
          - id: wait_until_night
            wait: {until: "22:00"}
          - id: text
            send: {template: hello, channels: [sms]}
        """
    )
    harness.customer("c1", phone="+15550001", timezone="America/New_York")
    await harness.event("signed_up")
    result = await harness.result("quiet/c1")
    sent = result.path[-1]
    assert sent.action == "sent"
    local = sent.at.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (8, 0)
    assert "deferred" in [p.action for p in result.path]


@pytest.mark.clock_sensitive
async def test_wait_until_uses_the_customers_time_zone(harness):
    await harness.journey(
        """
        id: morning
        name: Morning
        entry: {event: signed_up}
        steps:
          - id: morning
            wait: {until: "09:30"}
          - id: hello
            send: {template: hello, channels: [email]}
        """
    )
    harness.customer("c1", email="a@example.com", timezone="Asia/Tokyo")
    await harness.event("signed_up")
    result = await harness.result("morning/c1")
    waited = result.path[1]
    tokyo = waited.at.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo"))
    assert (tokyo.hour, tokyo.minute) == (9, 30)
    assert waited.at - result.path[0].at <= timedelta(days=1)


async def test_reentry_never_keeps_a_customer_out_after_finishing(harness):
    await harness.journey(cart("never"))
    harness.customer("c1", email="a@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.result("cart/c1/k1")
    again = await harness.event("cart_abandoned", cart_id="k1")
    assert again.entered == []
    assert "reentry: never" in again.skipped[0].reason


async def test_reentry_always_enters_again_after_finishing_but_not_while_running(harness):
    await harness.journey(cart("always"))
    harness.customer("c1", email="a@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    during = await harness.event("cart_abandoned", cart_id="k1")
    assert during.entered == []
    assert "already in the journey" in during.skipped[0].reason
    await harness.result("cart/c1/k1")
    after = await harness.event("cart_abandoned", cart_id="k1")
    assert after.entered == ["cart/c1/k1"]
    await harness.result("cart/c1/k1")
    with harness.db.session() as session:
        runs = session.scalars(select(JourneyRun).where(JourneyRun.customer_id == "c1")).all()
    assert [r.status for r in runs] == ["completed", "completed"]


async def test_reentry_after_a_duration_waits_that_long_since_the_last_entry(harness):
    await harness.journey(cart("after 7d"))
    harness.customer("c1", email="a@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.result("cart/c1/k1")  # about a day later
    too_soon = await harness.event("cart_abandoned", cart_id="k1")
    assert too_soon.entered == []
    await harness.sleep(timedelta(days=7))
    later = await harness.event("cart_abandoned", cart_id="k1")
    assert later.entered == ["cart/c1/k1"]


async def test_each_entry_key_is_its_own_run(harness):
    await harness.journey(cart())
    harness.customer("c1", email="a@example.com")
    first = await harness.event("cart_abandoned", cart_id="k1")
    second = await harness.event("cart_abandoned", cart_id="k2")
    assert first.entered == ["cart/c1/k1"]
    assert second.entered == ["cart/c1/k2"]
    await harness.sleep(timedelta(minutes=5))
    await harness.event("order_placed", cart_id="k1")
    assert (await harness.result("cart/c1/k1")).outcome == "converted"
    assert (await harness.result("cart/c1/k2")).outcome == "ended"


async def test_entry_condition_filters_customers(harness):
    await harness.journey(
        """
        id: big_carts
        name: Big carts
        entry:
          event: cart_abandoned
          when: "event.properties.cart_total >= 20"
        steps:
          - id: hello
            send: {template: hello, channels: [email]}
        """
    )
    harness.customer("c1", email="a@example.com")
    small = await harness.event("cart_abandoned", cart_total=5)
    assert small.entered == []
    assert "entry condition false" in small.skipped[0].reason
    big = await harness.event("cart_abandoned", cart_total=25)
    assert big.entered == ["big_carts/c1"]


async def test_an_entry_condition_reads_the_journey_as_the_run_would_see_it(harness):
    """`journey` in `entry.when` has the fields it has in the run: `entered_at` is now."""
    await harness.journey(
        """
        id: weekday_carts
        name: Weekday carts
        entry:
          event: cart_abandoned
          when: "journey.id == 'weekday_carts' and journey.entered_at == now"
        steps:
          - {id: done, end: true}
        """
    )
    harness.customer("c1")
    routed = await harness.event("cart_abandoned")
    assert (routed.entered, routed.skipped) == (["weekday_carts/c1"], [])


async def test_duplicate_event_reaches_a_run_once(harness):
    await harness.journey(cart())
    harness.customer("c1", email="a@example.com", phone="+1555")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(hours=2))
    await harness.event("email_opened", message_id="m-1")
    await harness.event("email_opened", message_id="m-1")
    result = await harness.result("cart/c1/k1")
    assert actions(result).count(("wait_for_open", "event")) == 1


BRANCHY = """
id: branchy
name: Branchy
entry: {event: signed_up}
steps:
  - id: vip_check
    branch:
      - when: "profile.lifetime_value > 500"
        goto: vip
      - when: "event.properties.plan == 'pro'"
        goto: pro
      - goto: regular
  - id: vip
    update_profile: {set: {segment: "vip-{{ profile.tier }}"}}
    goto: done
  - id: pro
    update_profile: {set: {segment: pro}}
    goto: done
  - id: regular
    update_profile: {set: {segment: regular, visits: "{{ 1 + 1 }}"}}
  - id: done
    end: true
"""


@pytest.mark.parametrize(
    ("traits", "properties", "segment"),
    [
        ({"lifetime_value": 900, "tier": "gold"}, {}, "vip-gold"),
        ({"lifetime_value": 10}, {"plan": "pro"}, "pro"),
        ({"lifetime_value": 10}, {"plan": "free"}, "regular"),
    ],
)
async def test_branch_picks_the_first_true_case_and_update_profile_writes_it(
    harness, traits, properties, segment
):
    await harness.journey(BRANCHY)
    harness.customer("c1", **traits)
    await harness.event("signed_up", **properties)
    await harness.result("branchy/c1")
    with harness.db.session() as session:
        assert session.get(Customer, "c1").traits["segment"] == segment


async def test_update_profile_keeps_expression_types(harness):
    await harness.journey(BRANCHY)
    harness.customer("c1", lifetime_value=1)
    await harness.event("signed_up", plan="free")  # a plan: its case must be able to say no
    await harness.result("branchy/c1")
    with harness.db.session() as session:
        assert session.get(Customer, "c1").traits["visits"] == 2


async def test_expression_error_is_recorded_and_never_taken_as_false(harness):
    await harness.journey(BRANCHY)
    harness.customer("c1")  # no lifetime_value trait
    await harness.event("signed_up", plan="pro")
    result = await harness.result("branchy/c1")
    errors = [p for p in result.path if p.action == "error"]
    assert errors and "profile.lifetime_value is not defined" in errors[0].detail
    # DSL v2: the cases after a failing one are not tried, the default is not taken.
    assert result.outcome == "error"
    assert ("pro", "updated") not in actions(result)


async def test_update_profile_value_that_fails_is_recorded_and_the_run_goes_on(harness):
    await harness.journey(
        """
        id: tagging
        name: Tagging
        entry: {event: signed_up}
        steps:
          - id: tag
            update_profile: {set: {greeting: "Hi {{ profile.first_name }}"}}
          - id: done
            end: true
        """
    )
    harness.customer("c1")  # no first_name
    await harness.event("signed_up")
    result = await harness.result("tagging/c1")
    assert result.outcome == "ended"
    [error] = [p for p in result.path if p.action == "error"]
    assert error.step == "tag"
    assert "profile.first_name is not defined" in error.detail
    with harness.db.session() as session:
        assert "greeting" not in session.get(Customer, "c1").traits


SPLIT = """
id: ab
name: AB
entry: {event: signed_up}
steps:
  - id: pick
    split:
      - {weight: 50, goto: a}
      - {weight: 50, goto: b}
  - id: a
    end: true
  - id: b
    end: true
"""


async def test_split_is_stable_per_customer_and_balanced(harness):
    await harness.journey(SPLIT)
    customers = [f"c{i}" for i in range(40)]
    for customer in customers:
        harness.customer(customer)
        await harness.event("signed_up", customer_id=customer)
    arms = {}
    for customer in customers:
        result = await harness.result(f"ab/{customer}")
        arms[customer] = result.path[-1].step
    # Written out, not recomputed: a change to how customers are split would move
    # customers already in a running experiment from one arm to the other.
    expected = "baabaaabbaabaaababaabaaabbbbbbabaabbabbb"
    assert "".join(arms[c] for c in customers) == expected
    assert list(arms.values()).count("a") == 20


def test_split_weights_shape_the_distribution():
    picks = [split_choice("j", f"c{i}", "s", [90, 10]) for i in range(2000)]
    assert 0.86 < picks.count(0) / len(picks) < 0.94


async def test_holdout_customers_walk_the_journey_but_get_nothing(harness):
    await harness.journey(
        """
        id: held
        name: Held
        entry: {event: signed_up, holdout: 100%}
        steps:
          - id: hello
            send: {template: hello, channels: [email]}
        """
    )
    harness.customer("c1", email="a@example.com")
    await harness.event("signed_up")
    result = await harness.result("held/c1")
    assert ("hello", "held_out") in actions(result)
    assert harness.outbox() == []
    with harness.db.session() as session:
        assert session.scalars(select(JourneyRun)).one().holdout is True


async def test_send_picks_the_first_reachable_channel_and_says_why_others_were_passed(harness):
    await harness.journey(
        """
        id: reach
        name: Reach
        entry: {event: signed_up}
        steps:
          - id: hello
            send: {template: hello, channels: [push, sms, email]}
        """
    )
    harness.customer("c1", email="a@example.com")
    await harness.event("signed_up")
    result = await harness.result("reach/c1")
    assert result.path[-1].action == "sent"
    assert result.path[-1].channel == "email"
    [delivery] = harness.deliveries()
    assert delivery.channel == "email"


async def test_send_with_no_reachable_channel_is_skipped_with_the_reason(harness):
    await harness.journey(
        """
        id: reach
        name: Reach
        entry: {event: signed_up}
        steps:
          - id: hello
            send: {template: hello, channels: [push, sms]}
          - id: after
            end: true
        """
    )
    harness.customer("c1", email="a@example.com")
    await harness.event("signed_up")
    result = await harness.result("reach/c1")
    skipped = result.path[1]
    assert skipped.action == "skipped"
    assert "push: not reachable (no push token)" in skipped.detail
    assert "sms: not reachable (no phone number)" in skipped.detail
    assert result.path[-1].step == "after"


async def test_push_goes_to_the_customers_token(harness):
    await harness.journey(
        """
        id: pushy
        name: Pushy
        entry: {event: signed_up}
        steps:
          - id: hello
            send: {template: hello, channels: [push]}
        """
    )
    harness.customer("c1", push_tokens=["tok-1"])
    await harness.event("signed_up")
    await harness.result("pushy/c1")
    [message] = harness.outbox()
    assert (message.channel, message.to, message.subject, message.body) == (
        "push",
        "tok-1",
        "Hi",
        "Hello",
    )


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, str, dict[str, str], bytes]] = []
    status = 200

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        _Hook.received.append(
            (self.command, self.path, dict(self.headers), self.rfile.read(length))
        )
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook_server() -> Iterator[str]:
    _Hook.received = []
    _Hook.status = 200
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


WEBHOOK = """
id: crm
name: CRM
entry: {{event: signed_up}}
steps:
  - id: notify
    webhook:
      url: "{url}/customers/{{{{ profile.id }}}}"
      body:
        customer: "{{{{ profile.id }}}}"
        plan: "{{{{ event.properties.plan }}}}"
        score: "{{{{ 2 * 21 }}}}"
  - id: done
    end: true
"""


async def test_webhook_posts_the_rendered_body_with_an_idempotency_key(harness, hook_server):
    await harness.journey(WEBHOOK.format(url=hook_server))
    harness.customer("c1")
    await harness.event("signed_up", plan="pro")
    result = await harness.result("crm/c1")
    assert ("notify", "webhook") in actions(result)
    [(method, path, headers, body)] = _Hook.received
    assert (method, path) == ("POST", "/customers/c1")
    assert json.loads(body) == {"customer": "c1", "plan": "pro", "score": 42}
    assert headers["Idempotency-Key"].endswith("/notify/1")


async def test_webhook_rejected_for_good_is_recorded_and_the_journey_goes_on(harness, hook_server):
    _Hook.status = 400
    await harness.journey(WEBHOOK.format(url=hook_server))
    harness.customer("c1")
    await harness.event("signed_up", plan="pro")
    result = await harness.result("crm/c1")
    failed = [p for p in result.path if p.action == "failed"]
    assert failed and "400" in failed[0].detail
    assert result.path[-1].step == "done"
    assert len(_Hook.received) == 1


async def test_state_query_shows_the_current_step_and_path(harness):
    await harness.journey(cart())
    harness.customer("c1", email="a@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(hours=2))
    status = await harness.handle("cart/c1/k1").query("state", result_type=RunStatus)
    assert status.current_step == "wait_for_open"
    assert status.waiting_for == "email_opened"
    assert [p.step for p in status.path] == ["entry", "wait_an_hour", "remind"]


async def test_search_attributes_track_the_current_step(harness):
    await harness.journey(cart())
    harness.customer("c1", email="a@example.com")
    await harness.event("cart_abandoned", cart_id="k1")
    await harness.sleep(timedelta(hours=2))
    description = await harness.handle("cart/c1/k1").describe()
    attributes = {
        k.name: v for k, v in ((p.key, p.value) for p in description.typed_search_attributes)
    }
    assert attributes["JourneyId"] == "cart"
    assert attributes["CustomerId"] == "c1"
    assert attributes["JourneyStep"] == "wait_for_open"
    assert len(attributes["JourneyVersion"]) == 12


LOOP = """
id: loop
name: Loop
entry: {event: signed_up}
goal: {event: order_placed}
steps:
  - id: pause
    wait: 1h
  - id: ping
    send: {template: hello, channels: [email]}
    goto: pause
"""


def _patch_markers_and_era(history: WorkflowHistory) -> tuple[int, int]:
    """The patch markers a run recorded, with `TemporalChangeVersion` upserts, and the
    era of its input."""
    marked = sum(
        1
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        and event.marker_recorded_event_attributes.marker_name == "core_patch"
    )
    upserts = sum(
        1
        for event in history.events
        if event.HasField("upsert_workflow_search_attributes_event_attributes")
        and "TemporalChangeVersion"
        in event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
    )
    assert marked == upserts
    started = history.events[0].workflow_execution_started_event_attributes
    return marked, int(json.loads(started.input.payloads[0].data).get("era", 0))


# Era 0: a chain started before eras (signal-with-start, no `era`), which a new worker
# continues as before; era 1: as the router starts runs since.
@pytest.mark.parametrize("era", [0, CURRENT_ERA])
async def test_long_runs_continue_as_new_and_keep_their_state(harness, era):
    catalog = await harness.journey(LOOP)
    harness.customer("c1", email="a@example.com")
    plan = catalog.compiled["loop"].plan
    trigger = CustomerEvent("t-1", "signed_up", {}, datetime.now(UTC))
    handle = await harness.client.start_workflow(
        JOURNEY_WORKFLOW,
        JourneyInput(plan=plan, customer_id="c1", history_limit=40, era=era),
        id="loop/c1",
        task_queue=harness.task_queue,
        start_signal=EVENT_SIGNAL,
        start_signal_args=[trigger],
        result_type=JourneyResult,
    )
    harness.started.add("loop/c1")
    await harness.sleep(timedelta(hours=30))
    await handle.signal(EVENT_SIGNAL, CustomerEvent("o-1", "order_placed", {}, datetime.now(UTC)))
    result = await harness.result("loop/c1")
    assert result.outcome == "converted"
    description = await harness.handle("loop/c1").describe()
    assert description.run_id != handle.first_execution_run_id  # it continued as new
    sends = [d.idempotency_key for d in harness.deliveries()]
    assert len(sends) == len(set(sends)) >= 25  # every visit its own key, none twice
    assert result.path[0].action == "entered"  # the path kept its beginning
    # Each run of the chain keeps the era it was started in: an era 0 run asks its one
    # patch anew (a new run records its marker), an era 1 run asks none.
    first = await harness.client.get_workflow_handle(
        "loop/c1", run_id=handle.first_execution_run_id
    ).fetch_history()
    last = await harness.handle("loop/c1").fetch_history()
    expected = (1, 0) if era == 0 else (0, CURRENT_ERA)
    assert _patch_markers_and_era(first) == _patch_markers_and_era(last) == expected


async def test_editing_a_journey_does_not_change_a_run_in_progress(harness):
    await harness.journey(cart())
    harness.customer("c1", email="a@example.com", phone="+1555")
    await harness.event("cart_abandoned", cart_id="k1")
    old_version = (await harness.handle("cart/c1/k1").query("state", result_type=RunStatus)).version
    await harness.journey(cart().replace("wait: 1h", "wait: 3h"))
    await harness.event("cart_abandoned", cart_id="k2")
    first = await harness.result("cart/c1/k1")
    second = await harness.result("cart/c1/k2")
    assert timedelta(hours=1) <= first.path[1].at - first.path[0].at < timedelta(hours=1, minutes=1)
    assert (
        timedelta(hours=3) <= second.path[1].at - second.path[0].at < timedelta(hours=3, minutes=1)
    )
    status = await harness.handle("cart/c1/k2").query("state", result_type=RunStatus)
    assert status.version != old_version


SECRET_WEBHOOK = """
id: crm
name: CRM
entry: {{event: signed_up}}
steps:
  - id: notify
    webhook:
      url: "{url}/customers/{{{{ profile.id }}}}?key={{{{ secret('CRM_TOKEN') }}}}"
      headers: {{Authorization: "Bearer {{{{ secret('CRM_TOKEN') }}}}"}}
      body: {{customer: "{{{{ profile.id }}}}"}}
  - id: done
    end: true
"""


async def test_a_webhook_secret_reaches_the_system_and_nothing_else(
    harness, hook_server, monkeypatch
):
    token = "crm_live_3e9a7d1c55"
    monkeypatch.setenv("CRM_TOKEN", token)
    await harness.journey(SECRET_WEBHOOK.format(url=hook_server))
    harness.customer("c1")
    await harness.event("signed_up")
    result = await harness.result("crm/c1")
    [(_, path, headers, _)] = _Hook.received
    assert path == f"/customers/c1?key={token}"
    assert headers["Authorization"] == f"Bearer {token}"
    [called] = [p for p in result.path if p.action == "webhook"]
    assert called.detail.endswith("/customers/c1?key=[secret CRM_TOKEN] -> 200")
    history = await harness.handle("crm/c1").fetch_history()
    payloads = _decoded_payloads(json.loads(history.to_json()))
    assert any("[secret CRM_TOKEN]" in p for p in payloads)  # the result, masked
    assert not [p for p in payloads if token in p]
    assert token not in history.to_json()
    with harness.db.session() as session:
        logged = session.scalars(select(StepLog.detail).where(StepLog.step_id == "notify")).all()
    assert logged and token not in json.dumps(logged)


def _decoded_payloads(item: object) -> list[str]:
    """Every payload's data in a history, decoded from base64 (where they hide)."""
    found: list[str] = []
    if isinstance(item, dict):
        data = item.get("data")
        if isinstance(data, str) and "metadata" in item:
            found.append(base64.b64decode(data).decode("utf-8", "replace"))
        for value in item.values():
            found.extend(_decoded_payloads(value))
    elif isinstance(item, list):
        for value in item:
            found.extend(_decoded_payloads(value))
    return found
