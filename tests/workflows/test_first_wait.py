"""A `wait_for` that is a run's first step hears the events that reached the run with
its trigger (patch `first-wait-hears-arrivals`): one batch from an SDK, or one pass of
the dispatcher, signals them before the worker has run the run's first task. The
worker starts only after both events are routed here, so that order is certain."""

from __future__ import annotations

from datetime import timedelta

from tests.harness import Harness, actions

CHECKOUT = """
id: checkout
name: Checkout
entry: {{event: checkout_started}}
exit:
  - event: cart_emptied
steps:
{first}
  - id: wait_for_payment
    wait_for: {{event: payment_completed, timeout: 1h, on_timeout: nudge}}
  - id: thanks
    send: {{template: reminder, channels: [email]}}
    goto: done
  - id: nudge
    send: {{template: reminder, channels: [email]}}
  - id: done
    end: true
"""
SEND_FIRST = """  - id: confirm
    send: {template: reminder, channels: [email]}"""


async def _arrive_together(harness: Harness, first: str, *later: str) -> str:
    """Route the trigger and `later` with no worker running, then start one."""
    harness.template("reminder")
    text = CHECKOUT.format(first=first).replace("\n\n", "\n")
    (harness.journeys_dir / "checkout.yaml").write_text(text)
    await harness.start_catalog_only()
    harness.customer("c1", email="ana@example.com")
    routed = await harness.event("checkout_started")
    [workflow_id] = routed.entered
    for name in later:
        assert (await harness.event(name)).delivered == [workflow_id]
    await harness.start()
    return workflow_id


async def test_a_payment_routed_with_its_checkout_is_heard_by_the_first_wait(harness):
    workflow_id = await _arrive_together(harness, "", "payment_completed")
    result = await harness.result(workflow_id)
    assert ("wait_for_payment", "event") in actions(result)
    assert ("thanks", "sent") in actions(result)
    assert ("nudge", "sent") not in actions(result)
    assert len(harness.outbox()) == 1


async def test_an_exit_routed_with_the_trigger_still_ends_the_run_first(harness):
    workflow_id = await _arrive_together(harness, "", "cart_emptied", "payment_completed")
    result = await harness.result(workflow_id)
    assert result.outcome == "exited"
    assert harness.outbox() == []


async def test_after_a_first_send_the_wait_still_hears_only_what_comes_after_it(harness):
    """`since: step` at a later step keeps its meaning: what came before it started,
    here with the trigger, before the send, does not count."""
    workflow_id = await _arrive_together(harness, SEND_FIRST, "payment_completed")
    await harness.sleep(timedelta(hours=2))
    result = await harness.result(workflow_id)
    assert ("wait_for_payment", "timeout") in actions(result)
    assert [step for step, action in actions(result) if action == "sent"] == ["confirm", "nudge"]
