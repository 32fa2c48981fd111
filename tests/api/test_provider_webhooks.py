"""Provider webhooks: SendGrid's Event Webhook and Twilio's callbacks, signed as the
providers sign them, applied once, and refused with no effect when the signature fails.

SendGrid requests are signed with a P-256 key made here (its public half is
configured as SendGrid shows it); Twilio requests with the official
`RequestValidator.compute_signature`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from journeyman.events.feedback import SENDGRID_JOURNEY_EVENTS, TWILIO_JOURNEY_EVENTS
from journeyman.names import DELIVERY_EVENTS
from journeyman.privacy.consent import address_hash, is_subscribed, suppress, suppression
from journeyman.privacy.pseudonyms import settings_key
from journeyman.storage.models import (
    ConsentChange,
    Delivery,
    Event,
    JourneyVersion,
    ProviderEvent,
    Suppression,
)
from tests.api.support import Api

BASE_URL = "https://jm.example.com"
TWILIO_TOKEN = "twilio-auth-token-for-tests"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
EMAIL = "ana@example.com"
PHONE = "+15550100"
EVENT_TIME = 1_760_000_000

NEWS = """
id: news
name: News
topic: newsletter
entry: {event: news_signup}
steps:
  - id: hello
    send: {template: hello, channels: [email]}
"""

RECEIPTS = """
id: receipts
name: Receipts
entry: {event: order_placed}
steps:
  - id: receipt
    send: {template: receipt, channels: [email, sms]}
