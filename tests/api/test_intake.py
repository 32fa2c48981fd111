"""Event intake: the Segment payloads, what gets stored, and every error status."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.api.support import ADMIN_TOKEN, CART_JOURNEY, SERVER_KEY, Api


def track(customer: str = "u1", message_id: str = "m1", **extra: object) -> dict[str, object]:
    return {
        "userId": customer,
        "event": "cart_abandoned",
        "properties": {"cart_id": "cart_9", "cart_total": 42},
        "messageId": message_id,
        "timestamp": "2024-05-01T10:00:00Z",
        **extra,
    }


async def test_track_is_acknowledged_like_segment_and_stored_undispatched(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", track())
    assert response.status_code == 200
    assert response.json() == {"success": True}
    [event] = api.events()
    assert (event.message_id, event.type, event.customer_id, event.name) == (
        "m1",
        "track",
        "u1",
        "cart_abandoned",
    )
    assert event.properties == {"cart_id": "cart_9", "cart_total": 42}
    assert event.timestamp.isoformat() == "2024-05-01T10:00:00+00:00"
    assert event.dispatched_at is None
    assert api.customer("u1") is not None  # unknown customers are created


@pytest.mark.temporal
async def test_dispatch_starts_the_journey(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await api.post("/v1/track", track())
    report = await api.dispatch()
    assert report.dispatched == 1
    [run] = api.runs()
    assert (run.workflow_id, run.customer_id, run.trigger_message_id) == (
        "cart/u1/cart_9",
        "u1",
        "m1",
    )
    [event] = api.events()
    assert event.dispatched_at is not None


@pytest.mark.temporal
async def test_an_event_no_journey_hears_is_stored_handed_over(api: Api) -> None:
    """Many of a shop's events (views, searches) are in no journey: they join
    the customer's history, and the dispatcher never reads them."""
    await api.start(CART_JOURNEY)
    viewed = {**track(), "event": "product_viewed", "messageId": "v1"}
    assert (await api.post("/v1/track", viewed)).status_code == 200
    assert (await api.post("/v1/track", track())).status_code == 200
    events = {e.message_id: e for e in api.events()}
    assert events["v1"].dispatched_at is not None
    assert events["v1"].properties == {"cart_id": "cart_9", "cart_total": 42}
    assert events["m1"].dispatched_at is None
    report = await api.dispatch()
    assert (report.dispatched, report.waiting) == (1, 0)
    assert [run.trigger_message_id for run in api.runs()] == ["m1"]


async def test_identify_upserts_contact_fields_push_tokens_and_traits(api: Api) -> None:
    await api.start(CART_JOURNEY)
    first = {
        "userId": "u1",
        "messageId": "i1",
        "traits": {
            "email": "ana@example.com",
            "phone": "+33600000000",
            "timezone": "Europe/Paris",
            "locale": "fr-FR",
            "push_token": "tok-a",
            "tier": "gold",
            "plan": "free",
        },
        "context": {"device": {"token": "tok-b"}},
    }
    assert (await api.post("/v1/identify", first)).status_code == 200
    second = {
        "userId": "u1",
        "messageId": "i2",
        "traits": {"plan": "pro", "phone": None, "push_tokens": ["tok-a", "tok-c"]},
    }
    # Clearing a contact point is for server keys (a client key may only set a missing one).
    assert (await api.post("/v1/identify", second, write_key=SERVER_KEY)).status_code == 200
    customer = api.customer("u1")
    assert customer is not None
    assert customer.email == "ana@example.com"
    assert customer.phone is None  # null clears
    assert (customer.timezone, customer.locale) == ("Europe/Paris", "fr-FR")
    assert customer.traits == {"tier": "gold", "plan": "pro"}
    assert sorted(customer.push_tokens) == ["tok-a", "tok-b", "tok-c"]
    assert customer.push_tokens[0] == "tok-c"  # the newest is used first
    # Nothing to route but the trait changes (journey DSL v2: trait_changed events).
    routed = [e for e in api.events() if e.dispatched_at is None]
    assert {e.name for e in routed} == {"trait_changed"}
    assert {e.properties["trait"] for e in routed} == {"tier", "plan"}


