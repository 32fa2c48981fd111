"""The send activity on its own: channel choice, consent, caps and the delivery ledger.

These call `JourneyActivities.send` directly (it is a plain method), with providers
scripted to fail the ways real ones do; the workflow-level behaviour (deferral timers,
priority between runs) is in tests/workflows/test_channels.py.
"""

from __future__ import annotations

import dataclasses
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.journey import JourneyActivities
from journeyman.contracts import CustomerEvent, ExprContext, SendInput
from journeyman.events.routing import Catalog
from journeyman.messaging.providers import (
    OutgoingMessage,
    PermanentFailure,
    TransientFailure,
    UncertainDelivery,
)
from journeyman.messaging.ratelimit import GRACE, reserve
from journeyman.privacy.consent import set_consent, suppress
from journeyman.privacy.tokens import verify
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import (
    ConsentChange,
    Customer,
    Delivery,
    Event,
    OutboxMessage,
    RateLimit,
)
from journeyman.wiring import journey_activities

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
KEY = b"test-signing-key"

TEMPLATES = {
    "hello/email.html": (
        "{% block subject %}Hi {{ profile.first_name }}{% endblock %}"
        '<p>Hello</p><a href="{{ unsubscribe_url }}">Unsubscribe</a>'
    ),
    "hello/sms.txt": "Hi {{ profile.first_name }}",
    "hello/push.txt": "{% block title %}Hi{% endblock %}{% block body %}Hello{% endblock %}",
    "viewed/email.html": (
        "{% block subject %}Still thinking?{% endblock %}"
        "{% for e in recent('product_viewed', within=days(7), limit=2) %}"
        "<p>{{ e.properties.name }}</p>{% endfor %}"
    ),
}


@dataclass
class Scripted:
    """A provider that records what it is given and fails as scripted, per channel."""

    name: str = "scripted"
    transactional: bool = False
    failures: list[Exception] = field(default_factory=list)
    sent: list[OutgoingMessage] = field(default_factory=list)
    calls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: OutgoingMessage, session: Any) -> str:
        with self.lock:
            self.calls += 1
            if self.failures:
                raise self.failures.pop(0)
            self.sent.append(message)
            return f"{self.name}-{len(self.sent)}"


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return World(db, tmp_path)


class World:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        (root / "journeys").mkdir()
        for name, text in TEMPLATES.items():
            path = root / "templates" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (root / "journeys" / "promo.yaml").write_text(
            textwrap.dedent(
                """
                id: promo
                name: Promo
                topic: offers
                entry: {event: signed_up}
                steps:
                  - id: hello
                    send: {template: hello, channels: [push, email, sms]}
                  - id: viewed
                    send: {template: viewed, channels: [email]}
                """
            )
        )
        catalog = Catalog.from_dirs(root / "journeys", root / "templates")
        catalog.register(db)
        self.version = catalog.plans[0].version
        self.providers = {c: Scripted(name=c) for c in ("email", "sms", "push")}
        self.settings = Settings(database_url=db.url, public_base_url="https://shop.example")
        self.activities: JourneyActivities = journey_activities(
            db, self.settings, dict(self.providers), signing_key=KEY
        )

    def customer(self, customer_id: str = "c1", **columns: Any) -> str:
        with self.db.session() as session:
            columns.setdefault("push_tokens", [])
            session.add(Customer(id=customer_id, traits={"first_name": "Ana"}, **columns))
        return customer_id

    def send(
        self,
        key: str = "promo/c1/run/hello/1",
        customer_id: str = "c1",
        channels: tuple[str, ...] = ("push", "email", "sms"),
        now: datetime = NOW,
        template: str = "hello",
        **extra: Any,
    ) -> Any:
        event = CustomerEvent(message_id="m1", name="signed_up", timestamp=now)
        return self.activities.send(
            SendInput(
                idempotency_key=key,
                workflow_id="promo/" + customer_id,
                journey_id="promo",
                version=self.version,
                step_id=key.split("/")[-2] if key.count("/") >= 2 else "hello",
                customer_id=customer_id,
                template=template,
                channels=list(channels),
                topic="offers",
                context=ExprContext(event=event, trigger=event, journey={}, now=now),
                **extra,
            )
        )

    def delivery(self, key: str = "promo/c1/run/hello/1") -> Delivery:
        with self.db.session() as session:
            row = session.scalar(select(Delivery).where(Delivery.idempotency_key == key))
            assert row is not None
            return row


