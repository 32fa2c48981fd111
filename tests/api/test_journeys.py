"""From the API to journeys: entries, waiting runs, duplicates, merges, durability."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from journeyman.contracts import CustomerEvent
from journeyman.customers import traits
from journeyman.events.dispatcher import Dispatcher
from journeyman.events.routing import Router, RouteResult
from tests.api.support import CART_JOURNEY, Api
from tests.harness import actions
from tests.platform.test_metrics import delta

CHECKOUT_JOURNEY = """
id: checkout
name: Checkout follow-up
entry: {event: checkout_started}
steps:
  - id: wait_payment
    wait_for: {event: payment_done, timeout: 1d, on_timeout: nudge}
  - id: thanks
    send: {template: thanks, channels: [email]}
    goto: done
  - id: nudge
    send: {template: nudge, channels: [email]}
  - id: done
    end: true
"""

# Sends at once and finishes, and may be entered again and again: the hardest case for
# "routing an event twice has one effect".
WELCOME_JOURNEY = """
id: welcome
name: Welcome
entry:
  event: signed_up
  reentry: always
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""


def cart(customer: str | None = "u1", message_id: str = "m1", **ids: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": "cart_abandoned",
        "properties": {"cart_id": "cart_9"},
        "messageId": message_id,
        **ids,
    }
    if customer is not None:
        body["userId"] = customer
    return body


async def identify(api: Api, customer: str = "u1", **traits: Any) -> None:
    body = {"userId": customer, "traits": {"email": f"{customer}@example.com", **traits}}
    assert (await api.post("/v1/identify", body)).status_code == 200


# -- entries and waiting runs ---------------------------------------------------------------


