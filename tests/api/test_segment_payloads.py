"""What Segment-family clients send beyond the basics: RudderStack's traits in
`context.traits`, `sentAt` clock correction, page and screen views, alias and group."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.support import SERVER_KEY, Api

PAGE_JOURNEY = """
id: pricing_follow_up
name: Pricing follow-up
entry:
  event: page_viewed
  when: "event.properties.name == 'Pricing'"
steps:
  - id: pause
    wait: 1h
"""


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def test_identify_reads_traits_from_context_traits_as_rudderstack_sends_them(
    api: Api,
) -> None:
    await api.start(PAGE_JOURNEY)
    rudder = {
        "userId": "r1",
        "messageId": "i1",
        "context": {
            "traits": {"email": "rudder@example.com", "plan": "pro", "timezone": "Europe/Paris"},
            "library": {"name": "rudder-sdk-python"},
        },
    }
    assert (await api.post("/v1/identify", rudder)).status_code == 200
    customer = api.customer("r1")
    assert customer is not None
    assert (customer.email, customer.timezone) == ("rudder@example.com", "Europe/Paris")
    assert customer.traits == {"plan": "pro"}
    # `traits`, where present, wins; context.traits is not mixed in.
    both = {
        "userId": "r2",
        "traits": {"plan": "gold"},
        "context": {"traits": {"email": "ignored@example.com"}},
    }
    assert (await api.post("/v1/identify", both)).status_code == 200
    r2 = api.customer("r2")
    assert r2 is not None and (r2.email, r2.traits) == (None, {"plan": "gold"})
    # The contact fields are checked there too.
    bad = {"userId": "r3", "context": {"traits": {"timezone": "Mars/Olympus"}}}
    response = await api.post("/v1/identify", bad)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "traits.timezone"


async def test_sent_at_corrects_a_client_clock_that_is_off(api: Api) -> None:
    await api.start(PAGE_JOURNEY)
    skew = timedelta(hours=3)  # the phone's clock is three hours ahead
    before = datetime.now(UTC)
    client_now = before + skew
    track = {
        "userId": "u1",
        "event": "clicked",
        "messageId": "t1",
        "timestamp": iso(client_now - timedelta(seconds=30)),  # happened 30 s before sending
        "sentAt": iso(client_now),
    }
    assert (await api.post("/v1/track", track)).status_code == 200
    # In a batch, the batch's sentAt applies to every message.
    batch = {
        "sentAt": iso(client_now),
        "batch": [
            {**track, "type": "track", "messageId": "t2", "sentAt": None},
        ],
    }
    assert (await api.post("/v1/batch", batch)).status_code == 200
    after = datetime.now(UTC)
    for event in api.events():
        # On our clock: 30 s before it was received, not three hours ahead.
        assert before - timedelta(seconds=31) <= event.timestamp <= after - timedelta(seconds=29)
    # Without sentAt (a server importing history), the timestamp is taken as it is.
    old = {**track, "messageId": "t3", "timestamp": "2024-05-01T10:00:00Z", "sentAt": None}
    assert (await api.post("/v1/track", old, write_key=SERVER_KEY)).status_code == 200
    assert api.events()[-1].timestamp == datetime(2024, 5, 1, 10, tzinfo=UTC)


async def test_a_sent_at_millennia_off_is_no_server_error(api: Api) -> None:
    await api.start(PAGE_JOURNEY)
    far = {
        "anonymousId": "a",
        "groupId": "g",
        "timestamp": "2000-01-01T00:00:00Z",
        "sentAt": "4036-01-01T00:00:00Z",
    }
    before = datetime.now(UTC)
    assert (await api.post("/v1/group", far)).status_code == 200
    assert api.events()[-1].timestamp >= before  # no usable correction: when received


@pytest.mark.temporal
async def test_page_and_screen_are_stored_as_viewed_events_that_journeys_hear(api: Api) -> None:
    await api.start(PAGE_JOURNEY)
    page = {
        "anonymousId": "a1",
        "messageId": "p1",
        "name": "Pricing",
        "category": "Docs",
        "properties": {"url": "https://shop.example.com/pricing"},
    }
    assert (await api.post("/v1/page", page)).status_code == 200
    screen = {"userId": "u1", "messageId": "s1", "name": "Home"}
    assert (await api.post("/v1/screen", screen)).status_code == 200
    events = {e.message_id: e for e in api.events()}
    assert (events["p1"].type, events["p1"].name) == ("page", "page_viewed")
    assert events["p1"].properties == {
        "url": "https://shop.example.com/pricing",
        "name": "Pricing",
        "category": "Docs",
    }
    assert (events["s1"].type, events["s1"].name) == ("screen", "screen_viewed")
    assert events["s1"].properties == {"name": "Home"}
    # No journey hears screen views: stored handed over, the dispatcher routes the page.
    assert events["s1"].dispatched_at is not None and events["p1"].dispatched_at is None
    report = await api.dispatch()
    assert report.dispatched == 1
    [run] = api.runs()
    assert (run.journey_id, run.customer_id, run.trigger_message_id) == (
        "pricing_follow_up",
        "a1",
        "p1",
    )


async def test_alias_and_group_have_their_own_endpoints(api: Api) -> None:
    await api.start(PAGE_JOURNEY)
    page = {"anonymousId": "a1", "messageId": "p1", "name": "Home"}
    assert (await api.post("/v1/page", page)).status_code == 200
    alias = {"previousId": "a1", "userId": "u1", "messageId": "al1"}
    assert (await api.post("/v1/alias", alias)).status_code == 200
    group = {"userId": "u1", "groupId": "acme", "traits": {"plan": "team"}, "messageId": "g1"}
    assert (await api.post("/v1/group", group)).status_code == 200
    events = {e.message_id: e for e in api.events()}
    assert {e.customer_id for e in events.values()} == {"u1"}
    assert events["al1"].properties == {"previous_id": "a1"}
    assert events["g1"].properties == {"group_id": "acme", "traits": {"plan": "team"}}
    missing = await api.post("/v1/group", {"userId": "u1"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "groupId"