# -- choice -----------------------------------------------------------------------------


def test_first_reachable_channel_wins_and_the_others_are_noted(world):
    world.customer(email="ana@example.com", phone="+15550001")
    outcome = world.send()
    assert (outcome.status, outcome.channel) == ("sent", "email")
    assert [m.to for m in world.providers["email"].sent] == ["ana@example.com"]
    assert world.providers["push"].calls == 0


def test_an_unsubscribed_channel_is_passed_over(world):
    world.customer(email="ana@example.com", phone="+15550001")
    with world.db.session() as session:
        set_consent(session, "c1", "channel", "email", False, "test", NOW)
    outcome = world.send()
    assert (outcome.status, outcome.channel) == ("sent", "sms")


def test_unsubscribed_from_the_topic_means_no_message_at_all(world):
    world.customer(email="ana@example.com", phone="+15550001", push_tokens=["tok"])
    with world.db.session() as session:
        set_consent(session, "c1", "topic", "offers", False, "test", NOW)
    outcome = world.send()
    assert outcome.status == "skipped"
    assert "push: unsubscribed from topic offers" in outcome.reason
    assert "email: unsubscribed from topic offers" in outcome.reason
    assert all(p.calls == 0 for p in world.providers.values())


def test_a_suppressed_address_is_passed_over(world):
    world.customer(email="Ana@Example.com", phone="+15550001")
    with world.db.session() as session:
        suppress(session, "email", "ana@example.com", "bounce", "test", NOW)
    outcome = world.send()
    assert outcome.channel == "sms"


def test_no_suitable_channel_is_skipped_with_every_reason(world):
    world.customer()
    outcome = world.send()
    assert outcome.status == "skipped"
    assert outcome.reason == (
        "push: not reachable (no push token); email: not reachable (no email address); "
        "sms: not reachable (no phone number)"
    )
    assert world.delivery().status == "skipped"


def test_consent_is_checked_when_the_message_goes_out_not_before(world):
    """A send deferred by quiet hours sees the unsubscribe that happened meanwhile."""
    world.customer(phone="+15550001", timezone="UTC")
    night = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
    first = world.send(channels=("sms",), now=night, quiet_hours="21:00-08:00")
    assert first.status == "deferred"
    with world.db.session() as session:
        set_consent(session, "c1", "channel", "sms", False, "test", night)
    later = world.send(channels=("sms",), now=first.until, quiet_hours="21:00-08:00")
    assert later.status == "skipped"
    assert "sms: unsubscribed from sms" in later.reason


# -- permanent and transient failures ---------------------------------------------------


def test_invalid_address_suppresses_it_and_moves_to_the_next_channel(world):
    world.customer(email="bad@example", phone="+15550001")
    world.providers["email"].failures = [PermanentFailure("invalid email", "invalid_address")]
    outcome = world.send()
    assert (outcome.status, outcome.channel) == ("sent", "sms")
    row = world.delivery()
    assert row.attempts[0]["error"] == "invalid email"
    assert row.attempts[0]["kind"] == "invalid_address"
    assert "bad@example" not in str(row.attempts)  # no personal data in the ledger
    # The next send does not try the bad address again.
    again = world.send(key="promo/c1/run/hello/2")
    assert again.channel == "sms"
    assert world.providers["email"].calls == 1


