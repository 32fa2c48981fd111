"""trait_changed from the API to journeys: an identify that makes a customer gold enters
the tier journey through the dispatcher, an identify that changes nothing does not, and
a retried identify enters nothing twice."""

from __future__ import annotations

import pytest

from tests.api.support import Api
from tests.harness import actions

GOLD_JOURNEY = """
id: gold
name: Gold welcome
entry:
  event: trait_changed
  when: "event.properties.trait == 'tier' and event.properties.new == 'gold'"
steps:
  - id: welcome
    send: {template: gold_hello, channels: [email]}
"""


async def identify(api: Api, message_id: str, **traits: object) -> None:
    body = {
        "userId": "u1",
        "messageId": message_id,
        "traits": {"email": "ana@example.com", **traits},
    }
    assert (await api.post("/v1/identify", body)).status_code == 200


@pytest.mark.temporal
async def test_an_identify_that_makes_the_customer_gold_enters_the_journey(api: Api) -> None:
    await api.start(GOLD_JOURNEY)
    await identify(api, "i1", tier="silver")
    await api.dispatch()
    assert api.runs() == []  # silver: a trait change, but the entry condition is false

    await identify(api, "i2", tier="gold")
    await identify(api, "i2", tier="gold")  # a retry: stored once
    await identify(api, "i3", tier="gold", plan="pro")  # tier unchanged: no tier event
    report = await api.dispatch()

    assert report.dispatched == 2  # tier silver -> gold, plan None -> pro
    [run] = api.runs()
    result = await api.harness.result(run.workflow_id)
    assert actions(result) == [("entry", "entered"), ("welcome", "sent")]
    assert result.path[0].detail == "entered on trait_changed"
    [message] = api.outbox()
    assert message.to == "ana@example.com"
    assert (await api.dispatch()).dispatched == 0


async def test_a_track_named_trait_changed_is_refused(api: Api) -> None:
    """Only a real trait change gives the event: a forged one could enter the tier
    journey (and its reward) for a change that never happened."""
    await api.start(GOLD_JOURNEY)
    forged = {"event": "trait_changed", "properties": {"trait": "tier", "new": "gold"}}

    alone = await api.post("/v1/track", {"userId": "u1", **forged})
    batch = await api.post(
        "/v1/batch",
        {
            "batch": [
                {"type": "track", "userId": "u1", "event": "viewed"},
                {"type": "track", "userId": "u1", **forged},
            ]
        },
    )

    assert alone.status_code == 422
    assert "send an identify with the new trait value instead" in alone.json()["error"]
    assert alone.json()["detail"][0]["field"] == "event"
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["field"] == "batch.1.event"
    assert api.events() == []  # nothing of the batch was applied
