"""Client keys (public, in apps) and server keys (secret): what a client key may not do
is refused with a 403 saying why, nothing of the call is applied, and it is counted."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from prometheus_client import REGISTRY

from tests.api.support import CART_JOURNEY, SERVER_KEY, Api

IDENTITY_SECRET = "identity-secret-for-tests"


def refused(reason: str) -> float:
    value = REGISTRY.get_sample_value("journeyman_intake_refused_total", {"reason": reason})
    return value or 0.0


async def known_customer(api: Api, customer: str = "known") -> None:
    """A customer who signed up: identified with an email, from the operator's server."""
    identify = {"userId": customer, "traits": {"email": "owner@example.com", "name": "Owner"}}
    assert (await api.post("/v1/identify", identify, write_key=SERVER_KEY)).status_code == 200


def assert_refused(response: Any, code: str) -> None:
    assert response.status_code == 403, response.text
    body = response.json()
    assert "client key" in body["error"] or "userHash" in body["error"]
    assert body["detail"][0]["type"] == code


async def test_a_client_key_may_not_change_a_customers_email(api: Api) -> None:
    """The phishing relay: with the public key, anyone could point a known customer's
    email at an address of their choosing."""
    await api.start(CART_JOURNEY)
    await known_customer(api)
    before = refused("contact_change")
    events_before = len(api.events())
    hijack = {"userId": "known", "traits": {"email": "attacker@evil.test", "plan": "x"}}
    response = await api.post("/v1/identify", hijack)
    assert_refused(response, "contact_change")
    assert "email" in response.json()["error"]
    customer = api.customer("known")
    assert customer is not None
    assert customer.email == "owner@example.com"
    assert "plan" not in customer.traits  # nothing of the call applied
    assert len(api.events()) == events_before
    assert refused("contact_change") == before + 1
    # Clearing it is a change too; the same address (any case) is not.
    clear = {"userId": "known", "traits": {"email": None}}
    assert_refused(await api.post("/v1/identify", clear), "contact_change")
    same = {"userId": "known", "traits": {"email": "Owner@Example.com", "plan": "pro"}}
    assert (await api.post("/v1/identify", same)).status_code == 200
    # The operator's server may change it.
    moved = {"userId": "known", "traits": {"email": "new@example.com"}}
    assert (await api.post("/v1/identify", moved, write_key=SERVER_KEY)).status_code == 200
    assert api.customer("known").email == "new@example.com"  # type: ignore[union-attr]


async def test_a_client_key_sets_contact_points_a_customer_lacks(api: Api) -> None:
    await api.start(CART_JOURNEY)
    first = {"userId": "u1", "traits": {"email": "ana@example.com", "phone": "+33612345678"}}
    assert (await api.post("/v1/identify", first)).status_code == 200
    customer = api.customer("u1")
    assert customer is not None
    assert (customer.email, customer.phone) == ("ana@example.com", "+33612345678")
    phone = {"userId": "u1", "traits": {"phone": "+33699999999"}}
    assert_refused(await api.post("/v1/identify", phone), "contact_change")


async def test_a_client_key_may_not_merge_an_identified_customer_into_another(api: Api) -> None:
    """Profile takeover: identify {userId: att, anonymousId: <known>} merged the known
    customer (traits, email) into the attacker's."""
    await api.start(CART_JOURNEY)
    await known_customer(api)
    before = refused("identified_merge")
    takeover = {"userId": "att", "anonymousId": "known", "traits": {}}
    response = await api.post("/v1/identify", takeover)
    assert_refused(response, "identified_merge")
    known = api.customer("known")
    assert known is not None
    assert (known.merged_into, known.email) == (None, "owner@example.com")
    assert api.customer("att") is None  # nothing of the call applied
    assert refused("identified_merge") == before + 1
    alias = {"userId": "att", "previousId": "known"}
    assert_refused(await api.post("/v1/alias", alias), "identified_merge")
    track = {"userId": "att", "anonymousId": "known", "event": "cart_abandoned"}
    assert_refused(await api.post("/v1/track", track), "identified_merge")
    # In a batch, the messages before the refused one are not applied either.
    batch = {
        "batch": [
            {"type": "identify", "userId": "other", "traits": {"email": "o@example.com"}},
            {"type": "alias", "userId": "att", "previousId": "known"},
        ]
    }
    response = await api.post("/v1/batch", batch)
    assert_refused(response, "identified_merge")
    assert api.customer("other") is None
    # A server key may merge known customers (the operator deduplicating).
    assert (await api.post("/v1/alias", alias, write_key=SERVER_KEY)).status_code == 200
    assert api.customer("known").merged_into == "att"  # type: ignore[union-attr]