def test_unregistered_push_token_is_removed_from_the_profile(world):
    world.customer(email="ana@example.com", push_tokens=["dead", "live"])
    world.providers["push"].failures = [PermanentFailure("gone", "unregistered_token")]
    outcome = world.send()
    assert (outcome.status, outcome.channel) == ("sent", "push")
    assert [m.to for m in world.providers["push"].sent] == ["live"]
    with world.db.session() as session:
        assert session.get(Customer, "c1").push_tokens == ["live"]


def test_a_carrier_stop_revokes_sms_consent_with_an_audit_entry(world):
    world.customer(phone="+15550001", email="ana@example.com")
    world.providers["sms"].failures = [PermanentFailure("21610 unsubscribed", "unsubscribed")]
    outcome = world.send(channels=("sms", "email"))
    assert outcome.channel == "email"
    with world.db.session() as session:
        audit = session.scalars(select(ConsentChange)).all()
    assert [(a.scope, a.name, a.subscribed, a.source) for a in audit] == [
        ("channel", "sms", False, "provider:sms")
    ]


def test_every_channel_rejected_fails_with_each_reason(world):
    world.customer(email="ana@example.com", phone="+15550001")
    world.providers["email"].failures = [PermanentFailure("content rejected")]
    world.providers["sms"].failures = [PermanentFailure("blocked")]
    outcome = world.send(channels=("email", "sms"))
    assert outcome.status == "failed"
    assert outcome.reason == "email: content rejected; sms: blocked"


def test_a_transient_failure_raises_for_retry_and_the_retry_sends_once(world):
    world.customer(email="ana@example.com")
    world.providers["email"].failures = [TransientFailure("429", retry_after=7)]
    with pytest.raises(ApplicationError) as raised:
        world.send()
    assert raised.value.next_retry_delay == timedelta(seconds=7)
    assert not raised.value.non_retryable
    assert world.delivery().status == "pending"
    assert world.send().status == "sent"
    assert world.send().status == "sent"  # a third attempt only reads the ledger
    assert len(world.providers["email"].sent) == 1


def test_an_uncertain_delivery_is_recorded_unknown_and_never_repeated(world):
    world.customer(email="ana@example.com", phone="+15550001")
    world.providers["email"].failures = [UncertainDelivery("read timeout")]
    outcome = world.send()
    assert (outcome.status, outcome.channel) == ("unknown", "email")
    assert world.send().status == "unknown"
    assert world.providers["email"].calls == 1
    assert world.providers["sms"].calls == 0


def test_a_retry_that_finds_a_call_in_flight_does_not_send_again(world):
    """The worker died between claiming the row and hearing back from the provider."""
    world.customer(email="ana@example.com")
    world.send(key="warm-up")  # registers nothing else; just the customer path
    with world.db.session() as session:
        session.add(
            Delivery(
                idempotency_key="promo/c1/run/hello/1",
                workflow_id="promo/c1",
                journey_id="promo",
                version=world.version,
                step_id="hello",
                customer_id="c1",
                template="hello",
                channel="email",
                status="sending",
                decided_at=NOW,
                attempt_token="dead-worker",
                attempts=[],
            )
        )
    outcome = world.send()
    assert outcome.status == "unknown"
    assert "worker stopped during the provider call" in outcome.reason
    assert len(world.providers["email"].sent) == 1  # only the warm-up


# -- the message --------------------------------------------------------------------------


def test_marketing_email_carries_a_signed_one_click_unsubscribe(world):
    world.customer(email="ana@example.com")
    world.send(channels=("email",))
    message = world.providers["email"].sent[0]
    url = message.headers["List-Unsubscribe"].strip("<>")
    assert url.startswith("https://shop.example/unsubscribe/")
    assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    token = verify(KEY, url.rsplit("/", 1)[1])
    assert (token.customer_id, token.topic, token.channel) == ("c1", "offers", "email")
    assert url in (message.html or "")
    assert message.subject == "Hi Ana"