@pytest.mark.temporal
async def test_tracked_event_starts_the_journey_and_the_message_goes_out(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await identify(api)
    assert (await api.post("/v1/track", cart())).status_code == 200
    assert (await api.dispatch()).dispatched == 1
    result = await api.harness.result("cart/u1/cart_9")
    assert actions(result) == [("entry", "entered"), ("pause", "waited"), ("remind", "sent")]
    [message] = api.outbox()
    assert message.to == "u1@example.com"


@pytest.mark.temporal
async def test_event_reaches_the_run_waiting_for_it(api: Api) -> None:
    await api.start(CHECKOUT_JOURNEY)
    await identify(api)
    start = {"userId": "u1", "event": "checkout_started", "messageId": "s1"}
    assert (await api.post("/v1/track", start)).status_code == 200
    await api.dispatch()
    paid = {"userId": "u1", "event": "payment_done", "messageId": "p1"}
    assert (await api.post("/v1/track", paid)).status_code == 200
    report = await api.dispatch()
    assert report.dispatched == 1
    result = await api.harness.result("checkout/u1")
    assert ("wait_payment", "event") in actions(result)
    assert [m.journey_id for m in api.outbox()] == ["checkout"]
    assert api.deliveries()[0].template == "thanks"


# -- duplicates -----------------------------------------------------------------------------


@pytest.mark.temporal
async def test_the_same_message_twice_has_one_effect(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await identify(api)
    for _ in range(2):
        assert (await api.post("/v1/track", cart())).status_code == 200
        await api.dispatch()
    assert len([e for e in api.events() if e.type == "track"]) == 1
    await api.harness.result("cart/u1/cart_9")
    assert len(api.runs()) == 1
    assert len(api.deliveries()) == 1


@pytest.mark.temporal
async def test_ten_concurrent_identical_requests_have_one_effect(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await identify(api)
    responses = await asyncio.gather(*(api.post("/v1/track", cart()) for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    assert len([e for e in api.events() if e.type == "track"]) == 1
    await api.dispatch()
    await api.harness.result("cart/u1/cart_9")
    assert len(api.runs()) == 1
    assert len(api.deliveries()) == 1
    assert len(api.outbox()) == 1


async def test_ten_concurrent_batches_creating_the_same_customer_store_once(api: Api) -> None:
    await api.start(CART_JOURNEY)
    body = {
        "batch": [
            {"type": "identify", "userId": "new", "messageId": "b1", "traits": {"tier": "gold"}},
            {"type": "track", **cart("new", "b2")},
        ]
    }
    responses = await asyncio.gather(*(api.post("/v1/batch", body) for _ in range(10)))
    assert [r.status_code for r in responses] == [200] * 10
    # With the identify's one trait_changed, stored once too.
    assert [e.message_id for e in api.events()] == ["b1", traits.message_id("b1", "tier"), "b2"]


class CrashAfterRouting(Dispatcher):
    """Routes, then dies before marking the `crash_at`-th event dispatched."""

    crash_at = 1

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marked = 0

    def _done(self, event_ids: list[int], release: bool = False) -> None:
        self.marked += 1
        if self.marked == self.crash_at:
            raise RuntimeError("process killed")
        super()._done(event_ids, release)


class CrashAfterSecondRouting(CrashAfterRouting):
    crash_at = 2


@pytest.mark.temporal
async def test_a_crash_between_routing_and_marking_is_harmless(api: Api) -> None:
    await api.start(WELCOME_JOURNEY, dispatcher=CrashAfterRouting)
    await identify(api)
    assert (await api.post("/v1/track", {"userId": "u1", "event": "signed_up"})).status_code == 200
    with pytest.raises(RuntimeError, match="process killed"):
        await api.dispatch()
    # The run finished before the event is routed again, and reentry is allowed.
    await api.harness.result("welcome/u1")
    [event] = [e for e in api.events() if e.type == "track"]
    assert event.dispatched_at is None
    assert (await api.dispatch()).dispatched == 1
    assert len(api.runs()) == 1
    assert len(api.deliveries()) == 1


BIG_CARTS = """
id: big_carts
name: Big carts
entry:
  event: cart_abandoned
  when: "event.properties.cart_total >= 20"
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""


async def test_an_entry_condition_that_fails_is_recorded_once_and_shown_in_the_stats(
    api: Api,
) -> None:
    """A cart event without `cart_total`: the customer is not entered, and the marketer
    sees why in the journey's stats, once however often the event is routed."""
    await api.start(BIG_CARTS, dispatcher=CrashAfterRouting)
    await identify(api)
    counted = delta("journeyman_entry_errors_total", journey="big_carts")
    assert (await api.post("/v1/track", cart(message_id="m-no-total"))).status_code == 200
    with pytest.raises(RuntimeError, match="process killed"):
        await api.dispatch()  # routed, then the process died before marking it

    assert (await api.dispatch()).dispatched == 1  # routed again
    detail = (await api.admin_get("/v1/journeys/big_carts")).json()

    assert api.runs() == []
    stats = detail["stats"]
    assert stats["overall"]["entry_errors"] == 1
    [sample] = stats["recent_entry_errors"]
    assert (sample["customer_id"], sample["message_id"]) == ("u1", "m-no-total")
    assert sample["error"] == "event.properties.cart_total is not defined"
    assert counted() == 1  # the metric, once too


@pytest.mark.temporal
async def test_a_crash_after_signalling_a_waiting_run_is_harmless(api: Api) -> None:
    await api.start(CHECKOUT_JOURNEY, dispatcher=CrashAfterSecondRouting)
    await identify(api)
    await api.post("/v1/track", {"userId": "u1", "event": "checkout_started", "messageId": "s1"})
    assert (await api.dispatch()).dispatched == 1
    await api.post("/v1/track", {"userId": "u1", "event": "payment_done", "messageId": "p1"})
    with pytest.raises(RuntimeError, match="process killed"):
        await api.dispatch()
    assert (await api.dispatch()).dispatched == 1
    result = await api.harness.result("checkout/u1")
    assert [a for a in actions(result) if a[1] == "event"] == [("wait_payment", "event")]
    assert len(api.runs()) == 1
    assert len(api.deliveries()) == 1


# -- anonymous visitors -----------------------------------------------------------------------


@pytest.mark.temporal
@pytest.mark.parametrize("routed_before_login", [True, False])
async def test_a_cart_abandoned_before_login_reaches_the_identified_customer(
    api: Api, routed_before_login: bool
) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", cart(None, anonymousId="anon-7"))
    assert response.status_code == 200
    if routed_before_login:
        await api.dispatch()
        assert [r.customer_id for r in api.runs()] == ["anon-7"]
    login = {
        "userId": "u1",
        "anonymousId": "anon-7",
        "traits": {"email": "ana@example.com", "tier": "gold"},
    }
    assert (await api.post("/v1/identify", login)).status_code == 200
    await api.dispatch()
    workflow_id = "cart/anon-7/cart_9" if routed_before_login else "cart/u1/cart_9"
    assert [r.workflow_id for r in api.runs()] == [workflow_id]
    await api.harness.result(workflow_id)
    [message] = api.outbox()
    assert message.to == "ana@example.com"
    anonymous = api.customer("anon-7")
    assert anonymous is not None and anonymous.merged_into == "u1"
    assert {e.customer_id for e in api.events()} == {"u1"}
    view = (await api.admin_get("/v1/customers/anon-7")).json()
    assert (view["id"], view["email"], view["aliases"]) == ("u1", "ana@example.com", ["anon-7"])
    assert len(view["recent_messages"]) == 1


@pytest.mark.temporal
async def test_the_known_customers_events_reach_runs_started_anonymously(api: Api) -> None:
    await api.start(CHECKOUT_JOURNEY)
    start = {"anonymousId": "anon-1", "event": "checkout_started", "messageId": "s1"}
    await api.post("/v1/track", start)
    await api.dispatch()
    await api.post("/v1/alias", {"previousId": "anon-1", "userId": "u1"})
    await identify(api)
    await api.post("/v1/track", {"userId": "u1", "event": "payment_done", "messageId": "p1"})
    assert (await api.dispatch()).dispatched == 1
    result = await api.harness.result("checkout/anon-1")
    assert ("wait_payment", "event") in actions(result)
    assert [m.to for m in api.outbox()] == ["u1@example.com"]


async def test_merge_keeps_the_known_customers_traits(api: Api) -> None:
    await api.start(CART_JOURNEY)
    anonymous = {"anonymousId": "anon-2", "traits": {"email": "old@example.com", "color": "red"}}
    await api.post("/v1/identify", anonymous)
    await identify(api, "u1", color="blue")
    await api.post("/v1/alias", {"previousId": "anon-2", "userId": "u1"})
    known = api.customer("u1")
    assert known is not None
    assert (known.email, known.traits) == ("u1@example.com", {"color": "blue"})
    gone = api.customer("anon-2")
    assert gone is not None
    assert (gone.email, gone.traits, gone.merged_into) == (None, {}, "u1")
    # Later events under the anonymous id belong to the known customer.
    await api.post("/v1/track", cart(None, "m9", anonymousId="anon-2"))
    assert api.events()[-1].customer_id == "u1"


# -- durable acceptance -------------------------------------------------------------------------


class TemporalDown:
    """The real router, behind a switch that makes every hand-off fail."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.client = router.client
        self.catalog = router.catalog
        self.down = True
        self.calls = 0

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        self.calls += 1
        if self.down:
            raise ConnectionError("Temporal unavailable")
        return await self.router.route(customer_id, event)


@pytest.mark.temporal
async def test_events_accepted_while_temporal_is_down_start_journeys_once_it_is_back(
    api: Api,
) -> None:
    await api.start(CART_JOURNEY, router=TemporalDown)
    await identify(api)
    assert (await api.post("/v1/track", cart())).status_code == 200

    report = await api.dispatch()
    assert (report.dispatched, report.failed) == (0, 1)
    [event] = [e for e in api.events() if e.type == "track"]
    assert event.dispatched_at is None
    assert event.attempts == 1
    assert event.last_error == "ConnectionError: Temporal unavailable"
    assert api.runs() == []

    # Backing off: not tried again at once.
    assert (await api.dispatch()).waiting == 1
    assert api.router.calls == 1
    api.clock.advance(timedelta(seconds=1))
    assert (await api.dispatch()).failed == 1
    [event] = [e for e in api.events() if e.type == "track"]
    assert event.attempts == 2

    api.router.down = False
    api.clock.advance(timedelta(minutes=10))
    assert (await api.dispatch()).dispatched == 1
    assert (await api.dispatch()).dispatched == 0
    await api.harness.result("cart/u1/cart_9")
    assert len(api.runs()) == 1
    assert len(api.outbox()) == 1


@pytest.mark.temporal
async def test_a_customers_later_events_wait_behind_one_that_failed(api: Api) -> None:
    # Routed in one pass right after the checkout, the payment may reach the new run
    # before the worker runs its first task: the first wait hears it either way (patch
    # `first-wait-hears-arrivals`), as a marketer expects.
    await api.start(CHECKOUT_JOURNEY, router=TemporalDown)
    await api.post("/v1/track", {"userId": "u1", "event": "checkout_started", "messageId": "s1"})
    report = await api.dispatch()
    assert report.failed == 1
    api.router.down = False
    await api.post("/v1/track", {"userId": "u1", "event": "payment_done", "messageId": "p1"})
    await api.post("/v1/track", {"userId": "u2", "event": "checkout_started", "messageId": "s2"})
    report = await api.dispatch()
    # u2 goes on; u1's payment waits for u1's checkout, still in backoff.
    assert (report.dispatched, report.waiting) == (1, 2)
    assert [r.customer_id for r in api.runs()] == ["u2"]
    api.clock.advance(timedelta(minutes=1))
    assert (await api.dispatch()).dispatched == 2
    await identify(api)
    result = await api.harness.result("checkout/u1")
    assert ("wait_payment", "event") in actions(result)


# Whether a payment reached the run is told by how the run ends, whenever it arrived:
# exited, or reminded after an hour (a payment routed before its checkout reaches no run).
REMINDER_JOURNEY = """
id: reminder
name: Checkout reminder
entry: {event: checkout_started}
exit:
  - event: payment_done
steps:
  - id: pause
    wait: 1h
  - id: nudge
    send: {template: nudge, channels: [email]}
"""


class FailsFirstTries:
    """The real router, failing the first try of the events named in `fail`."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.client = router.client
        self.catalog = router.catalog
        self.fail: set[str] = set()

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        if event.message_id in self.fail:
            self.fail.discard(event.message_id)
            raise ConnectionError("Temporal unavailable")
        return await self.router.route(customer_id, event)


@pytest.mark.temporal
async def test_customers_are_routed_side_by_side_each_in_order_through_failures(api: Api) -> None:
    await api.start(REMINDER_JOURNEY, router=FailsFirstTries)
    customers = [f"u{n}" for n in range(12)]
    for customer in customers:
        await identify(api, customer)
    # Every checkout, then every payment, handed over by concurrent passes: each payment
    # must reach the run its checkout started, though a third of the checkouts fail at
    # first and their payments wait behind them.
    api.router.fail = {f"s-{c}" for c in customers[::3]}
    for event, prefix in (("checkout_started", "s"), ("payment_done", "p")):
        for customer in customers:
            body = {"userId": customer, "event": event, "messageId": f"{prefix}-{customer}"}
            assert (await api.post("/v1/track", body)).status_code == 200
    first = await api.dispatch()
    assert (first.dispatched, first.failed, first.waiting) == (16, 4, 4)
    assert sorted(r.customer_id for r in api.runs()) == sorted(set(customers) - set(customers[::3]))
    api.clock.advance(timedelta(minutes=1))
    assert (await api.dispatch()).dispatched == 8
    for customer in customers:
        result = await api.harness.result(f"reminder/{customer}")
        assert result.outcome == "exited", (customer, actions(result))
    assert api.outbox() == []


@pytest.mark.temporal
async def test_the_background_dispatcher_hands_off_right_after_accepting(api: Api) -> None:
    await api.start(CART_JOURNEY, run_dispatcher=True)
    assert api.dispatcher is not None
    await identify(api)
    await api.post("/v1/track", cart())
    async with asyncio.timeout(30):
        await api.dispatcher.idle()
    [event] = [e for e in api.events() if e.type == "track"]
    assert event.dispatched_at is not None
    assert [r.workflow_id for r in api.runs()] == ["cart/u1/cart_9"]


# -- analytics --------------------------------------------------------------------------------


@pytest.mark.temporal
async def test_journey_detail_carries_its_stats(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await identify(api)
    assert (await api.post("/v1/track", cart())).status_code == 200
    await api.dispatch()
    await api.harness.result("cart/u1/cart_9")
    detail = (await api.admin_get("/v1/journeys/cart")).json()
    assert detail["outcomes"] == {"completed": 1}  # the existing fields stay
    stats = detail["stats"]
    assert stats["journey_id"] == "cart"
    overall = stats["overall"]
    assert (overall["entered"], overall["running"], overall["finished"]) == (
        1,
        0,
        {"completed": 1},
    )
    [email] = overall["messages"]
    assert (email["channel"], email["sent"], email["skipped"]) == ("email", 1, 0)
    assert overall["conversions"]["rate"] == 0.0
    assert overall["lift"] is None
    [version] = stats["versions"]
    assert version["version"] == detail["current_version"]
    # The time-skipping server has no visibility to count runs by step.
    assert overall["now_at_step"] is None
