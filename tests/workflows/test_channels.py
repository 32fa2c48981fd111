"""Channels through the whole workflow: caps and priority across journeys, provider
retries, a worker lost in the middle of a provider call, and a provider's pace."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from temporalio import activity

from activities.provider_config import build_providers
from journeyman.contracts import RunStatus
from journeyman.messaging.providers import OutgoingMessage, TransientFailure
from journeyman.messaging.ratelimit import GRACE
from journeyman.names import STATE_QUERY
from journeyman.privacy.consent import address_hash
from journeyman.privacy.pseudonyms import installation_key
from journeyman.storage.models import Delivery, RateLimit, Suppression
from tests.harness import Harness, actions
from tests.standins import SendGridStandIn, TwilioStandIn
from tests.waiting import eventually

HARNESS_KEY = installation_key(b"harness-secret")


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


class PacedTwilio(Recording):
    """A stand-in named as Twilio, so `TWILIO_RATE_LIMIT` paces it, that notes when each
    call's activity attempt started, in the test server's virtual time."""

    name = "twilio"

    def __init__(self) -> None:
        super().__init__()
        self.called_at: dict[int, datetime] = {}  # by delivery id

    def send(self, message: OutgoingMessage, session: Any) -> str:
        sid = super().send(message, session)
        with self.lock:
            self.called_at[message.delivery_id] = activity.info().started_time
        return sid


FLASH_SALE = """
id: flash_sale
name: Flash sale
entry: {event: flash_sale}
settings: {frequency_cap: 1 per 1d}
steps:
  - id: text
    send: {template: hello, channels: [sms]}
