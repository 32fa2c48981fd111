"""WhatsApp on Twilio's signed webhooks: status callbacks of WhatsApp messages, and
inbound WhatsApp messages (the 24-hour window, STOP and START on WhatsApp only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from journeyman.events.feedback import WHATSAPP_JOURNEY_EVENTS
from journeyman.messaging import whatsapp
from journeyman.names import DELIVERY_EVENTS
from journeyman.privacy.pseudonyms import settings_key
from journeyman.storage.models import Event, WhatsAppWindow
from tests.api.support import Api
from tests.api.test_provider_webhooks import (
    PHONE,
    consent_changes,
    delivery,
    inbound,
    ledger,
    post_twilio,
    start,
    status,
    subscribed,
    suppressed,
)

CHAT = f"whatsapp:{PHONE}"


def events(api: Api) -> list[Event]:
    return [e for e in api.events() if e.name.startswith("whatsapp_") or e.name in DELIVERY_EVENTS]


def test_every_whatsapp_journey_event_is_a_delivery_event() -> None:
    assert {n for names in WHATSAPP_JOURNEY_EVENTS.values() for n in names} <= DELIVERY_EVENTS


async def test_statuses_of_a_whatsapp_message_give_whatsapp_events_and_read_is_an_open(
    api: Api,
) -> None:
    await start(api)
    sent = delivery(api, "receipts", "whatsapp", "SMwa1")
    for step in ("sent", "delivered", "read"):
        params = {**status("SMwa1", step), "To": CHAT, "From": "whatsapp:+15559999"}
        response = await post_twilio(api, "/webhooks/twilio/status", params)
        assert response.status_code == 204, response.text
    row = ledger(api, sent)
    assert row.delivered_at is not None and row.opened_at is not None
    assert [e.name for e in events(api)] == ["whatsapp_sent", "whatsapp_delivered", "whatsapp_read"]
    assert all(e.properties["channel"] == "whatsapp" for e in events(api))


async def test_a_number_not_on_whatsapp_is_suppressed_on_whatsapp_only(api: Api) -> None:
    await start(api)
    sent = delivery(api, "receipts", "whatsapp", "SMwa1")
    params = {**status("SMwa1", "undelivered", "63003"), "To": CHAT}
    await post_twilio(api, "/webhooks/twilio/status", params)
    assert ledger(api, sent).failure == "twilio 63003"
    row = suppressed(api, "whatsapp", PHONE)
    assert row is not None and row.reason == "invalid"
    assert suppressed(api, "sms", PHONE) is None
    assert [e.name for e in events(api)] == ["whatsapp_failed", "message_failed"]


async def test_a_message_on_whatsapp_opens_the_window_and_is_a_journey_event(api: Api) -> None:
    await start(api)
    before = datetime.now(UTC)
    response = await post_twilio(
        api,
        "/webhooks/twilio/inbound",
        {**inbound("Is my order ready?", sid="SMwa-in"), "From": CHAT, "To": "whatsapp:+1555"},
    )
    assert response.status_code == 200, response.text
    key = settings_key(api.settings())
    with api.db.session() as session:
        assert whatsapp.window_open(session, PHONE, datetime.now(UTC), key)
        assert whatsapp.window_open(session, CHAT, before + timedelta(hours=23), key)
        assert not whatsapp.window_open(
            session, PHONE, datetime.now(UTC) + timedelta(hours=25), key
        )
        # Kept under the installation's keyed digest: a plain digest of a phone number
        # is brute-forced in seconds.
        assert not whatsapp.window_open(session, PHONE, datetime.now(UTC))
        [window] = session.scalars(select(WhatsAppWindow)).all()
    assert PHONE not in window.address_hash  # a digest, not the number
    [event] = events(api)
    assert (event.name, event.customer_id) == ("whatsapp_received", "c1")
    assert event.properties["keyword"] == "IS"


async def test_stop_on_whatsapp_revokes_whatsapp_only_and_start_restores_it(api: Api) -> None:
    await start(api)
    stop = {**inbound("STOP", sid="SMwa-stop"), "From": CHAT}
    response = await post_twilio(api, "/webhooks/twilio/inbound", stop)
    assert response.text.endswith("<Response/>")
    assert not subscribed(api, "channel", "whatsapp")
    assert subscribed(api, "channel", "sms")
    again = {**inbound("START", sid="SMwa-start"), "From": CHAT}
    await post_twilio(api, "/webhooks/twilio/inbound", again)
    assert subscribed(api, "channel", "whatsapp")
    assert [(c.name, c.subscribed, c.source) for c in consent_changes(api)] == [
        ("whatsapp", False, "whatsapp:STOP"),
        ("whatsapp", True, "whatsapp:START"),
    ]
    # An SMS STOP, for its part, leaves WhatsApp alone.
    await post_twilio(api, "/webhooks/twilio/inbound", inbound("STOP", sid="SMsms-stop"))
    assert not subscribed(api, "channel", "sms")
    assert subscribed(api, "channel", "whatsapp")


async def test_the_consents_api_opts_in_to_whatsapp(api: Api) -> None:
    await start(api)
    assert api.client is not None
    headers = {"Authorization": "Bearer admin-token-for-tests"}
    response = await api.client.put(
        "/v1/customers/c1/consents",
        json={"channels": {"whatsapp": True}, "source": "checkout"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["channels"]["whatsapp"]["subscribed"] is True
    customer = api.customer("c1")
    assert customer is not None
    with api.db.session() as session:
        assert whatsapp.opted_in(session, customer)
