"""Workflow ids: one run per (journey, customer, key) whatever the ids hold, and runs
started under the unescaped form of before keep getting their events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

import journeyman.events.routing as routing
from journeyman.names import legacy_workflow_id, workflow_id
from journeyman.privacy.pseudonyms import bury, installation_key
from journeyman.storage.models import JourneyRun
from tests.harness import actions

ORDER = """
id: cart
name: Cart
entry:
  event: cart_abandoned
  key: "event.properties.cart_id"
steps:
  - id: wait_for_order
    wait_for: {event: order_placed, timeout: 1d, on_timeout: gave_up}
  - id: bought
    end: true
  - id: gave_up
    end: true
"""


def test_escaping_keeps_every_triple_apart_and_plain_ids_unchanged():
    triples = [
        ("cart", "a/b", "c"),
        ("cart", "a", "b/c"),
        ("cart", "a", "b%2Fc"),
        ("cart", "a%2Fb", "c"),
        ("cart", "a/b/c", ""),
        ("cart", "a", "b"),
        ("cart", "a/b", ""),
    ]
    ids = [workflow_id(*t) for t in triples]
    assert len(set(ids)) == len(triples), ids
    assert workflow_id("cart", "a/b", "c") == "cart/a%2Fb/c"
    assert workflow_id("cart", "a", "b/c") == "cart/a/b%2Fc"
    # What nearly every id looks like is what it looked like before.
    assert workflow_id("abandoned_cart", "c_42", "cart_9") == "abandoned_cart/c_42/cart_9"
    assert workflow_id("win_back", "user@example.com") == "win_back/user@example.com"
    # Before, two customers shared one run.
    assert legacy_workflow_id("cart", "a/b", "c") == legacy_workflow_id("cart", "a", "b/c")


async def test_two_customers_whose_ids_used_to_collide_get_a_run_each(harness):
    await harness.journey(ORDER)
    harness.customer("a/b")
    harness.customer("a")
    first = await harness.event("cart_abandoned", "a/b", cart_id="c")
    second = await harness.event("cart_abandoned", "a", cart_id="b/c")
    assert first.entered == ["cart/a%2Fb/c"]
    assert second.entered == ["cart/a/b%2Fc"]
    with harness.db.session() as session:
        runs = {r.workflow_id: r.customer_id for r in session.scalars(select(JourneyRun))}
    assert runs == {"cart/a%2Fb/c": "a/b", "cart/a/b%2Fc": "a"}
    # Each is its own run, and hears its own customer's events.
    assert (await harness.event("order_placed", "a")).delivered == ["cart/a/b%2Fc"]
    result = await harness.result("cart/a/b%2Fc")
    assert ("wait_for_order", "event") in actions(result)
    other = await harness.result("cart/a%2Fb/c")
    assert ("wait_for_order", "timeout") in actions(other)


async def test_a_run_started_under_the_old_form_keeps_being_found_and_signalled(
    harness, monkeypatch: pytest.MonkeyPatch
):
    await harness.journey(ORDER)
    harness.customer("a/b")
    # Started by the version of before, which did not escape.
    with monkeypatch.context() as before:
        before.setattr(routing, "workflow_id", legacy_workflow_id)
        entered = await harness.event("cart_abandoned", "a/b", cart_id="c")
    old_id = "cart/a/b/c"
    assert entered.entered == [old_id]
    await harness.sleep(timedelta(hours=1))
    # After the upgrade: the same cart again does not start a second run beside it...
    again = await harness.event("cart_abandoned", "a/b", cart_id="c")
    assert again.entered == []
    assert any("already in the journey" in s.reason for s in again.skipped)
    # ...and the customer's events reach the run under its old id.
    routed = await harness.event("order_placed", "a/b")
    assert routed.delivered == [old_id]
    result = await harness.result(old_id)
    assert ("wait_for_order", "event") in actions(result)
    with harness.db.session() as session:
        assert list(session.scalars(select(JourneyRun.workflow_id))) == [old_id]


async def test_an_entry_routed_while_its_customer_is_erased_is_undone(harness):
    """The router started the run, then finds the erasure's tombstone when it records
    it: the run is terminated and no row carries the customer's id."""
    await harness.journey(ORDER)
    harness.customer("c-erased")
    key = installation_key(b"installation")
    assert harness.router is not None
    harness.router.erasure_key = key
    with harness.db.session() as session:
        bury(session, key, ["c-erased"], datetime.now(UTC))
    routed = await harness.event("cart_abandoned", "c-erased", cart_id="k1")
    [wf_id] = routed.entered
    description = await harness.handle(wf_id).describe()
    assert description.status is not None and description.status.name == "TERMINATED"
    with harness.db.session() as session:
        assert session.scalars(select(JourneyRun)).all() == []
