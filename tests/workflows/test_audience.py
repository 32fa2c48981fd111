"""Segment ticks on the time-skipping server: who enters, and that nobody enters twice.

Ticks here are started directly (`schedules.start_tick`), as `journeyman broadcast --now`
and the resume of a broadcast do; the Temporal Schedules that start them on time are
tested on the dev server (tests/audiences/test_schedules.py), since the time-skipping server has
no schedules.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from journeyman.audiences import schedules, segments
from journeyman.audiences.segments import segment_trigger
from journeyman.contracts import AudienceTickResult, RunStatus
from journeyman.dsl.plan import Plan
from journeyman.names import STATE_QUERY
from journeyman.operations import controls
from journeyman.storage.models import (
    AudienceTick,
    Consent,
    Customer,
    Event,
    JourneyRun,
    RateLimit,
)
from tests.harness import Harness
from tests.workflows.test_channels import PacedTwilio, check_paced, sent_by, texted_before

LAPSED = """
id: lapsed
name: Lapsed customers
topic: promotions
entry:
  segment: "last('order_placed') and last('order_placed').at < now - days(60)"
  every: 1d
  reentry: {reentry}
steps:
  - id: offer
    send: {{template: offer, channels: [email]}}
  - id: wait_a_while
    wait: {wait}
