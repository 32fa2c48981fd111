"""DSL v2: `steps.<id>.channel|outcome|reason` after a send step ran, and `wait: {at}`
sleeping until the instant an expression gives (on a durable timer)."""

from __future__ import annotations

from datetime import timedelta

from journeyman.storage.models import Customer
from tests.harness import actions

FALLBACK = """
id: fallback
name: Fallback
entry: {event: order_shipped}
steps:
  - id: push_first
    send: {template: shipped, channels: [push]}
  - id: check
    branch:
      - when: "steps.push_first.channel == 'push'"
        goto: done
      - goto: by_sms
  - id: by_sms
    send: {template: shipped, channels: [sms]}
  - id: note
    update_profile:
      set: {last_push: "{{ steps.push_first.outcome }}: {{ steps.push_first.reason }}"}
  - id: done
    end: true
"""


async def test_a_push_that_went_out_is_not_followed_by_a_text(harness):
    await harness.journey(FALLBACK)
    harness.customer("c1", phone="+15555550100", push_tokens=["tok-1"])
    await harness.event("order_shipped")
    result = await harness.result("fallback/c1")
    assert ("push_first", "sent") in actions(result)
    assert ("by_sms", "sent") not in actions(result)
    assert [m.channel for m in harness.outbox("c1")] == ["push"]


async def test_a_push_that_could_not_go_out_falls_back_to_a_text(harness):
    await harness.journey(FALLBACK)
    harness.customer("c1", phone="+15555550100")  # no push token
    await harness.event("order_shipped")
    result = await harness.result("fallback/c1")
    assert ("push_first", "skipped") in actions(result)
    assert ("by_sms", "sent") in actions(result)
    assert [m.channel for m in harness.outbox("c1")] == ["sms"]
    with harness.db.session() as session:
        note = session.get(Customer, "c1").traits["last_push"]
    assert note.startswith("skipped: ")
    assert "push" in note


DELIVERED = """
id: delivered
name: Delivered
entry: {event: order_delivered}
steps:
  - id: three_days_after_delivery
    wait: {at: "trigger.properties.delivered_at + days(3)"}
  - id: ask
    update_profile: {set: {asked_at: "{{ now }}"}}
"""


async def test_wait_at_sleeps_until_the_instant_the_expression_gives(harness):
    await harness.journey(DELIVERED)
    harness.customer("c1")
    delivered = (await harness.now()) - timedelta(days=1)
    await harness.event("order_delivered", delivered_at=delivered.isoformat())
    result = await harness.result("delivered/c1", step=timedelta(hours=1))
    [waited] = [p for p in result.path if p.step == "three_days_after_delivery"]
    assert waited.at >= delivered + timedelta(days=3)
    assert waited.at < delivered + timedelta(days=3, minutes=1)


async def test_wait_at_an_instant_already_past_does_not_wait(harness):
    await harness.journey(DELIVERED)
    harness.customer("c1")
    start = await harness.now()
    await harness.event("order_delivered", delivered_at="2020-01-01T00:00:00Z")
    result = await harness.result("delivered/c1", step=timedelta(minutes=1))
    [waited] = [p for p in result.path if p.step == "three_days_after_delivery"]
    assert "has passed" in waited.detail
    assert waited.at - start < timedelta(minutes=1)


async def test_wait_at_something_that_is_no_instant_ends_the_run_in_error(harness):
    await harness.journey(DELIVERED)
    harness.customer("c1")
    await harness.event("order_delivered", delivered_at="next tuesday")
    result = await harness.result("delivered/c1")
    assert result.outcome == "error"
    [error] = [p for p in result.path if p.action == "error"]
    assert "trigger.properties.delivered_at + days(3)" in error.detail


async def test_wait_at_reads_the_journey_entry_time(harness):
    await harness.journey(
        DELIVERED.replace(
            "trigger.properties.delivered_at + days(3)", "journey.entered_at + hours(5)"
        )
    )
    harness.customer("c1")
    start = await harness.now()
    await harness.event("order_delivered")
    result = await harness.result("delivered/c1", step=timedelta(hours=1))
    [waited] = [p for p in result.path if p.step == "three_days_after_delivery"]
    assert timedelta(hours=5) <= waited.at - start < timedelta(hours=5, minutes=1)