async def test_identify_stores_phone_numbers_in_e164(api: Api) -> None:
    """Twilio takes E.164 and inbound texts come from it: numbers are stored that way,
    however they were written; a national number belongs to JOURNEYMAN_PHONE_REGION."""
    await api.start(CART_JOURNEY, phone_region="US")
    written = {
        "us": "(503) 555-0142",
        "fr": "+33 6 12 34 56 78",
        "fr_idd": "011 33 6 12 34 56 79",
        "gb": "+44 (0)20 7946 0958",
    }
    for customer, phone in written.items():
        response = await api.post("/v1/identify", {"userId": customer, "traits": {"phone": phone}})
        assert response.status_code == 200, response.text

    stored = {customer: api.customer(customer).phone for customer in written}

    assert stored == {
        "us": "+15035550142",
        "fr": "+33612345678",
        "fr_idd": "+33612345679",
        "gb": "+442079460958",
    }
    cleared = {"userId": "us", "traits": {"phone": ""}}
    assert (await api.post("/v1/identify", cleared, write_key=SERVER_KEY)).status_code == 200
    assert api.customer("us").phone is None


async def test_a_national_phone_number_without_a_region_setting_is_422_saying_so(
    api: Api,
) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/identify", {"userId": "u1", "traits": {"phone": "555-0142"}})

    assert response.status_code == 422
    assert response.json()["error"] == (
        "invalid field traits.phone: '555-0142' has no country code: send it in E.164 form"
        " (+ country code and number, such as +15035550142), or set JOURNEYMAN_PHONE_REGION"
        " to the country of such numbers"
    )
    assert api.customer("u1") is None


