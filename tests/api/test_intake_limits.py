"""Intake limits: a hostile body is a 4xx naming the limit, stored nowhere, and what is
stored can always be read back."""

from __future__ import annotations

from typing import Any

import pytest

from journeyman.api import limits
from journeyman.storage.models import Customer, Event, utcnow
from tests.api.support import CART_JOURNEY, Api


def nested(depth: int) -> dict[str, Any]:
    """An object `depth` levels deep: {"a": {"a": ... {"a": 1}}}."""
    value: dict[str, Any] = {"a": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def track(customer: str = "u1", message_id: str = "m1", **extra: Any) -> dict[str, Any]:
    return {
        "userId": customer,
        "event": "cart_abandoned",
        "properties": {"cart_id": "cart_9"},
        "messageId": message_id,
        **extra,
    }


def problem(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["error"].startswith("limit exceeded at "), body
    first: dict[str, Any] = body["detail"][0]
    return first


@pytest.mark.temporal
async def test_the_poison_event_is_400_stored_nowhere_and_the_customer_goes_on(api: Api) -> None:
    await api.start(CART_JOURNEY)
    poison = track(properties={"cart_id": "c", "deep": nested(900)})
    response = await api.post("/v1/track", poison)
    assert response.status_code == 400
    found = problem(response)
    assert found["type"] == "limit_depth"
    assert found["limit"] == 32
    assert found["field"].startswith("properties.deep.a.a")
    assert api.events() == []
    # The customer's next event is taken and handed over as usual.
    assert (await api.post("/v1/track", track(message_id="m2"))).status_code == 200
    report = await api.dispatch()
    assert report.dispatched == 1
    assert [run.trigger_message_id for run in api.runs()] == ["m2"]
    assert (await api.admin_get("/v1/customers/u1")).status_code == 200


async def test_a_body_too_deep_for_the_json_parser_is_400_naming_the_depth(api: Api) -> None:
    await api.start(CART_JOURNEY)
    body = b'{"userId": "u1", "event": "e", "properties": {"x": ' + b"[" * 200_000
    body += b"]" * 200_000 + b"}}"
    response = await api.post("/v1/track", content=body)
    assert response.status_code == 400
    assert problem(response)["type"] == "limit_depth"
    assert api.events() == []


async def test_nesting_up_to_the_limit_is_accepted(api: Api) -> None:
    await api.start(CART_JOURNEY)
    # The message object is level 1 and properties level 2: 30 more fit.
    response = await api.post("/v1/track", track(properties={"x": nested(30)}))
    assert response.status_code == 200, response.json()
    response = await api.post("/v1/track", track(message_id="m2", properties={"x": nested(31)}))
    assert response.status_code == 400
    assert problem(response)["type"] == "limit_depth"


@pytest.mark.parametrize(
    ("payload", "limit", "field", "status"),
    [
        (track(properties={f"k{i}": i for i in range(1001)}), "limit_keys", "properties", 400),
        (track(properties={"k": list(range(10_001))}), "limit_items", "properties.k", 400),
        (track(properties={"note": "x" * 32_769}), "limit_string", "properties.note", 400),
        (track(properties={"k" * 257: 1}), "limit_key", "properties", 400),
        (
            track(properties={f"k{i}": "x" * 1000 for i in range(40)}),
            "limit_event_bytes",
            "body",
            413,
        ),
    ],
    ids=["keys", "items", "string", "key", "event-size"],
)
async def test_each_limit_is_a_4xx_naming_it(
    api: Api, payload: dict[str, Any], limit: str, field: str, status: int
) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", payload)
    assert response.status_code == status
    found = problem(response)
    assert (found["type"], found["field"]) == (limit, field)
    assert str(found["limit"]) in found["message"]
    assert api.events() == []


async def test_a_batch_with_one_message_over_32kb_stores_nothing(api: Api) -> None:
    await api.start(CART_JOURNEY)
    big = {"type": "track", **track(message_id="m2", properties={"n": "x" * 20_000})}
    big["properties"]["m"] = "y" * 20_000
    body = {"batch": [{"type": "track", **track()}, big]}
    response = await api.post("/v1/batch", body)
    assert response.status_code == 413
    found = problem(response)
    assert (found["type"], found["field"]) == ("limit_event_bytes", "batch.1")
    assert api.events() == []


async def test_a_batch_of_too_many_messages_is_413(api: Api) -> None:
    await api.start(CART_JOURNEY)
    one = {"type": "track", "userId": "u", "event": "e"}
    response = await api.post("/v1/batch", {"batch": [one] * (limits.MAX_BATCH_EVENTS + 1)})
    assert response.status_code == 413
    assert problem(response)["type"] == "limit_batch_events"
    assert api.events() == []


async def test_the_limits_hold_for_gzip_bodies_as_decoded(api: Api) -> None:
    import gzip
    import json

    await api.start(CART_JOURNEY)
    body = gzip.compress(json.dumps(track(properties={"deep": nested(100)})).encode())
    response = await api.post("/v1/track", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert problem(response)["type"] == "limit_depth"


async def test_reads_of_an_event_stored_before_the_limits_never_fail(api: Api) -> None:
    """A row written before the limits existed (or by hand) still reads back: the
    customer view and the export show what is too deep as a note, never a 500."""
    await api.start(CART_JOURNEY)
    with api.db.session() as session:
        session.add(Customer(id="old", traits={}, push_tokens=[]))
        session.flush()
        session.add(
            Event(
                message_id="legacy",
                type="track",
                customer_id="old",
                name="cart_abandoned",
                properties={"deep": nested(900)},
                timestamp=utcnow(),
                received_at=utcnow(),
                dispatched_at=utcnow(),
            )
        )
    response = await api.admin_get("/v1/customers/old")
    assert response.status_code == 200
    [event] = response.json()["recent_events"]
    text = str(event["properties"])
    assert limits.TOO_DEEP in text
    export = await api.admin_get("/v1/customers/old/export")
    assert export.status_code == 200
    assert limits.TOO_DEEP in export.text


class Unreachable:
    """A router whose Temporal is never there."""

    def __init__(self, real: Any) -> None:
        self.catalog = real.catalog  # what the API asks which events journeys hear

    async def route(self, customer_id: str, event: Any) -> None:
        raise ConnectionError("Temporal unreachable")


async def test_the_parked_events_metric_counts_them(api: Api) -> None:
    from datetime import timedelta

    from journeyman.events.dispatcher import MAX_ATTEMPTS

    await api.start(CART_JOURNEY, router=Unreachable)
    assert (await api.post("/v1/track", track())).status_code == 200
    for _ in range(MAX_ATTEMPTS):
        await api.dispatch()
        api.clock.advance(timedelta(minutes=10))
    [event] = api.events()
    assert event.parked_at is not None
    body = (await api.client.get("/metrics")).text  # type: ignore[union-attr]
    assert "\njourneyman_events_parked 1.0\n" in body