async def test_an_anonymous_visitor_logging_in_still_merges_with_a_client_key(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await known_customer(api)
    visit = {"anonymousId": "anon-1", "event": "cart_abandoned", "properties": {"cart_id": "c"}}
    assert (await api.post("/v1/track", visit)).status_code == 200
    login = {"userId": "known", "anonymousId": "anon-1", "traits": {"plan": "pro"}}
    assert (await api.post("/v1/identify", login)).status_code == 200
    anon = api.customer("anon-1")
    assert anon is not None and anon.merged_into == "known"
    assert {e.customer_id for e in api.events()} == {"known"}
    # Signing up on the site: the visitor's alias to a new user id.
    assert (await api.post("/v1/track", {**visit, "anonymousId": "anon-2"})).status_code == 200
    alias = {"userId": "new-user", "previousId": "anon-2"}
    assert (await api.post("/v1/alias", alias)).status_code == 200
    assert api.customer("anon-2").merged_into == "new-user"  # type: ignore[union-attr]


def user_hash(user_id: str) -> str:
    return hmac.new(IDENTITY_SECRET.encode(), user_id.encode(), hashlib.sha256).hexdigest()


async def test_identity_verification_needs_the_user_hash_from_client_keys(api: Api) -> None:
    await api.start(CART_JOURNEY, identity_secret=IDENTITY_SECRET)
    before = refused("identity_unverified")
    track = {"userId": "u1", "event": "cart_abandoned", "properties": {"cart_id": "c"}}
    response = await api.post("/v1/track", track)
    assert_refused(response, "identity_unverified")
    assert response.json()["detail"][0]["field"] == "context.userHash"
    wrong = {**track, "context": {"userHash": user_hash("u2")}}
    assert_refused(await api.post("/v1/track", wrong), "identity_unverified")
    assert api.events() == []
    assert refused("identity_unverified") == before + 2
    right = {**track, "context": {"userHash": user_hash("u1")}}
    assert (await api.post("/v1/track", right)).status_code == 200
    # Anonymous visitors have nothing to prove; server keys are trusted.
    anonymous = {"anonymousId": "a1", "event": "cart_abandoned"}
    assert (await api.post("/v1/track", anonymous)).status_code == 200
    server = {**track, "messageId": "from-server"}
    assert (await api.post("/v1/track", server, write_key=SERVER_KEY)).status_code == 200
    # In a batch, the shared context counts, and the refusal names the message.
    batch = {
        "context": {"userHash": user_hash("u1")},
        "batch": [
            {"type": "track", "userId": "u1", "event": "e"},
            {"type": "track", "userId": "u3", "event": "e"},
        ],
    }
    response = await api.post("/v1/batch", batch)
    assert_refused(response, "identity_unverified")
    assert response.json()["detail"][0]["field"] == "batch.1.context.userHash"


async def test_events_record_the_class_of_key_they_came_with(api: Api) -> None:
    await api.start(CART_JOURNEY)
    track = {"userId": "u1", "event": "cart_abandoned", "messageId": "m-client"}
    assert (await api.post("/v1/track", track)).status_code == 200
    track = {**track, "messageId": "m-server"}
    assert (await api.post("/v1/track", track, write_key=SERVER_KEY)).status_code == 200
    assert {e.message_id: e.source for e in api.events()} == {
        "m-client": "client",
        "m-server": "server",
    }


async def test_only_a_server_key_opts_a_customer_in_to_whatsapp(api: Api) -> None:
    """`whatsapp_opt_in` records a consent: with the public key, anyone could opt any
    customer they name in to WhatsApp messages."""
    await api.start(CART_JOURNEY)
    await known_customer(api)
    before = refused("consent_trait")
    opt_in = {"userId": "known", "traits": {"whatsapp_opt_in": True, "plan": "x"}}
    response = await api.post("/v1/identify", opt_in)
    assert_refused(response, "consent_trait")
    assert "whatsapp_opt_in" in response.json()["error"]
    customer = api.customer("known")
    assert customer is not None
    assert customer.traits == {"name": "Owner"}  # nothing of the call applied
    assert refused("consent_trait") == before + 1
    # Sending back the value it has is no change, and the server may set it.
    assert (await api.post("/v1/identify", opt_in, write_key=SERVER_KEY)).status_code == 200
    assert api.customer("known").traits["whatsapp_opt_in"] is True  # type: ignore[union-attr]
    assert (await api.post("/v1/identify", opt_in)).status_code == 200