async def test_batch_applies_every_message_in_order(api: Api) -> None:
    await api.start(CART_JOURNEY)
    body = {
        "batch": [
            {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com"}},
            {"type": "track", "userId": "u1", "event": "cart_abandoned", "messageId": "t1"},
            {"type": "page", "anonymousId": "anon", "name": "Pricing"},
            {"type": "screen", "userId": "u1", "name": "Home"},
            {"type": "group", "userId": "u1", "groupId": "acme"},
            {"type": "alias", "previousId": "anon", "userId": "u1"},
        ],
        "context": {"library": {"name": "analytics-python"}},
    }
    response = await api.post("/v1/batch", body)
    assert response.status_code == 200, response.text
    events = [e for e in api.events() if e.name != "trait_changed"]
    assert [e.type for e in events] == ["identify", "track", "page", "screen", "group", "alias"]
    assert all(e.customer_id == "u1" for e in events)  # the page event was re-keyed by alias
    # Tracks, page and screen views are for journeys, when one hears them (the cart
    # journey hears cart_abandoned, no page or screen view); the rest are profile changes.
    assert [e.dispatched_at is None for e in events] == [False, True, False, False, False, False]
    assert [e.name for e in events][2:4] == ["page_viewed", "screen_viewed"]


async def test_numbers_are_accepted_as_ids(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", {**track(), "userId": 42})
    assert response.status_code == 200
    assert api.events()[0].customer_id == "42"


async def test_gzip_body_is_accepted(api: Api) -> None:
    await api.start(CART_JOURNEY)
    body = gzip.compress(json.dumps(track()).encode())
    response = await api.post(
        "/v1/track",
        content=body,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert [e.message_id for e in api.events()] == ["m1"]


def stored(api: Api) -> list[tuple[object, ...]]:
    """Every stored event as (message id, type, customer, name, properties), in order."""
    return [(e.message_id, e.type, e.customer_id, e.name, e.properties) for e in api.events()]


async def test_text_plain_body_is_read_as_json(api: Api) -> None:
    """Browsers' sendBeacon cannot set application/json."""
    await api.start(CART_JOURNEY)
    response = await api.post(
        "/v1/track", content=json.dumps(track()).encode(), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 200, response.text
    assert stored(api) == [
        ("m1", "track", "u1", "cart_abandoned", {"cart_id": "cart_9", "cart_total": 42})
    ]


async def test_write_key_in_the_body_authenticates_a_batch(api: Api) -> None:
    await api.start(CART_JOURNEY)
    unknown = {"batch": [{"type": "track", **track(message_id="m0")}], "writeKey": "wk_nope"}
    refused = await api.post("/v1/batch", unknown, write_key=None)
    assert refused.status_code == 401
    assert refused.json()["error"] == "unknown write key"
    assert api.events() == []

    body = {"batch": [{"type": "track", **track()}], "writeKey": "wk_other"}
    response = await api.post("/v1/batch", body, write_key=None)
    assert response.status_code == 200, response.text
    assert stored(api) == [
        ("m1", "track", "u1", "cart_abandoned", {"cart_id": "cart_9", "cart_total": 42})
    ]


# -- errors -----------------------------------------------------------------------------


async def test_malformed_json_is_400(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post(
        "/v1/track", content=b'{"userId": "u1",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "malformed JSON"
    assert body["detail"][0]["field"] == "body"
    assert api.events() == []


async def test_body_over_the_limit_is_413(api: Api) -> None:
    await api.start(CART_JOURNEY, max_body_bytes=1024)
    payload = track(properties={"notes": "x" * 2000})
    response = await api.post("/v1/track", payload)
    assert response.status_code == 413
    assert response.json()["error"] == "body larger than 1024 bytes"
    assert api.events() == []


async def test_gzip_body_that_inflates_over_the_limit_is_413(api: Api) -> None:
    await api.start(CART_JOURNEY, max_body_bytes=1024)
    body = gzip.compress(json.dumps(track(properties={"notes": "x" * 100_000})).encode())
    assert len(body) < 1024
    response = await api.post("/v1/track", content=body, headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert api.events() == []


async def test_corrupt_gzip_is_400(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post(
        "/v1/track", content=b"not gzip at all", headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "the body is not valid gzip"


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/v1/track", {"userId": "u1", "event": 12}, "event"),
        ("/v1/track", {"userId": "u1"}, "event"),
        ("/v1/track", {"userId": "u1", "event": "x", "properties": [1]}, "properties"),
        ("/v1/track", {"userId": "u1", "event": "x", "timestamp": "yesterday"}, "timestamp"),
        (
            "/v1/identify",
            {"userId": "u1", "traits": {"timezone": "Mars/Olympus"}},
            "traits.timezone",
        ),
        ("/v1/identify", {"userId": "u1", "traits": {"email": ["a"]}}, "traits.email"),
        ("/v1/identify", {"userId": "u1", "traits": {"phone": "call me"}}, "traits.phone"),
        (
            "/v1/batch",
            {"batch": [{"type": "identify", "userId": "u1", "traits": {"phone": "555-0142"}}]},
            "batch.0.traits.phone",
        ),
        ("/v1/alias", {"userId": "u1"}, "previousId"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u1"}]}, "batch.0.event"),
        ("/v1/batch", {"batch": [{"type": "launch", "userId": "u1"}]}, "batch.0.type"),
        ("/v1/batch", {"batch": {"type": "track"}}, "batch"),
    ],
)
async def test_a_bad_field_is_422_naming_it(
    api: Api, path: str, payload: dict[str, object], field: str
) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post(path, payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"].startswith(f"invalid field {field}:")
    assert body["detail"][0]["field"] == field
    assert api.events() == []


async def test_a_batch_with_one_bad_message_stores_nothing(api: Api) -> None:
    await api.start(CART_JOURNEY)
    body = {"batch": [{"type": "track", **track()}, {"type": "track", "userId": "u2"}]}
    response = await api.post("/v1/batch", body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "batch.1.event"
    assert api.events() == []


async def test_missing_both_ids_is_400(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", {"event": "cart_abandoned", "userId": "  "})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "userId or anonymousId is required"
    assert body["detail"][0]["field"] == "userId"


async def test_unknown_write_key_is_401(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", track(), write_key="wk_nope")
    assert response.status_code == 401
    assert response.json() == {"error": "unknown write key", "detail": []}
    assert api.events() == []


async def test_no_credentials_is_401(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.post("/v1/track", track(), write_key=None)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert api.events() == []


@pytest.mark.parametrize(
    "path", ["/v1/customers/u1", "/v1/journeys", "/v1/journeys/cart", "/v1/outbox"]
)
async def test_reads_without_the_admin_token_are_401(api: Api, path: str) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    assert (await api.client.get(path)).status_code == 401
    wrong = await api.client.get(path, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid admin token"
    write_key = await api.client.get(path, auth=("wk_test_1", ""))
    assert write_key.status_code == 401


async def test_the_admin_token_works_as_basic_password_for_browsers(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    response = await api.client.get("/v1/journeys", auth=("admin", ADMIN_TOKEN))
    assert response.status_code == 200


async def test_unknown_customer_is_404(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.admin_get("/v1/customers/nobody")
    assert response.status_code == 404
    assert response.json()["error"] == "no customer 'nobody'"