"""


def public_key(key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid's UI shows it: base64 DER SubjectPublicKeyInfo."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


async def start(api: Api, *journeys: str, **settings: Any) -> None:
    values: dict[str, Any] = {
        "sendgrid_webhook_public_key": public_key(SENDGRID_KEY),
        "twilio_auth_token": TWILIO_TOKEN,
        "public_base_url": BASE_URL,
        **settings,
    }
    await api.start(*(journeys or (NEWS, RECEIPTS)), **values)
    api.harness.customer("c1", email="Ana@Example.com", phone="+1 555 0100")


def delivery(
    api: Api, journey: str = "news", channel: str = "email", provider_id: str = "msg-abc"
) -> int:
    """A message sent by `journey` to c1, as the send activity leaves it in the ledger."""
    with api.db.session() as session:
        version = session.scalars(
            select(JourneyVersion.version).where(JourneyVersion.journey_id == journey)
        ).one()
        row = Delivery(
            idempotency_key=f"{journey}/c1/{provider_id}",
            workflow_id=f"{journey}/c1",
            journey_id=journey,
            version=version,
            step_id="hello" if journey == "news" else "receipt",
            customer_id="c1",
            template="hello" if journey == "news" else "receipt",
            channel=channel,
            status="sent",
            provider="sendgrid" if channel == "email" else "twilio",
            provider_message_id=provider_id,
        )
        session.add(row)
        session.flush()
        return row.id


def ledger(api: Api, delivery_id: int) -> Delivery:
    with api.db.session() as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        return row


# -- SendGrid -------------------------------------------------------------------------


def sg_event(kind: str, delivery_id: int | None, event_id: str, **fields: Any) -> dict[str, Any]:
    """One event as the Event Webhook sends it: our custom_args are top-level keys."""
    event: dict[str, Any] = {
        "email": EMAIL,
        "timestamp": EVENT_TIME,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "msg-abc.recvd-5f54b5d587-pczjm-1-67BADEEA-6.0",
        "journey_id": "news",
        "step_id": "hello",
        **fields,
    }
    if delivery_id is not None:
        event["delivery_id"] = str(delivery_id)
    return event


def sendgrid_headers(
    body: bytes, key: ec.EllipticCurvePrivateKey = SENDGRID_KEY, at: float | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        SIGNATURE: base64.b64encode(signature).decode(),
        TIMESTAMP: timestamp,
        "Content-Type": "application/json",
    }


async def post_sendgrid(
    api: Api, events: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> httpx.Response:
    body = json.dumps(events).encode()
    return await api.post(
        "/webhooks/sendgrid",
        content=body,
        headers=sendgrid_headers(body) if headers is None else headers,
        write_key=None,
    )


def journey_events(api: Api) -> list[Event]:
    return [e for e in api.events() if e.name in DELIVERY_EVENTS or e.name == "sms_received"]


def snapshot(api: Api) -> dict[str, Any]:
    """Everything a webhook may change."""
    with api.db.session() as session:
        deliveries = session.scalars(select(Delivery).order_by(Delivery.id))
        return {
            "ledger": [
                (d.delivered_at, d.opened_at, d.clicked_at, d.complained_at, d.failed_at, d.failure)
                for d in deliveries
            ],
            "events": sorted(session.scalars(select(Event.message_id))),
            "consent_changes": session.scalar(select(func.count()).select_from(ConsentChange)),
            "suppressions": session.scalar(select(func.count()).select_from(Suppression)),
            "provider_events": session.scalar(select(func.count()).select_from(ProviderEvent)),
        }


def consent_changes(api: Api) -> list[ConsentChange]:
    with api.db.session() as session:
        return list(session.scalars(select(ConsentChange).order_by(ConsentChange.id)))


def subscribed(api: Api, scope: str, name: str, customer_id: str = "c1") -> bool:
    with api.db.session() as session:
        return is_subscribed(session, customer_id, scope, name)


def address_key(api: Api) -> bytes | None:
    """The installation key the API digests suppressions with."""
    assert api.app is not None
    return settings_key(api.app.state.services.settings)


def suppressed(api: Api, channel: str, address: str) -> Suppression | None:
    with api.db.session() as session:
        return suppression(session, channel, address, address_key(api))


def test_every_journey_event_given_is_a_delivery_event() -> None:
    given = {*SENDGRID_JOURNEY_EVENTS.values(), *TWILIO_JOURNEY_EVENTS.values()}
    assert {name for names in given for name in names} <= DELIVERY_EVENTS


async def test_delivered_open_and_click_set_the_ledger_and_give_journey_events(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    click_url = "https://shop.example/sale?utm=mail&who=ana%40example.com"
    events = [
        sg_event("processed", sent, "ev0"),
        sg_event("delivered", sent, "ev1"),
        sg_event("open", sent, "ev2", timestamp=EVENT_TIME + 60),
        sg_event("click", sent, "ev3", timestamp=EVENT_TIME + 120, url=click_url),
    ]
    response = await post_sendgrid(api, events)
    assert response.status_code == 200, response.text
    assert response.json() == {"applied": 4, "duplicates": 0, "ignored": 0}
    row = ledger(api, sent)
    assert row.delivered_at is not None and row.delivered_at.timestamp() == EVENT_TIME
    assert row.opened_at is not None and row.opened_at.timestamp() == EVENT_TIME + 60
    assert row.clicked_at is not None and row.clicked_at.timestamp() == EVENT_TIME + 120
    stored = journey_events(api)
    assert [(e.name, e.message_id, e.customer_id) for e in stored] == [
        ("email_delivered", "sendgrid:ev1:email_delivered", "c1"),
        ("email_opened", "sendgrid:ev2:email_opened", "c1"),
        ("email_clicked", "sendgrid:ev3:email_clicked", "c1"),
    ]
    assert stored[0].properties == {
        "delivery_id": sent,
        "journey_id": "news",
        "step_id": "hello",
        "workflow_id": "news/c1",
        "channel": "email",
        "template": "hello",
        "provider": "sendgrid",
    }
    assert stored[2].properties["url"] == "https://shop.example/sale?utm=mail&who=[address]"
    assert stored[1].timestamp.timestamp() == EVENT_TIME + 60
    assert all("ana" not in json.dumps(e.properties).lower() for e in stored)
    assert all(e.dispatched_at is None for e in stored)  # for the dispatcher to route


async def test_a_later_open_keeps_the_first_time_on_the_ledger(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("open", sent, "ev1")])
    await post_sendgrid(api, [sg_event("open", sent, "ev2", timestamp=EVENT_TIME + 3600)])
    assert ledger(api, sent).opened_at.timestamp() == EVENT_TIME  # type: ignore[union-attr]
    assert [e.name for e in journey_events(api)] == ["email_opened", "email_opened"]


async def test_a_duplicate_sendgrid_event_changes_nothing(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    events = [
        sg_event("delivered", sent, "ev1"),
        sg_event("bounce", sent, "ev2", type="bounce", reason="550 5.1.1 user unknown"),
        sg_event("unsubscribe", sent, "ev3"),
        sg_event("group_unsubscribe", sent, "ev4"),
    ]
    first = await post_sendgrid(api, events)
    assert first.json()["applied"] == 4
    before = snapshot(api)
    again = await post_sendgrid(api, events)
    assert again.status_code == 200
    assert again.json() == {"applied": 0, "duplicates": 4, "ignored": 0}
    assert snapshot(api) == before
    assert before["consent_changes"] == 2


async def test_the_same_event_twice_in_one_batch_counts_once(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    response = await post_sendgrid(api, [sg_event("open", sent, "ev1")] * 2)
    assert response.json() == {"applied": 1, "duplicates": 1, "ignored": 0}
    assert len(journey_events(api)) == 1


async def test_a_hard_bounce_suppresses_the_address(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    reason = "550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown"
    await post_sendgrid(api, [sg_event("bounce", sent, "ev1", type="bounce", reason=reason)])
    row = suppressed(api, "email", "Ana@Example.com")
    assert row is not None
    assert (row.reason, row.source) == ("bounced", "sendgrid")
    failed = ledger(api, sent)
    assert failed.failed_at is not None
    assert (
        failed.failure == "bounce: 550 5.1.1 <[address]>: Recipient address rejected: User unknown"
    )
    assert [(e.name, e.properties["reason"]) for e in journey_events(api)] == [
        ("email_bounced", failed.failure),
        ("message_failed", failed.failure),
    ]


async def test_suppressions_are_kept_under_a_keyed_digest(api: Api) -> None:
    """A plain SHA-256 of a phone number is found by hashing every number: the digest is
    an HMAC under the installation's key; suppressions made before are still found."""
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("bounce", sent, "ev1", type="bounce", reason="550")])
    with api.db.session() as session:
        [row] = session.scalars(select(Suppression)).all()
        plain = hashlib.sha256(b"ana@example.com").hexdigest()
        assert row.address_hash != plain
        assert row.address_hash == address_hash("email", "ana@example.com", address_key(api))
        # One made before digests were keyed still counts.
        suppress(session, "sms", "+15550100", "invalid", "test", datetime.now(UTC))
        assert suppression(session, "sms", "+1 555 0100", address_key(api)) is not None