def test_templates_can_list_recent_events(world):
    world.customer(email="ana@example.com")
    with world.db.session() as session:
        for i, name in enumerate(["Old boots", "Linen shirt", "Tote", "Hat"]):
            days_ago = 10 if i == 0 else 3 - i
            session.add(
                Event(
                    message_id=f"v{i}",
                    type="track",
                    customer_id="c1",
                    name="product_viewed",
                    properties={"name": name},
                    timestamp=NOW - timedelta(days=days_ago, minutes=1),
                )
            )
    world.send(key="promo/c1/run/viewed/1", channels=("email",), template="viewed")
    html = world.providers["email"].sent[0].html or ""
    assert "Hat" in html and "Tote" in html
    assert "Linen shirt" not in html  # limit=2, newest first
    assert "Old boots" not in html  # older than 7 days


# -- frequency caps -----------------------------------------------------------------------


def test_a_send_over_the_cap_is_deferred_until_the_oldest_leaves_the_period(world):
    world.customer(email="ana@example.com")
    cap = {"count": 2, "per": "1h"}
    for i in range(2):
        at = NOW + timedelta(minutes=10 * i)
        assert world.send(key=f"k{i}", frequency_cap=cap, now=at).status == "sent"
    third = world.send(key="k2", frequency_cap=cap, now=NOW + timedelta(minutes=30))
    assert third.status == "deferred"
    assert third.until == NOW + timedelta(hours=1)
    assert (
        third.reason == "frequency cap 2 per 1h reached (service-wide, messages from every journey)"
    )
    assert world.send(key="k2", frequency_cap=cap, now=third.until).status == "sent"


def test_skipped_sends_do_not_count_toward_the_cap(world):
    world.customer(email="ana@example.com")
    world.customer("c2")  # unreachable: its sends are skipped
    cap = {"count": 1, "per": "1d"}
    assert world.send(key="x", customer_id="c2", frequency_cap=cap).status == "skipped"
    assert world.send(key="y", frequency_cap=cap).status == "sent"


def test_a_cap_that_cannot_open_within_a_day_skips_with_the_reason(world):
    world.customer(email="ana@example.com")
    cap = {"count": 1, "per": "3d"}
    assert world.send(key="a", frequency_cap=cap).status == "sent"
    second = world.send(key="b", frequency_cap=cap, first_attempt_at=NOW)
    assert second.status == "skipped"
    assert "no room within a day" in second.reason


def test_the_service_default_cap_applies_when_the_journey_sets_none(world, db):
    world.customer(email="ana@example.com")
    capped = world.settings.model_copy(update={"default_frequency_cap": "1 per 1d"})
    world.activities = journey_activities(db, capped, dict(world.providers), signing_key=KEY)
    assert world.send(key="a").status == "sent"
    assert world.send(key="b").status == "deferred"


def test_a_higher_priority_send_waiting_for_room_goes_first(world):
    world.customer(email="ana@example.com")
    cap = {"count": 1, "per": "1h"}
    assert world.send(key="first", frequency_cap=cap).status == "sent"
    low = world.send(key="low", frequency_cap=cap, priority=0, now=NOW + timedelta(minutes=1))
    high = world.send(key="high", frequency_cap=cap, priority=5, now=NOW + timedelta(minutes=2))
    assert low.until == high.until == NOW + timedelta(hours=1)
    # Both wake at once; the low one asks first and yields to the high one.
    yielded = world.send(key="low", frequency_cap=cap, priority=0, now=low.until)
    assert yielded.status == "deferred"
    assert "higher priority" in yielded.reason
    assert world.send(key="high", frequency_cap=cap, priority=5, now=high.until).status == "sent"


@pytest.mark.parametrize("workers", [16])
def test_the_cap_holds_with_many_concurrent_sends(world, workers):
    world.customer(email="ana@example.com")
    cap = {"count": 3, "per": "1d"}
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(
            pool.map(lambda i: world.send(key=f"k{i}", frequency_cap=cap), range(workers))
        )
    statuses = sorted(o.status for o in outcomes)
    assert statuses.count("sent") == 3
    assert statuses.count("deferred") == workers - 3
    assert len(world.providers["email"].sent) == 3


