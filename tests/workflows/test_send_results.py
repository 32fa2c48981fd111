"""DSL v2: after a send step ran, expressions see `steps.<id>.channel|outcome|reason`."""

from __future__ import annotations

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