async def test_a_blocked_bounce_fails_the_delivery_without_suppressing(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    reason = "554 5.7.1 blocked by policy"
    await post_sendgrid(api, [sg_event("bounce", sent, "ev1", type="blocked", reason=reason)])
    assert suppressed(api, "email", EMAIL) is None
    assert ledger(api, sent).failure == "blocked: 554 5.7.1 blocked by policy"
    assert [e.name for e in journey_events(api)] == ["email_bounced", "message_failed"]


async def test_a_dropped_message_fails_without_suppressing(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("dropped", sent, "ev1", reason="Invalid SMTPAPI header")])
    assert suppressed(api, "email", EMAIL) is None
    assert ledger(api, sent).failure == "dropped: Invalid SMTPAPI header"


async def test_a_message_dropped_for_a_bounced_address_suppresses_it(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("dropped", sent, "ev1", reason="Bounced Address")])
    row = suppressed(api, "email", EMAIL)
    assert row is not None and (row.reason, row.source) == ("bounced", "sendgrid")
    assert ledger(api, sent).failure == "dropped: Bounced Address"


async def test_a_spam_report_suppresses_and_records_the_complaint(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("spamreport", sent, "ev1")])
    row = suppressed(api, "email", EMAIL)
    assert row is not None and row.reason == "spam_report"
    assert ledger(api, sent).complained_at is not None
    assert [e.name for e in journey_events(api)] == ["email_spam_reported"]