def test_a_journey_with_no_cap_is_never_held_by_the_default(world, db):
    world.customer(email="ana@example.com")
    capped = world.settings.model_copy(update={"default_frequency_cap": "1 per 1d"})
    world.activities = journey_activities(db, capped, dict(world.providers), signing_key=KEY)
    assert world.send(key="a").status == "sent"
    assert world.send(key="b", frequency_cap="none").status == "sent"
    assert world.send(key="c").status == "deferred"


# -- provider pace ------------------------------------------------------------------------

TENTH = timedelta(seconds=0.1)


def pace(world: World, **limits: str) -> None:
    """Name the scripted providers as the real ones and give them these limits
    (`twilio="10/s"`), as `TWILIO_RATE_LIMIT` and its kin do."""
    world.providers = {
        "email": Scripted(name="sendgrid"),
        "sms": Scripted(name="twilio"),
        "push": Scripted(name="fcm"),
    }
    settings = world.settings.model_copy(
        update={f"{provider}_rate_limit": limit for provider, limit in limits.items()}
    )
    world.activities = journey_activities(
        world.db, settings, dict(world.providers), signing_key=KEY
    )


def next_slot(world: World, provider: str = "twilio") -> datetime | None:
    with world.db.session() as session:
        row = session.get(RateLimit, provider)
        return row.next_slot_at if row is not None else None


def test_a_send_ahead_of_its_slot_waits_pending_with_its_slot_and_its_cap_slot(world):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    cap = {"count": 2, "per": "1d"}
    first = world.send(key="k0", channels=("sms",), frequency_cap=cap)
    assert (first.status, first.paced) == ("sent", False)
    second = world.send(key="k1", channels=("sms",), frequency_cap=cap)
    assert (second.status, second.until, second.paced) == ("deferred", NOW + TENTH, True)
    assert second.reason == "twilio pace 10/s"
    row = world.delivery("k1")
    assert (row.status, row.rate_slot_at, row.provider) == ("pending", NOW + TENTH, "twilio")
    assert row.decided_at == NOW
    # While it waits for its slot it counts toward the cap: a third has no room today.
    third = world.send(key="k2", channels=("sms",), frequency_cap=cap)
    assert (third.status, third.paced) == ("deferred", False)
    assert (
        third.reason == "frequency cap 2 per 1d reached (service-wide, messages from every journey)"
    )
    assert [m.idempotency_key for m in world.providers["sms"].sent] == ["k0"]


@pytest.mark.parametrize("late", [timedelta(0), timedelta(milliseconds=400), GRACE])
def test_a_send_back_on_its_slot_goes_without_a_new_reservation(world, late):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.send(key="k0", channels=("sms",))
    deferred = world.send(key="k1", channels=("sms",))
    outcome = world.send(key="k1", channels=("sms",), now=deferred.until + late)
    assert outcome.status == "sent"
    assert world.delivery("k1").rate_slot_at == NOW + TENTH
    assert next_slot(world) == NOW + 2 * TENTH  # nothing reserved again
    assert [m.idempotency_key for m in world.providers["sms"].sent] == ["k0", "k1"]


def test_a_send_woken_before_its_slot_waits_for_the_same_slot(world):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.send(key="k0", channels=("sms",))
    world.send(key="k1", channels=("sms",))
    early = world.send(key="k1", channels=("sms",), now=NOW + timedelta(milliseconds=50))
    assert (early.status, early.until, early.paced) == ("deferred", NOW + TENTH, True)
    assert next_slot(world) == NOW + 2 * TENTH


def test_a_send_back_later_than_the_grace_queues_again(world):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.send(key="k0", channels=("sms",))
    deferred = world.send(key="k1", channels=("sms",))
    late = deferred.until + GRACE + timedelta(milliseconds=1)
    with world.db.session() as session:  # meanwhile, others took the next 5 seconds
        for _ in range(50):
            reserve(session, "twilio", 10, late)
    again = world.send(key="k1", channels=("sms",), now=late)
    assert (again.status, again.until, again.paced) == ("deferred", late + 50 * TENTH, True)
    assert world.delivery("k1").rate_slot_at == again.until
    assert world.send(key="k1", channels=("sms",), now=again.until).status == "sent"
    assert len(world.providers["sms"].sent) == 2