"""


async def lapsed_journey(harness: Harness, reentry: str = "never", wait: str = "30d") -> Plan:
    catalog = await harness.journey(LAPSED.format(reentry=reentry, wait=wait))
    return catalog.compiled["lapsed"].plan


def order(harness: Harness, customer_id: str, at: datetime) -> None:
    with harness.db.session() as session:
        n = session.scalar(select(func.count()).select_from(Event))
        session.add(
            Event(
                message_id=f"order-{n}",
                type="track",
                customer_id=customer_id,
                name="order_placed",
                properties={},
                timestamp=at,
            )
        )


async def customers(harness: Harness) -> datetime:
    """Three lapsed customers (a, b, c), two who ordered lately, one who never did, one
    lapsed who opted out of promotions, and a visitor merged into `a`."""
    now = await harness.now()
    for customer_id in ("a", "b", "c", "recent1", "recent2", "never", "optout"):
        harness.customer(customer_id, email=f"{customer_id}@example.com")
    for customer_id in ("a", "b", "c", "optout"):
        order(harness, customer_id, now - timedelta(days=90))
    order(harness, "recent1", now - timedelta(days=5))
    order(harness, "recent2", now - timedelta(days=40))
    with harness.db.session() as session:
        session.add(Customer(id="anon-1", traits={}, push_tokens=[], merged_into="a"))
        session.add(
            Consent(
                customer_id="optout",
                scope="topic",
                name="promotions",
                subscribed=False,
                source="test",
            )
        )
    return now


async def tick(harness: Harness, plan: Plan, tick_id: str) -> AudienceTickResult:
    handle = await schedules.start_tick(
        harness.client, plan, tick_id=tick_id, task_queue=harness.task_queue, kind="schedule"
    )
    harness.started.add(tick_id)
    # Wait with virtual time locked: the tick's own handle unlocks time skipping while it
    # waits, and once the tick has ended the test server may leap to the next timer (the
    # entered runs' 30-day wait) before the lock is taken again, so that a later tick in
    # the same test would see the runs finished and the clock a month on.
    return await harness.client.get_workflow_handle(
        handle.id, result_type=AudienceTickResult
    ).result()


def runs(harness: Harness) -> list[tuple[str, str]]:
    with harness.db.session() as session:
        rows = session.scalars(select(JourneyRun).order_by(JourneyRun.customer_id))
        return [(row.customer_id, row.workflow_id) for row in rows]


async def test_a_tick_enters_exactly_the_customers_the_segment_matches(harness: Harness) -> None:
    plan = await lapsed_journey(harness)
    await customers(harness)

    result = await tick(harness, plan, "audience/lapsed-t1")

    assert runs(harness) == [("a", "lapsed/a"), ("b", "lapsed/b"), ("c", "lapsed/c")]
    assert (result.status, result.evaluated, result.matched, result.entered) == (
        "done",
        7,  # the merged visitor is not a customer of its own
        4,
        3,
    )
    assert result.skipped == {"unsubscribed from topic promotions": 1}
    await harness.sleep(timedelta(minutes=5))
    assert sorted(m.customer_id for m in harness.outbox()) == ["a", "b", "c"]
    state = await harness.handle("lapsed/a").query(STATE_QUERY, result_type=RunStatus)
    assert state.path[0].detail == "entered on segment_entry"


async def test_running_a_finished_tick_again_enters_nobody_twice(harness: Harness) -> None:
    plan = await lapsed_journey(harness)
    await customers(harness)
    first = await tick(harness, plan, "audience/lapsed-t1")

    again = await tick(harness, plan, "audience/lapsed-t1")

    assert again.entered == first.entered == 3
    assert len(runs(harness)) == 3


async def test_a_tick_retried_after_entering_part_of_a_page_enters_nobody_twice(
    harness: Harness,
) -> None:
    plan = await lapsed_journey(harness)
    await customers(harness)
    now = await harness.now()
    tick_id = "audience/lapsed-retried"
    # A first attempt started b's run, then its worker died before the page was recorded.
    assert harness.router is not None
    await harness.router.enter(plan, "b", "", segment_trigger(tick_id, "schedule", "b", now), now)

    result = await tick(harness, plan, tick_id)

    assert result.entered == 3  # b counts as entered by this tick, once
    assert runs(harness) == [("a", "lapsed/a"), ("b", "lapsed/b"), ("c", "lapsed/c")]
    await harness.sleep(timedelta(minutes=5))
    assert sorted(m.customer_id for m in harness.outbox()) == ["a", "b", "c"]


async def test_a_retried_tick_goes_on_after_the_last_page_it_recorded(harness: Harness) -> None:
    plan = await lapsed_journey(harness)
    await customers(harness)
    now = await harness.now()
    tick_id = "audience/lapsed-resumed"
    first = segments.begin_tick(harness.db, plan, tick_id, "schedule", now)
    with harness.db.session() as session:
        row = session.get(AudienceTick, first.tick_id)
        assert row is not None
        row.cursor, row.evaluated, row.matched, row.entered = "a", 1, 1, 1

    result = await tick(harness, plan, tick_id)

    # `a` was in the page recorded before: not evaluated, not entered again.
    assert runs(harness) == [("b", "lapsed/b"), ("c", "lapsed/c")]
    assert (result.evaluated, result.entered) == (7, 3)


async def test_a_later_tick_leaves_customers_already_in_the_journey(harness: Harness) -> None:
    plan = await lapsed_journey(harness, reentry="always")
    start = await customers(harness)
    await tick(harness, plan, "audience/lapsed-t1")
    await harness.sleep(timedelta(hours=1))
    assert await harness.now() - start < timedelta(days=1), "the runs' 30-day wait has passed"

    second = await tick(harness, plan, "audience/lapsed-t2")

    assert second.entered == 0
    assert second.skipped == {
        "already in the journey": 3,
        "unsubscribed from topic promotions": 1,
    }
    assert len(runs(harness)) == 3


@pytest.mark.parametrize(
    ("reentry", "entered_again"), [("never", 0), ("after 7d", 3), ("after 30d", 0)]
)
async def test_reentry_decides_who_enters_again_on_a_later_tick(
    harness: Harness, reentry: str, entered_again: int
) -> None:
    plan = await lapsed_journey(harness, reentry=reentry, wait="1h")
    await customers(harness)
    await tick(harness, plan, "audience/lapsed-t1")
    for workflow_id in ("lapsed/a", "lapsed/b", "lapsed/c"):
        await harness.result(workflow_id)
    await harness.sleep(timedelta(days=8))

    later = await tick(harness, plan, "audience/lapsed-t2")

    assert later.entered == entered_again


@pytest.mark.clock_sensitive
async def test_a_segment_that_fails_for_some_customers_enters_the_others(
    harness: Harness,
) -> None:
    catalog = await harness.journey(
        """
        id: birthday
        name: Birthday
        entry:
          segment: "anniversary(profile.birthday)"
          every: 1h
        steps:
          - {id: done, end: true}
        """
    )
    now = await harness.now()
    today = now.astimezone(UTC).date()
    # Born in a leap year, so that 29 February is a birthday too.
    harness.customer("born_today", birthday=f"1988-{today:%m-%d}")
    harness.customer("born_later", birthday="1988-01-01" if today.month != 1 else "1988-06-01")
    harness.customer("no_birthday")
    harness.customer("bad_birthday", birthday="soon")

    result = await tick(harness, catalog.compiled["birthday"].plan, "audience/birthday-t1")

    assert (result.matched, result.entered, result.errors) == (1, 1, 2)
    with harness.db.session() as session:
        row = session.get(AudienceTick, "audience/birthday-t1")
        assert row is not None
        assert sorted(row.error_samples) == [
            "bad_birthday: 'soon' is not a date: write dates as 'YYYY-MM-DD'",
            "no_birthday: profile.birthday is not defined",
        ]


async def test_a_paused_broadcast_enters_nobody_and_goes_on_when_resumed(
    harness: Harness,
) -> None:
    catalog = await harness.journey(
        """
        id: news
        name: December news
        topic: store_news
        entry:
          segment: "true"
          once_at: 2026-12-04T09:00:00Z
        steps:
          - id: news
            send: {template: news, channels: [email]}
        """
    )
    plan = catalog.compiled["news"].plan
    for customer_id in ("a", "b", "c"):
        harness.customer(customer_id, email=f"{customer_id}@example.com")
    controls.pause(harness.db, {"news"}, "news", "alice", "copy not approved")

    held = await tick(harness, plan, "audience/news-broadcast")

    assert (held.status, held.entered) == ("paused", 0)
    assert runs(harness) == []
    assert harness.router is not None
    report = await controls.resume(harness.router, "news", "alice", "approved")
    assert report.broadcast == "audience/news-broadcast"
    resumed = await harness.client.get_workflow_handle(
        "audience/news-broadcast", result_type=AudienceTickResult
    ).result()
    assert (resumed.status, resumed.entered) == ("done", 3)
    assert [customer for customer, _ in runs(harness)] == ["a", "b", "c"]


BROADCAST = """
id: flash_broadcast
name: Flash sale broadcast
entry:
  segment: "profile.phone is not none"
  once_at: 2026-12-04T09:00:00Z