async def test_unsubscribe_revokes_the_topic_of_the_journey(api: Api) -> None:
    await start(api)
    sent = delivery(api, "news")
    await post_sendgrid(api, [sg_event("unsubscribe", sent, "ev1")])
    assert not subscribed(api, "topic", "newsletter")
    assert subscribed(api, "channel", "email")
    [change] = consent_changes(api)
    assert (change.scope, change.name, change.subscribed, change.source) == (
        "topic",
        "newsletter",
        False,
        "sendgrid",
    )
    assert change.at.timestamp() == EVENT_TIME
    assert [e.name for e in journey_events(api)] == ["email_unsubscribed"]


async def test_unsubscribe_from_a_journey_without_topic_revokes_email(api: Api) -> None:
    await start(api)
    sent = delivery(api, "receipts")
    event = sg_event("unsubscribe", sent, "ev1", journey_id="receipts", step_id="receipt")
    await post_sendgrid(api, [event])
    assert not subscribed(api, "channel", "email")


async def test_group_unsubscribe_and_resubscribe_switch_the_email_channel(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    await post_sendgrid(api, [sg_event("group_unsubscribe", sent, "ev1")])
    assert not subscribed(api, "channel", "email")
    later = EVENT_TIME + 60
    await post_sendgrid(api, [sg_event("group_resubscribe", sent, "ev2", timestamp=later)])
    assert subscribed(api, "channel", "email")
    assert [(c.subscribed, c.source) for c in consent_changes(api)] == [
        (False, "sendgrid"),
        (True, "sendgrid"),
    ]
    assert [e.name for e in journey_events(api)] == ["email_unsubscribed"]


async def test_an_older_unsubscribe_arriving_late_does_not_undo_a_resubscribe(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    later = EVENT_TIME + 60
    await post_sendgrid(api, [sg_event("group_resubscribe", sent, "ev2", timestamp=later)])
    await post_sendgrid(api, [sg_event("group_unsubscribe", sent, "ev1")])
    assert subscribed(api, "channel", "email")


async def test_the_delivery_is_found_by_sendgrids_message_id_without_custom_args(
    api: Api,
) -> None:
    await start(api)
    sent = delivery(api)
    event = sg_event("delivered", None, "ev1")
    del event["journey_id"], event["step_id"]
    response = await post_sendgrid(api, [event])
    assert response.json()["applied"] == 1
    assert ledger(api, sent).delivered_at is not None


async def test_events_of_unknown_deliveries_are_acknowledged_and_ignored(api: Api) -> None:
    await start(api)
    sent = delivery(api)
    before = snapshot(api)
    unknown = [
        sg_event("delivered", 999, "ev1"),
        sg_event("delivered", None, "ev2", sg_message_id="not-ours.filter"),
        # Delivery ids of another installation sharing the SendGrid account.
        sg_event("open", sent, "ev3", sg_message_id="someone-else.filter"),
        sg_event("click", None, "ev4", sg_message_id="x.y", url="https://a.example"),
        sg_event("bounce", None, "ev5", type="blocked", sg_message_id="x.y"),
        sg_event("dropped", None, "ev6", reason="Invalid SMTPAPI header", sg_message_id="x.y"),
    ]
    response = await post_sendgrid(api, unknown)
    assert response.status_code == 200
    assert response.json() == {"applied": 0, "duplicates": 0, "ignored": 6}
    assert snapshot(api) == before


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"event": "bounce", "type": "bounce", "reason": "550 5.1.1 user unknown"}, "bounced"),
        ({"event": "spamreport"}, "spam_report"),
        ({"event": "dropped", "reason": "Bounced Address"}, "bounced"),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, "spam_report"),
    ],
)
async def test_address_events_of_messages_we_did_not_send_suppress_the_address(
    api: Api, event: dict[str, Any], reason: str
) -> None:
    """Another sender on the account, or a message from before: the mailbox is gone
    (or its owner complained) for us too, whoever wrote to it."""
    await start(api)
    sent = delivery(api)
    before = snapshot(api)
    others = [
        # Our delivery id, another installation's message id.
        sg_event(event["event"], sent, "ev1", sg_message_id="someone-else.f", **event),
        # No custom args, a message id we never had.
        sg_event(event["event"], None, "ev2", sg_message_id="x.y", **event)
        | {"email": "bob@example.com"},
    ]
    response = await post_sendgrid(api, others)
    assert response.status_code == 200
    assert response.json() == {"applied": 2, "duplicates": 0, "ignored": 0}
    for address in (EMAIL, "Bob@Example.com"):
        row = suppressed(api, "email", address)
        assert row is not None and (row.reason, row.source) == (reason, "sendgrid"), address
    after = snapshot(api)
    assert after["ledger"] == before["ledger"]  # our message is not theirs
    assert after["events"] == before["events"]  # no journey event for someone else's mail
    again = await post_sendgrid(api, others)
    assert again.json() == {"applied": 0, "duplicates": 2, "ignored": 0}


