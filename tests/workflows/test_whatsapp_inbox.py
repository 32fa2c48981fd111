"""WhatsApp through the official Twilio client against the stand-in, and the inbox
channel, through the whole workflow: opt-in, the 24-hour window, approved templates,
STOP on WhatsApp, and inbox messages with their retention."""

from __future__ import annotations

import json
from datetime import timedelta

from pydantic import SecretStr
from sqlalchemy import select

from activities.provider_config import build_providers
from journeyman.events.inbound import InboundSms, twilio_inbound
from journeyman.privacy.consent import consents_of
from journeyman.privacy.pseudonyms import settings_key
from journeyman.storage.models import InboxMessage
from tests.harness import DEFAULT_TEMPLATES, Harness
from tests.standins import TwilioStandIn

CONTENT_SID = "HX" + "ab" * 16


def send_journey(journey_id: str, template: str, channels: str = "[whatsapp, sms]") -> str:
    return f"""
        id: {journey_id}
        name: {journey_id}
        entry: {{event: go_{journey_id}}}
        steps:
          - id: tell
            send: {{template: {template}, channels: {channels}}}
        """


async def inbound(harness: Harness, twilio: TwilioStandIn, sid: str, number: str, body: str):
    """The customer messages us on WhatsApp: Twilio knows (its window opens), and our
    inbound webhook gets it."""
    twilio.customer_wrote_on_whatsapp(number)
    message = InboundSms(message_sid=sid, from_=f"whatsapp:{number}", body=body)
    now = await harness.now()
    with harness.db.session() as session:
        return twilio_inbound(session, message, now, settings_key(harness.settings))


async def test_whatsapp_keeps_to_the_window_and_stop_stops_whatsapp_only(harness):
    with TwilioStandIn() as twilio:
        settings = harness.settings.model_copy(
            update={
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_from": "+15550009999",
                "twilio_whatsapp_from": "whatsapp:+15550008888",
                "twilio_base_url": twilio.base_url,
                "public_base_url": "https://shop.example",
            }
        )
        harness.settings = settings
        harness.providers = build_providers(settings)
        harness.template("plain")  # whatsapp.txt only: free-form, within the window
        harness.template(
            "approved",
            {
                **DEFAULT_TEMPLATES,
                "whatsapp.yaml": (
                    f'content_sid: {CONTENT_SID}\nvariables:\n  1: "{{{{ profile.first_name }}}}"\n'
                ),
            },
        )
        for journey_id, template in [
            ("outside", "plain"),
            ("inside", "plain"),
            ("later", "approved"),
            ("stopped", "plain"),
        ]:
            await harness.journey(send_journey(journey_id, template))
        harness.customer("c1", phone="+15550001", whatsapp_opt_in=True, first_name="Ana")
        harness.customer("c2", phone="+15550002", first_name="Bo")  # never opted in

        # 1. Opted in, but never wrote to us: no template, so SMS, with the reason.
        await harness.event("go_outside")
        result = await harness.result("outside/c1")
        assert [p.channel for p in result.path if p.action == "sent"] == ["sms"]
        [outside] = harness.deliveries()
        assert "outside the 24-hour window" in outside.attempts[0]["error"]
        assert outside.attempts[0]["channel"] == "whatsapp"

        # 2. The customer writes: the free-form text goes on WhatsApp.
        await inbound(harness, twilio, "SMin1", "+15550001", "When can I pick it up?")
        await harness.event("go_inside")
        result = await harness.result("inside/c1")
        assert [p.channel for p in result.path if p.action == "sent"] == ["whatsapp"]

        # 3. A day later the window is closed: the approved template goes instead.
        await harness.sleep(timedelta(hours=25))
        await harness.event("go_later")
        result = await harness.result("later/c1")
        assert [p.channel for p in result.path if p.action == "sent"] == ["whatsapp"]

        # 4. STOP on WhatsApp: WhatsApp stops, SMS does not.
        stop = await inbound(harness, twilio, "SMin2", "+15550001", "STOP")
        assert (stop.intent, stop.customers) == ("stop", 1)
        await harness.event("go_stopped")
        result = await harness.result("stopped/c1")
        assert [p.channel for p in result.path if p.action == "sent"] == ["sms"]

        # 5. Without an opt-in, WhatsApp is never used.
        await harness.event("go_outside", customer_id="c2")
        result = await harness.result("outside/c2")
        assert [p.channel for p in result.path if p.action == "sent"] == ["sms"]

        sent = [
            (r.body["To"], r.body.get("ContentSid"), r.body.get("Body")) for r in twilio.received
        ]
    assert sent == [
        ("+15550001", None, "Hi c1"),
        ("whatsapp:+15550001", None, "Hi c1 on WhatsApp"),
        ("whatsapp:+15550001", CONTENT_SID, None),
        ("+15550001", None, "Hi c1"),
        ("+15550002", None, "Hi c2"),
    ]
    whatsapp_requests = [r.body for r in twilio.received if r.body["To"].startswith("whatsapp:")]
    assert {r["From"] for r in whatsapp_requests} == {"whatsapp:+15550008888"}
    assert json.loads(whatsapp_requests[1]["ContentVariables"]) == {"1": "Ana"}
    assert all(
        r["StatusCallback"] == "https://shop.example/webhooks/twilio/status"
        for r in whatsapp_requests
    )
    with harness.db.session() as session:
        choices = consents_of(session, "c1")["channels"]
    assert choices["whatsapp"]["subscribed"] is False
    assert choices["whatsapp"]["source"] == "whatsapp:STOP"
    assert "sms" not in choices  # untouched: still subscribed by default
    deliveries = {(d.journey_id, d.customer_id): d for d in harness.deliveries()}
    assert [a.get("kind") for a in deliveries[("outside", "c1")].attempts] == ["passed_over", None]
    # After STOP, and without an opt-in, WhatsApp is not even tried.
    assert [a["channel"] for a in deliveries[("stopped", "c1")].attempts] == ["sms"]
    assert [a["channel"] for a in deliveries[("outside", "c2")].attempts] == ["sms"]


