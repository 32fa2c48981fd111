"""JOURNEYMAN_CLIENT_CONTACTS=confirm: an email address set with a public client key
gets journey messages only once the customer confirms it (double opt-in), or once a
server key sets the same value."""

from __future__ import annotations

import re
from typing import Any

import pytest

from journeyman.privacy import contacts
from tests.api.support import SERVER_KEY, Api

pytestmark = pytest.mark.temporal

NEWS_JOURNEY = """
id: news
name: News
entry:
  event: news_requested
  key: "event.properties.n"
steps:
  - id: tell
    send: {template: news, channels: [email]}
"""


async def start(api: Api, mode: str) -> None:
    api.harness.settings = api.harness.settings.model_copy(update={"client_contacts": mode})
    await api.start(NEWS_JOURNEY, client_contacts=mode, public_base_url="https://shop.example")


async def news(api: Api, customer: str, n: str, **post: Any) -> tuple[str, str | None]:
    body = {"userId": customer, "event": "news_requested", "properties": {"n": n}}
    assert (await api.post("/v1/track", body, **post)).status_code == 200
    await api.dispatch()
    await api.harness.result(f"news/{customer}/{n}")
    [delivery] = [d for d in api.deliveries() if d.workflow_id == f"news/{customer}/{n}"]
    return delivery.status, delivery.reason


async def test_a_client_set_email_is_held_until_the_customer_confirms_it(api: Api) -> None:
    await start(api, "confirm")
    identify = {"userId": "u1", "traits": {"email": "u1@example.com"}}
    assert (await api.post("/v1/identify", identify)).status_code == 200
    [confirmation] = api.outbox()
    assert (confirmation.to, confirmation.journey_id) == (
        "u1@example.com",
        contacts.CONFIRMATION_JOURNEY,
    )
    assert confirmation.subject is not None and "Confirm your email" in confirmation.subject
    link = re.search(r"https://shop\.example(/confirm/[A-Za-z0-9._-]+)", confirmation.body)
    assert link is not None, confirmation.body
    # Held: the journey's message is not sent to the unconfirmed address.
    status, reason = await news(api, "u1", "1")
    assert (status, reason) == ("skipped", f"email: {contacts.HELD_REASON}")
    # Identifying again sends no second confirmation.
    assert (await api.post("/v1/identify", identify)).status_code == 200
    assert len(api.outbox()) == 1
    assert api.client is not None
    # Following the link shows a button and changes nothing; pressing it confirms.
    page = await api.client.get(link.group(1))
    assert page.status_code == 200 and "Yes, confirm" in page.text
    assert (await news(api, "u1", "2"))[0] == "skipped"
    confirmed = await api.client.post(link.group(1))
    assert confirmed.status_code == 200 and "is confirmed" in confirmed.text
    assert (await news(api, "u1", "3"))[0] == "sent"
    forged = await api.client.post(link.group(1)[:-3] + "abc")
    assert forged.status_code == 400


async def test_a_server_key_setting_the_same_value_confirms_it(api: Api) -> None:
    await start(api, "confirm")
    identify = {"userId": "u2", "traits": {"email": "u2@example.com"}}
    assert (await api.post("/v1/identify", identify)).status_code == 200
    assert (await news(api, "u2", "1"))[0] == "skipped"
    assert (await api.post("/v1/identify", identify, write_key=SERVER_KEY)).status_code == 200
    assert (await news(api, "u2", "2"))[0] == "sent"
    # An address only ever set by a server key needs no confirmation.
    server = {"userId": "u3", "traits": {"email": "u3@example.com"}}
    assert (await api.post("/v1/identify", server, write_key=SERVER_KEY)).status_code == 200
    assert (await news(api, "u3", "1"))[0] == "sent"
    assert [m.to for m in api.outbox() if m.journey_id != "news"] == ["u2@example.com"]


async def test_trust_mode_sends_at_once_and_no_confirmation(api: Api) -> None:
    await start(api, "trust")
    identify = {"userId": "u1", "traits": {"email": "u1@example.com"}}
    assert (await api.post("/v1/identify", identify)).status_code == 200
    assert (await news(api, "u1", "1"))[0] == "sent"
    assert [m.journey_id for m in api.outbox()] == ["news"]