def tampered(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    return body.replace(b"delivered", b"spamreport"), sendgrid_headers(body)


def wrong_key(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    return body, sendgrid_headers(body, key=OTHER_KEY)


def without(header: str) -> Any:
    def build(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
        body = json.dumps(events).encode()
        headers = sendgrid_headers(body)
        del headers[header]
        return body, headers

    return build


def stale(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    return body, sendgrid_headers(body, at=time.time() - 301)


def garbage_signature(events: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    return body, {**sendgrid_headers(body), SIGNATURE: "bm90IGEgc2lnbmF0dXJl"}


@pytest.mark.parametrize(
    "forge",
    [tampered, wrong_key, without(SIGNATURE), without(TIMESTAMP), stale, garbage_signature],
    ids=["tampered body", "wrong key", "no signature", "no timestamp", "stale", "garbage"],
)
async def test_a_sendgrid_request_that_fails_its_signature_is_403_with_no_effect(
    api: Api, forge: Any
) -> None:
    await start(api)
    sent = delivery(api)
    before = snapshot(api)
    body, headers = forge([sg_event("delivered", sent, "ev1")])
    response = await api.post("/webhooks/sendgrid", content=body, headers=headers, write_key=None)
    assert response.status_code == 403, response.text
    assert response.json()["error"]
    assert snapshot(api) == before


async def test_sendgrid_events_are_refused_until_the_key_is_configured(api: Api) -> None:
    await start(api, sendgrid_webhook_public_key=None)
    sent = delivery(api)
    response = await post_sendgrid(api, [sg_event("delivered", sent, "ev1")])
    assert response.status_code == 503
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["error"]
    assert ledger(api, sent).delivered_at is None


async def test_a_sendgrid_body_over_the_limit_is_413(api: Api) -> None:
    await start(api, max_body_bytes=1024)
    events = [sg_event("open", 1, f"ev{i}") for i in range(20)]
    response = await post_sendgrid(api, events)
    assert response.status_code == 413


async def test_a_signed_body_that_is_not_an_event_array_is_422(api: Api) -> None:
    await start(api)
    body = json.dumps({"event": "delivered"}).encode()
    response = await api.post(
        "/webhooks/sendgrid", content=body, headers=sendgrid_headers(body), write_key=None
    )
    assert response.status_code == 422


@pytest.mark.temporal
async def test_an_open_reaches_the_run_waiting_for_it(api: Api) -> None:
    await start(
        api,
        """
        id: welcome
        name: Welcome
        entry: {event: signed_up}
        steps:
          - id: hello
            send: {template: hello, channels: [email]}
          - id: wait_for_open
            wait_for: {event: email_opened, timeout: 1d, on_timeout: nudge}
          - id: opened
            end: true
          - id: nudge
            send: {template: hello, channels: [email]}
        """,
    )
    await api.post("/v1/track", {"userId": "c1", "event": "signed_up", "messageId": "m1"})
    await api.dispatch()
    await api.harness.sleep(timedelta(minutes=1))
    [sent] = api.deliveries()
    event = sg_event("open", sent.id, "ev1", journey_id="welcome", step_id="hello")
    del event["sg_message_id"]  # the outbox stood in for SendGrid
    assert (await post_sendgrid(api, [event])).json()["applied"] == 1
    assert (await api.dispatch()).dispatched == 1
    result = await api.harness.result("welcome/c1")
    assert [(p.step, p.action) for p in result.path][-2:] == [
        ("wait_for_open", "event"),
        ("opened", "ended"),
    ]


# -- Twilio ---------------------------------------------------------------------------


async def post_twilio(
    api: Api,
    path: str,
    params: dict[str, str],
    *,
    signed_url: str | None = None,
    token: str = TWILIO_TOKEN,
    sent: dict[str, str] | None = None,
) -> httpx.Response:
    """POST `sent` (else `params`) signed as Twilio signs `params` for `signed_url`."""
    url = signed_url or BASE_URL + path
    headers = {
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, params),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    body = urlencode(sent if sent is not None else params).encode()
    return await api.post(path, content=body, headers=headers, write_key=None)


def status(sid: str, message_status: str, error_code: str = "") -> dict[str, str]:
    params = {
        "AccountSid": "AC0123",
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": message_status,
        "SmsStatus": message_status,
        "To": PHONE,
        "From": "+15559999",
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params


def inbound(body: str, sid: str = "SMin1", **extra: str) -> dict[str, str]:
    return {
        "AccountSid": "AC0123",
        "MessageSid": sid,
        "From": PHONE,
        "To": "+15559999",
        "Body": body,
        "NumMedia": "0",
        **extra,
    }


async def test_a_delivered_status_sets_the_ledger_and_gives_sms_delivered(api: Api) -> None:
    await start(api)
    sent = delivery(api, "receipts", "sms", "SM1")
    response = await post_twilio(api, "/webhooks/twilio/status", status("SM1", "delivered"))
    assert response.status_code == 204, response.text
    assert ledger(api, sent).delivered_at is not None
    [event] = journey_events(api)
    assert (event.name, event.message_id) == ("sms_delivered", "twilio:SM1:delivered:sms_delivered")
    assert event.properties == {
        "delivery_id": sent,
        "journey_id": "receipts",
        "step_id": "receipt",
        "workflow_id": "receipts/c1",
        "channel": "sms",
        "template": "receipt",
        "provider": "twilio",
    }


async def test_a_sent_status_gives_sms_sent(api: Api) -> None:
    await start(api)
    delivery(api, "receipts", "sms", "SM1")
    await post_twilio(api, "/webhooks/twilio/status", status("SM1", "sent"))
    assert [e.name for e in journey_events(api)] == ["sms_sent"]


async def test_an_unknown_number_fails_the_message_and_suppresses_it(api: Api) -> None:
    await start(api)
    sent = delivery(api, "receipts", "sms", "SM1")
    await post_twilio(api, "/webhooks/twilio/status", status("SM1", "undelivered", "30005"))
    failed = ledger(api, sent)
    assert failed.failed_at is not None and failed.failure == "twilio 30005"
    row = suppressed(api, "sms", "+1 555 0100")
    assert row is not None and (row.reason, row.source) == ("invalid", "twilio")
    stored = journey_events(api)
    assert [(e.name, e.properties["reason"]) for e in stored] == [
        ("sms_failed", "twilio 30005"),
        ("message_failed", "twilio 30005"),
    ]
    assert all("555" not in json.dumps(e.properties) for e in stored)


async def test_an_unreachable_handset_fails_the_message_only(api: Api) -> None:
    await start(api)
    sent = delivery(api, "receipts", "sms", "SM1")
    await post_twilio(api, "/webhooks/twilio/status", status("SM1", "undelivered", "30003"))
    assert ledger(api, sent).failure == "twilio 30003"
    assert suppressed(api, "sms", PHONE) is None
    assert subscribed(api, "channel", "sms")


async def test_a_recipient_who_replied_stop_loses_sms_consent(api: Api) -> None:
    await start(api)
    delivery(api, "receipts", "sms", "SM1")
    await post_twilio(api, "/webhooks/twilio/status", status("SM1", "failed", "21610"))
    assert not subscribed(api, "channel", "sms")
    [change] = consent_changes(api)
    assert (change.source, change.detail) == ("twilio", "twilio 21610: the recipient replied STOP")
    assert suppressed(api, "sms", PHONE) is None


async def test_a_duplicate_status_callback_changes_nothing(api: Api) -> None:
    await start(api)
    delivery(api, "receipts", "sms", "SM1")
    callback = status("SM1", "failed", "21610")
    await post_twilio(api, "/webhooks/twilio/status", callback)
    before = snapshot(api)
    again = await post_twilio(api, "/webhooks/twilio/status", callback)
    assert again.status_code == 204
    assert snapshot(api) == before


async def test_a_status_of_an_unknown_message_is_acknowledged(api: Api) -> None:
    await start(api)
    before = snapshot(api)
    response = await post_twilio(api, "/webhooks/twilio/status", status("SMzzz", "delivered"))
    assert response.status_code == 204
    assert snapshot(api) == before


async def post_forged_status(api: Api, forgery: str) -> httpx.Response:
    path = "/webhooks/twilio/status"
    params = status("SM1", "undelivered", "30005")
    match forgery:
        case "tampered param":
            return await post_twilio(api, path, params, sent={**params, "ErrorCode": "21211"})
        case "signed for another path":
            return await post_twilio(api, path, params, signed_url=BASE_URL + "/webhooks/other")
        case "signed for the host it arrived on":
            # What a proxy-unaware check would accept: the caller picks that URL.
            return await post_twilio(api, path, params, signed_url="http://journeyman.test" + path)
        case "wrong token":
            return await post_twilio(api, path, params, token="not-the-token")
        case "no signature":
            assert api.client is not None
            return await api.client.post(path, content=urlencode(params).encode())
    raise AssertionError(forgery)


@pytest.mark.parametrize(
    "forgery",
    [
        "tampered param",
        "signed for another path",
        "signed for the host it arrived on",
        "wrong token",
        "no signature",
    ],
)
async def test_a_twilio_request_that_fails_its_signature_is_403_with_no_effect(
    api: Api, forgery: str
) -> None:
    await start(api)
    delivery(api, "receipts", "sms", "SM1")
    before = snapshot(api)
    response = await post_forged_status(api, forgery)
    assert response.status_code == 403, response.text
    assert snapshot(api) == before
    assert suppressed(api, "sms", PHONE) is None


async def test_twilio_callbacks_are_refused_until_the_token_is_configured(api: Api) -> None:
    await start(api, twilio_auth_token=None)
    response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("STOP"))
    assert response.status_code == 503
    assert "TWILIO_AUTH_TOKEN" in response.json()["error"]
    assert subscribed(api, "channel", "sms")


async def test_the_signed_url_follows_public_base_url_with_a_path_and_query(api: Api) -> None:
    await start(api, public_base_url="https://shop.example/jm/")
    response = await post_twilio(
        api,
        "/webhooks/twilio/inbound?source=main",
        inbound("STOP"),
        signed_url="https://shop.example/jm/webhooks/twilio/inbound?source=main",
    )
    assert response.status_code == 200, response.text
    assert not subscribed(api, "channel", "sms")


async def test_stop_revokes_sms_consent_of_every_profile_with_the_number(api: Api) -> None:
    await start(api)
    api.harness.customer("c2", phone="+15550100")
    api.harness.customer("c3", phone="+15550199")
    response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("Stop"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response/>'
    assert not subscribed(api, "channel", "sms", "c1")
    assert not subscribed(api, "channel", "sms", "c2")
    assert subscribed(api, "channel", "sms", "c3")
    assert [(c.customer_id, c.subscribed, c.source, c.detail) for c in consent_changes(api)] == [
        ("c1", False, "sms:STOP", "STOP"),
        ("c2", False, "sms:STOP", "STOP"),
    ]
    assert journey_events(api) == []


async def test_start_restores_sms_consent(api: Api) -> None:
    await start(api)
    await post_twilio(api, "/webhooks/twilio/inbound", inbound("UNSUBSCRIBE", sid="SM1"))
    response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("start", sid="SM2"))
    assert response.text.endswith("<Response/>")
    assert subscribed(api, "channel", "sms")
    assert [(c.subscribed, c.source, c.detail) for c in consent_changes(api)] == [
        (False, "sms:STOP", "UNSUBSCRIBE"),
        (True, "sms:START", "START"),
    ]


async def test_twilios_opt_out_type_wins_over_the_text(api: Api) -> None:
    await start(api)
    await post_twilio(api, "/webhooks/twilio/inbound", inbound("ARRET", OptOutType="STOP"))
    assert not subscribed(api, "channel", "sms")
    [change] = consent_changes(api)
    assert change.detail == "ARRET"


async def test_help_is_answered_with_the_help_text(api: Api) -> None:
    await start(api, sms_help_text="Shop & Co: reply STOP to stop <3")
    response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("help"))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text == (
        '<?xml version="1.0" encoding="UTF-8"?>'
        "<Response><Message>Shop &amp; Co: reply STOP to stop &lt;3</Message></Response>"
    )
    assert consent_changes(api) == []


async def test_any_other_text_is_an_sms_received_event_without_its_text(api: Api) -> None:
    await start(api)
    response = await post_twilio(
        api, "/webhooks/twilio/inbound", inbound("yes please, call me at 555 0100")
    )
    assert response.text.endswith("<Response/>")
    # YES alone means START; a sentence starting with it is a message.
    [event] = journey_events(api)
    assert (event.name, event.customer_id, event.message_id) == (
        "sms_received",
        "c1",
        "twilio-inbound:SMin1:c1",
    )
    assert event.properties == {"keyword": "YES", "message_sid": "SMin1"}
    assert consent_changes(api) == []


async def test_a_duplicate_inbound_stop_is_audited_once(api: Api) -> None:
    await start(api)
    for _ in range(2):
        response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("STOP"))
        assert response.status_code == 200
    assert len(consent_changes(api)) == 1


@pytest.mark.temporal
async def test_stop_stops_the_very_next_send_of_a_running_journey(api: Api) -> None:
    await start(
        api,
        """
        id: texts
        name: Texts
        entry: {event: texts_started}
        steps:
          - id: first_text
            send: {template: note, channels: [sms]}
          - id: pause
            wait: 1h
          - id: second_text
            send: {template: note, channels: [sms]}
        """,
    )
    await api.post("/v1/track", {"userId": "c1", "event": "texts_started", "messageId": "m1"})
    assert (await api.dispatch()).dispatched == 1
    await api.harness.sleep(timedelta(minutes=1))
    assert [m.channel for m in api.outbox()] == ["sms"]
    response = await post_twilio(api, "/webhooks/twilio/inbound", inbound("STOP"))
    assert response.status_code == 200
    result = await api.harness.result("texts/c1")
    second = next(p for p in result.path if p.step == "second_text" and p.action != "entered")
    assert second.action == "skipped"
    assert "sms: unsubscribed from sms" in second.detail
    assert len(api.outbox()) == 1