"""


# Twilio's pace in the broadcast test: one text a second. Slower than any worker sends,
# so the drain's virtual time is the pace's alone: between slots the worker is idle and
# the test server leaps to the next one (at 10/s, a loaded machine fell behind the slots
# and the drain took as long, in virtual time, as the machine was slow).
PACE = 1.0  # texts a second


async def test_a_broadcast_drains_at_the_providers_pace_and_the_cap_still_holds(harness):
    """120 customers enter at once; Twilio takes one text a second. Every customer gets
    one text, each at its own slot in Twilio's pace; the 12 texted an hour before wait
    for their cap to open (a day after that text), then go at the same pace.

    Every run takes its slot (or its deferral) before time may skip, however slowly
    this machine starts 120 runs: the test server's clock runs at the wall clock's pace
    meanwhile, and the first slot is minutes away. Skipping earlier, the server leapt to
    the first slot in a moment with no task in flight while half the runs had not
    started, and the runs woken then were late for their slots."""
    provider = harness.providers["sms"] = PacedTwilio()
    harness.settings = harness.settings.model_copy(update={"twilio_rate_limit": f"{PACE:g}/s"})
    (harness.journeys_dir / "flash_sale.yaml").write_text(FLASH_SALE)
    harness.template("hello")
    await harness.start_catalog_only()
    customers = [harness.customer(f"c{i:03}", phone=f"+1555{i:07}") for i in range(120)]
    texted = set(customers[::10])
    now = await harness.now()
    first_slot = now + timedelta(minutes=5)
    with harness.db.session() as session:
        session.add_all(texted_before(customer, now - timedelta(hours=1)) for customer in texted)
        # Twilio's next 5 minutes are taken (another broadcast is draining).
        session.add(RateLimit(provider="twilio", next_slot_at=first_slot))
    for customer in customers:
        await harness.event("flash_sale", customer)
    await harness.start()

    async def waiting(customer: str) -> bool:
        handle = harness.handle(f"flash_sale/{customer}")
        state = await handle.query(STATE_QUERY, result_type=RunStatus)
        return state.path[-1].action == "deferred"

    async def all_waiting() -> bool:
        return all(await asyncio.gather(*(waiting(customer) for customer in customers)))

    await eventually(all_waiting, what="every run waits for its slot or its cap", within=120)
    drain = timedelta(seconds=(len(customers) - len(texted)) / PACE)
    await harness.sleep(first_slot + drain + timedelta(minutes=2) - now)
    first = sent_by(provider)
    assert Counter(first.values()) == Counter(c for c in customers if c not in texted)
    check_paced(harness, provider, first, PACE)
    # Drained in about audience / rate from the first slot: not held the minute other
    # deferrals wait. A run woken later than `GRACE` after its slot (the clock runs on
    # while a loaded worker takes the wake-up) takes one more slot at the end, so the
    # drain may run past audience / rate by a slot for each of those, never twice as long.
    assert min(provider.called_at[d] for d in first) >= first_slot
    assert max(provider.called_at[d] for d in first) < first_slot + 2 * drain
    for customer in sorted(texted):
        handle = harness.handle(f"flash_sale/{customer}")
        state = await handle.query(STATE_QUERY, result_type=RunStatus)
        assert state.path[-1].action == "deferred"
        assert "frequency cap 1 per 1d reached" in state.path[-1].detail

    await harness.sleep(timedelta(days=1))
    everyone = sent_by(provider)
    assert Counter(everyone.values()) == Counter(customers)
    later = {d: c for d, c in everyone.items() if d not in first}
    assert set(later.values()) == texted
    check_paced(harness, provider, later, PACE)
    cap_opens = now - timedelta(hours=1) + timedelta(days=1)
    assert min(provider.called_at[d] for d in later) >= cap_opens
    assert max(provider.called_at[d] for d in later) < cap_opens + timedelta(minutes=1)


def texted_before(customer_id: str, at: datetime) -> Delivery:
    return Delivery(
        idempotency_key=f"earlier/{customer_id}",
        workflow_id=f"earlier/{customer_id}",
        journey_id="earlier",
        version="v1",
        step_id="text",
        customer_id=customer_id,
        template="hello",
        channel="sms",
        status="sent",
        decided_at=at,
        attempts=[],
    )


def sent_by(provider: PacedTwilio) -> dict[int, str]:
    """The customer of each delivery the provider took, by delivery id."""
    with provider.lock:
        return {m.delivery_id: m.customer_id for m in provider.sent}


def check_paced(
    harness: Harness, provider: PacedTwilio, sent: dict[int, str], per_second: float
) -> None:
    """No two of these deliveries had slots closer than 1 / `per_second`, and each call
    came at its slot or at most `GRACE` after it. So any second saw at most the calls of
    the slots in that second and in the grace before it: `per_second` for 2 s, and one.

    Calls trail their slots when the worker is behind (on this test server, the runs
    woken first after a leap of its clock), then catch up: the pace holds on average,
    not to the call, which is what the grace trades for not losing a slot to latency."""
    slots = {d.id: d.rate_slot_at for d in harness.deliveries() if d.id in sent}
    for delivery_id in sent:
        slot = slots[delivery_id]
        assert slot is not None
        assert slot <= provider.called_at[delivery_id] <= slot + GRACE
    ordered = sorted(slot for slot in slots.values() if slot is not None)
    assert min(b - a for a, b in itertools.pairwise(ordered)) >= timedelta(seconds=1 / per_second)
    calls = sorted(provider.called_at[d] for d in sent)
    second = timedelta(seconds=1)
    busiest = max(sum(1 for t in calls if at <= t < at + second) for at in calls)
    assert busiest <= per_second * (second + GRACE) / second + 1


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
                "email_from": "Shop <hello@shop.example>",
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
        # Keyed with the installation's key (the harness worker's JOURNEYMAN_SECRET_KEY).
        ("email", address_hash("email", "typo@example", HARNESS_KEY), "invalid")
    ]
    sids = [d.provider_message_id for d in harness.deliveries()]
    assert all(sid and sid.startswith("SM") for sid in sids)


# -- quiet hours -------------------------------------------------------------------------


@pytest.mark.clock_sensitive
async def test_quiet_hours_hold_a_push_until_the_window_ends(harness):
    """A push due at 22:00 on the customer's clock, inside quiet hours 21:00-08:00, is
    deferred and goes out at 08:00 the next morning, their time. The journey first waits
    for 22:00, so the push falls in the window whatever time the test server starts at."""
    await harness.journey(
        """
        id: quiet_push
        name: Quiet push
        entry: {event: signed_up}
        settings: {quiet_hours: "21:00-08:00"}
        steps:
          - id: wait_until_night
            wait: {until: "22:00"}
          - id: nudge
            send: {template: hello, channels: [push]}
        """
    )
    harness.customer("c1", push_tokens=["device-token-1"], timezone="Asia/Tokyo")
    await harness.event("signed_up")
    result = await harness.result("quiet_push/c1")
    tokyo = ZoneInfo("Asia/Tokyo")
    nudge = [p for p in result.path if p.step == "nudge"]
    assert [p.action for p in nudge] == ["deferred", "sent"]
    deferred, sent = nudge
    assert deferred.at.astimezone(tokyo).strftime("%H:%M") == "22:00"
    reason, until = deferred.detail.split("; until ")
    assert reason == "quiet hours 21:00-08:00 for push"
    assert datetime.fromisoformat(until).astimezone(tokyo).strftime("%H:%M") == "08:00"
    assert sent.channel == "push"
    sent_local, deferred_local = sent.at.astimezone(tokyo), deferred.at.astimezone(tokyo)
    assert sent_local.strftime("%H:%M") == "08:00"
    assert sent_local.date() == deferred_local.date() + timedelta(days=1)
    [message] = harness.outbox("c1")
    assert (message.channel, message.to) == ("push", "device-token-1")