async def test_whatsapp_without_a_sender_goes_to_the_outbox(harness):
    harness.template("plain")
    await harness.journey(send_journey("outboxed", "plain", "[whatsapp]"))
    harness.customer("c1", phone="+15550001", whatsapp_opt_in=True)
    with harness.db.session() as session:
        from journeyman.messaging import whatsapp

        key = settings_key(harness.settings)
        whatsapp.record_inbound(session, "+15550001", await harness.now(), key)
    await harness.event("go_outboxed")
    result = await harness.result("outboxed/c1")
    assert [p.channel for p in result.path if p.action == "sent"] == ["whatsapp"]
    [message] = harness.outbox("c1")
    assert (message.channel, message.to, message.body) == (
        "whatsapp",
        "whatsapp:+15550001",
        "Hi c1 on WhatsApp",
    )


async def test_an_inbox_message_is_kept_with_its_retention(harness):
    harness.template(
        "note",
        {
            "inbox.txt": (
                "{% block title %}Welcome {{ profile.first_name }}{% endblock %}"
                "{% block body %}Your 10% code: HELLO{% endblock %}"
                "{% block link %}https://shop.example/offers{% endblock %}"
            )
        },
    )
    await harness.journey(
        """
        id: noted
        name: Noted
        entry: {event: go_noted}
        steps:
          - id: leave_note
            send: {template: note, channels: [inbox], expires_after: 30d}
        """
    )
    harness.customer("c1", first_name="Ana")
    await harness.event("go_noted")
    result = await harness.result("noted/c1")
    [sent] = [p for p in result.path if p.action == "sent"]
    assert sent.channel == "inbox"
    with harness.db.session() as session:
        [row] = session.scalars(select(InboxMessage)).all()
    assert (row.customer_id, row.journey_id, row.step_id) == ("c1", "noted", "leave_note")
    assert (row.title, row.body, row.link, row.image) == (
        "Welcome Ana",
        "Your 10% code: HELLO",
        "https://shop.example/offers",
        None,
    )
    assert row.expires_at is not None
    assert row.expires_at - row.created_at == timedelta(days=30)
    [delivery] = harness.deliveries()
    assert (delivery.provider, delivery.provider_message_id) == ("inbox", f"inbox-{row.id}")
    assert harness.outbox() == []


async def test_whatsapp_alone_outside_the_window_without_a_template_is_skipped(harness):
    """Nothing may go: the step is skipped (not failed), with WhatsApp's reason."""
    harness.template("plain")
    await harness.journey(send_journey("only_whatsapp", "plain", "[whatsapp]"))
    harness.customer("c1", phone="+15550001", whatsapp_opt_in=True)
    await harness.event("go_only_whatsapp")
    result = await harness.result("only_whatsapp/c1")
    [tell] = [p for p in result.path if p.step == "tell"]
    assert tell.action == "skipped"
    assert "whatsapp: outside the 24-hour window" in (tell.detail or "")
    [delivery] = harness.deliveries()
    assert delivery.status == "skipped"
    assert harness.outbox() == []