def test_a_send_is_judged_by_when_its_attempt_started(world):
    """The run asked on time, but its activity waited in the task queue past the grace:
    it is late, and takes a new slot (the schedule is idle by then: at once)."""
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.send(key="k0", channels=("sms",))
    deferred = world.send(key="k1", channels=("sms",))
    started = deferred.until + GRACE + timedelta(seconds=1)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, started_time=started)
    outcome = env.run(world.send, key="k1", channels=("sms",), now=deferred.until)
    assert outcome.status == "sent"
    assert world.delivery("k1").rate_slot_at == started
    assert next_slot(world) == started + TENTH


def test_a_stale_slot_on_an_idle_schedule_sends_at_once(world):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.send(key="k0", channels=("sms",))
    world.send(key="k1", channels=("sms",))
    late = NOW + timedelta(minutes=5)  # the journey was paused, say
    assert world.send(key="k1", channels=("sms",), now=late).status == "sent"
    assert world.delivery("k1").rate_slot_at == late
    assert next_slot(world) == late + TENTH


def test_a_retry_after_a_rate_limited_call_takes_a_new_slot(world):
    world.customer(phone="+15550001")
    pace(world, twilio="10/s")
    world.providers["sms"].failures = [TransientFailure("429")]
    with pytest.raises(ApplicationError):
        world.send(channels=("sms",))
    row = world.delivery()
    assert (row.status, row.rate_slot_at) == ("pending", None)
    retry = world.send(channels=("sms",))  # an activity retry: the same input, same clock
    assert (retry.status, retry.until, retry.paced) == ("deferred", NOW + TENTH, True)
    assert world.send(channels=("sms",), now=retry.until).status == "sent"
    assert world.providers["sms"].calls == 2


def test_a_slot_counts_for_its_own_provider_only(world):
    """The channel changed while the send waited: the other provider's pace applies."""
    world.customer(phone="+15550001", email="ana@example.com")
    pace(world, twilio="10/s", sendgrid="1/s")
    world.send(key="k0", channels=("email",))
    world.send(key="k1", channels=("sms",))
    deferred = world.send(key="k2", channels=("sms", "email"))
    assert deferred.reason == "twilio pace 10/s"
    with world.db.session() as session:
        set_consent(session, "c1", "channel", "sms", False, "test", NOW)
    moved = world.send(key="k2", channels=("sms", "email"), now=deferred.until)
    assert (moved.status, moved.until) == ("deferred", NOW + timedelta(seconds=1))
    assert moved.reason == "sendgrid pace 1/s"
    sent = world.send(key="k2", channels=("sms", "email"), now=moved.until)
    assert (sent.status, sent.channel) == ("sent", "email")


def test_quiet_hours_hold_a_send_before_it_takes_a_slot(world):
    world.customer(phone="+15550001", timezone="UTC")
    pace(world, twilio="10/s")
    night = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)
    held = world.send(channels=("sms",), now=night, quiet_hours="21:00-08:00")
    assert (held.status, held.paced) == ("deferred", False)
    assert next_slot(world) is None


def test_the_outbox_is_never_paced(world):
    world.customer(phone="+15550001", email="ana@example.com", push_tokens=["tok"])
    limits = {f"{p}_rate_limit": "1/h" for p in ("sendgrid", "twilio", "fcm")}
    settings = world.settings.model_copy(update=limits)
    world.activities = journey_activities(world.db, settings, {}, signing_key=KEY)
    for channel in ("push", "email", "sms"):
        for i in range(3):
            assert world.send(key=f"{channel}{i}", channels=(channel,)).status == "sent"
    with world.db.session() as session:
        assert len(session.scalars(select(OutboxMessage)).all()) == 9
        assert session.scalars(select(RateLimit)).all() == []