settings: {frequency_cap: 1 per 1d}
steps:
  - id: text
    send: {template: hello, channels: [sms]}
"""


async def test_a_broadcast_to_a_large_audience_goes_at_twilios_pace_within_the_cap(
    harness: Harness,
) -> None:
    """80 customers with a phone number (and 10 without) are entered by one check; Twilio
    takes 10 texts a second. Each gets one text at its own slot of Twilio's pace; the 8
    texted an hour before are held by the frequency cap, not texted again."""
    provider = harness.providers["sms"] = PacedTwilio()
    harness.settings = harness.settings.model_copy(update={"twilio_rate_limit": "10/s"})
    catalog = await harness.journey(BROADCAST)
    customers = [harness.customer(f"c{i:03}", phone=f"+1555{i:07}") for i in range(80)]
    for i in range(10):
        harness.customer(f"no_phone{i}", email=f"n{i}@example.com")
    texted = set(customers[::10])
    now = await harness.now()
    with harness.db.session() as session:
        session.add_all(texted_before(customer, now - timedelta(hours=1)) for customer in texted)
        # Twilio is busy for 10 s: every run holds its slot before the first comes.
        session.add(RateLimit(provider="twilio", next_slot_at=now + timedelta(seconds=10)))

    result = await tick(harness, catalog.compiled["flash_broadcast"].plan, "audience/flash-b")
    await harness.sleep(timedelta(minutes=2))

    assert (result.evaluated, result.matched, result.entered) == (90, 80, 80)
    sent = sent_by(provider)
    assert Counter(sent.values()) == Counter(c for c in customers if c not in texted)
    check_paced(harness, provider, sent, per_second=10)
    for customer in sorted(texted):
        state = await harness.handle(f"flash_broadcast/{customer}").query(
            STATE_QUERY, result_type=RunStatus
        )
        assert "frequency cap 1 per 1d reached" in state.path[-1].detail
