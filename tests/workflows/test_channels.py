"""Channels through the whole workflow: caps and priority across journeys, provider
retries, and a worker lost in the middle of a provider call."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select

from activities.provider_config import build_providers
from activities.providers import OutgoingMessage, TransientFailure
from journeyman.consent import address_hash
from journeyman.storage.models import Suppression
from tests.harness import actions
from tests.standins import SendGridStandIn, TwilioStandIn


def journey(journey_id: str, priority: int = 0, cap: str = "1 per 1h") -> str:
    return f"""
        id: {journey_id}
        name: {journey_id}
        entry: {{event: go_{journey_id}}}
        settings: {{frequency_cap: {cap}, priority: {priority}}}
        steps:
          - id: hello
            send: {{template: hello, channels: [email]}}
        """


class Recording:
    name = "recording"
    transactional = False

    def __init__(self, failures: list[BaseException] | None = None) -> None:
        self.failures = list(failures or [])
        self.sent: list[OutgoingMessage] = []
        self.calls = 0
        self.lock = threading.Lock()

    def send(self, message: OutgoingMessage, session: Any) -> str:
        with self.lock:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            self.sent.append(message)
            return f"rec-{len(self.sent)}"


async def test_a_send_over_the_cap_waits_for_room_then_goes(harness):
    await harness.journey(journey("news"))
    await harness.journey(journey("promo"))
    harness.customer("c1", email="ana@example.com")
    await harness.event("go_news")
    first = await harness.result("news/c1")
    await harness.sleep(timedelta(minutes=10))
    await harness.event("go_promo")
    second = await harness.result("promo/c1")
    assert actions(second)[:3] == [("entry", "entered"), ("hello", "deferred"), ("hello", "sent")]
    # An hour after the first message (give or take the moments activities take).
    gap = second.path[2].at - first.path[1].at
    assert timedelta(minutes=59) < gap < timedelta(hours=1, minutes=2)
    assert "frequency cap 1 per 1h reached" in second.path[1].detail
    assert len(harness.outbox("c1")) == 2


async def test_when_room_opens_the_higher_priority_send_goes_first(harness):
    await harness.journey(journey("first"))
    await harness.journey(journey("low", priority=0))
    await harness.journey(journey("high", priority=5))
    harness.customer("c1", email="ana@example.com")
    await harness.event("go_first")
    await harness.result("first/c1")
    await harness.sleep(timedelta(minutes=1))
    await harness.event("go_low")
    await harness.event("go_high")
    high = await harness.result("high/c1")
    low = await harness.result("low/c1")
    high_sent = next(p.at for p in high.path if p.action == "sent")
    low_sent = next(p.at for p in low.path if p.action == "sent")
    assert high_sent < low_sent
    assert low_sent - high_sent > timedelta(minutes=59)
    assert [m.journey_id for m in harness.outbox("c1")] == ["first", "high", "low"]


async def test_a_provider_outage_is_retried_and_the_message_goes_once(harness):
    provider = Recording([TransientFailure("503"), TransientFailure("429", retry_after=2)])
    harness.providers["email"] = provider
    await harness.journey(journey("news"))
    harness.customer("c1", email="ana@example.com")
    await harness.event("go_news")
    result = await harness.result("news/c1")
    assert ("hello", "sent") in actions(result)
    assert provider.calls == 3
    assert [m.to for m in provider.sent] == ["ana@example.com"]
    [delivery] = harness.deliveries()
    assert (delivery.status, delivery.provider_message_id) == ("sent", "rec-1")


class WorkerLost(BaseException):
    """Stands for the worker process dying after the provider accepted the message: no
    code of ours runs after it (`except Exception` does not catch it)."""


class AcceptsThenDies(Recording):
    def send(self, message: OutgoingMessage, session: Any) -> str:
        super().send(message, session)
        if self.calls == 1:
            raise WorkerLost("killed mid-send")
        return "never"


async def test_a_worker_lost_mid_send_never_sends_twice(harness):
    provider = AcceptsThenDies()
    harness.providers["email"] = provider
    await harness.journey(journey("news"))
    harness.customer("c1", email="ana@example.com")
    await harness.event("go_news")
    result = await harness.result("news/c1")
    assert len(provider.sent) == 1
    assert provider.calls == 1  # the retry did not call the provider again
    outcome = next(p for p in result.path if p.step == "hello" and p.action != "entered")
    assert outcome.action == "unknown"
    assert "not sent again" in outcome.detail
    [delivery] = harness.deliveries()
    assert delivery.status == "unknown"


# -- the real clients, through settings, against stand-ins -------------------------------


async def test_real_providers_fall_back_from_a_bad_address_and_retry_a_rate_limit(harness):
    """Configured as a user would (settings), the official SendGrid and Twilio clients
    talk to stand-ins: SendGrid refuses the address, so the SMS goes through Twilio,
    which first answers 429; one text arrives, the address is suppressed, and the next
    email-first send for this customer goes straight to SMS."""
    with SendGridStandIn() as sendgrid, TwilioStandIn() as twilio:
        settings = harness.settings.model_copy(
            update={
                "sendgrid_api_key": SecretStr(sendgrid.api_key),
                "sendgrid_base_url": sendgrid.base_url,
                "twilio_account_sid": twilio.account_sid,
                "twilio_auth_token": SecretStr(twilio.auth_token),
                "twilio_from": "+15550009999",
                "twilio_base_url": twilio.base_url,
                "public_base_url": "https://shop.example",
            }
        )
        harness.settings = settings
        harness.providers = build_providers(settings)
        sendgrid.script(SendGridStandIn.invalid_address())
        twilio.script(TwilioStandIn.error(20429, "Too Many Requests", 429, {"Retry-After": "1"}))
        await harness.journey(
            """
            id: order_news
            name: Order news
            topic: news
            entry: {event: go}
            steps:
              - id: first
                send: {template: hello, channels: [email, sms]}
              - id: later
                wait: 1h
              - id: second
                send: {template: hello, channels: [email, sms]}
            """
        )
        harness.customer("c1", email="typo@example", phone="+15550001")
        await harness.event("go")
        result = await harness.result("order_news/c1")
        assert [(p.step, p.channel) for p in result.path if p.action == "sent"] == [
            ("first", "sms"),
            ("second", "sms"),
        ]
        # SendGrid saw one attempt, with the one-click unsubscribe headers.
        [mail] = sendgrid.received
        headers = mail.body["headers"]
        assert headers["List-Unsubscribe"].startswith("<https://shop.example/unsubscribe/")
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        # Twilio: the 429, then one message per step.
        texts = [r.body for r in twilio.received]
        assert len(texts) == 3
        assert texts[1] == texts[0]  # the retry of the same message
        assert {t["To"] for t in texts} == {"+15550001"}
        assert texts[0]["StatusCallback"] == "https://shop.example/webhooks/twilio/status"
    with harness.db.session() as session:
        suppressed = session.scalars(select(Suppression)).all()
    assert [(s.channel, s.address_hash, s.reason) for s in suppressed] == [
        ("email", address_hash("email", "typo@example"), "invalid")
    ]
    sids = [d.provider_message_id for d in harness.deliveries()]
    assert all(sid and sid.startswith("SM") for sid in sids)
