"""DSL v2, the events part: `wait_for` since entry, lists of events and `on_event`
maps, `trait_changed`, `goal.within`, `journey_cap`, and what simulate shows of them.
Each runs the real workflow on the time-skipping server through `simulate`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from journeyman.insight.scenario import load_events, parse_offset
from journeyman.insight.simulate import simulate
from journeyman.insight.timeline import Simulation, format_offset
from journeyman.settings import Settings
from tests.insight.test_simulate import run, settings, timeline, write_events, write_journey

__all__ = ["settings"]

HOUR = 3600
DAY = 24 * HOUR


def minutes(seconds: int) -> int:
    """Whole minutes: a send takes a little real time on the simulation's clock."""
    return round(seconds / 60)


REVIEW = """
id: review
name: Review request
entry: {event: order_delivered}
steps:
  - id: settle_in
    wait: 3d
  - id: reviewed
    wait_for:
      event: review_submitted
      since: {since}
      timeout: 2d
      on_event: thank
  - id: ask
    send: {template: reminder, channels: [email]}
    goto: done
  - id: thank
    send: {template: reminder, channels: [email]}
  - id: done
    end: true
"""


async def test_since_entry_sees_a_review_written_during_the_wait(time_env, settings, tmp_path):
    """The review written on day 1 is found when the 3-day wait ends: thanked at once."""
    journey = write_journey(tmp_path, REVIEW.replace("{since}", "entry"))
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "order_delivered"},
            {"at": "1d", "event": "review_submitted", "properties": {"stars": 5}},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on order_delivered"),
        (DAY, "settle_in", "heard review_submitted: used at +3d 00h by reviewed (since entry)"),
        (3 * DAY, "settle_in", "waited 3d"),
        (3 * DAY, "reviewed", "review_submitted received 2d ago (since entry)"),
        (3 * DAY, "thank", "sent on email with template reminder"),
        (3 * DAY, "done", "ended"),
    ]
    assert sim.unheard == []


async def test_since_step_keeps_the_v1_meaning(time_env, settings, tmp_path):
    """Without `since` (and with `since: step`) only events after the step started count."""
    for since in ("step", None):
        text = REVIEW.replace("{since}", since or "step")
        if since is None:
            text = text.replace("      since: step\n", "")
        journey = write_journey(tmp_path, text)
        sim = await run(
            time_env,
            settings,
            journey,
            [
                {"at": "0s", "event": "order_delivered"},
                {"at": "1d", "event": "review_submitted"},
            ],
        )
        assert timeline(sim) == [
            (0, "entry", "entered on order_delivered"),
            (DAY, "settle_in", "heard review_submitted: not awaited"),
            (3 * DAY, "settle_in", "waited 3d"),
            (5 * DAY, "reviewed", "timed out: no review_submitted within 2d"),
            (5 * DAY, "ask", "sent on email with template reminder"),
            (5 * DAY, "done", "ended"),
        ]


async def test_since_entry_waits_on_when_nothing_came_yet(time_env, settings, tmp_path):
    """Nothing received before the step: it waits as in v1, and a later review counts."""
    journey = write_journey(tmp_path, REVIEW.replace("{since}", "entry"))
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "order_delivered"},
            {"at": "4d", "event": "review_submitted"},
        ],
    )
    assert timeline(sim)[2:] == [
        (4 * DAY, "reviewed", "review_submitted arrived"),
        (4 * DAY, "thank", "sent on email with template reminder"),
        (4 * DAY, "done", "ended"),
    ]


PICKUP = """
id: pickup
name: Pickup
entry: {event: order_ready}
steps:
  - id: collected
    wait_for:
      event: [picked_up, order_cancelled]
      when: "event.properties.order_id == trigger.properties.order_id"
      since: entry
      timeout: 3d
      on_event: {picked_up: thanks, order_cancelled: done}
      on_timeout: nudge
  - id: nudge
    send: {template: reminder, channels: [email]}
    goto: done
  - id: thanks
    send: {template: reminder, channels: [email]}
  - id: done
    end: true
"""


async def test_a_list_of_events_goes_where_the_on_event_map_says(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, PICKUP)
    cases = {
        "picked_up": ["thanks", "done"],
        "order_cancelled": ["done"],
    }
    for name, after in cases.items():
        sim = await run(
            time_env,
            settings,
            journey,
            [
                {"at": "0s", "event": "order_ready", "properties": {"order_id": "o1"}},
                {"at": "2h", "event": name, "properties": {"order_id": "o2"}},
                {"at": "5h", "event": name, "properties": {"order_id": "o1"}},
            ],
        )
        assert [(at, step) for at, step, _ in timeline(sim)] == [
            (0, "entry"),
            (2 * HOUR, "collected"),
            (5 * HOUR, "collected"),
            *[(5 * HOUR, step) for step in after],
        ]
        # Another order's event: heard, its condition false.
        assert (
            timeline(sim)[1][2] == f"heard {name}: not used: the condition of collected was false"
        )
        assert timeline(sim)[2][2] == f"{name} arrived"


# -- shipped journeys -------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


async def run_shipped(
    env: WorkflowEnvironment,
    settings: Settings,
    tmp_path: Path,
    journey: str,
    events: list[dict[str, Any]],
    profile: dict[str, Any] | None = None,
) -> Simulation:
    """A shipped journey with the shipped templates; the events file in `tmp_path`."""
    return await simulate(
        REPO / "journeys" / f"{journey}.yaml",
        profile or {"id": f"c-{journey}", "email": "ana@example.com", "first_name": "Ana"},
        load_events(write_events(tmp_path, *events)),
        settings=settings.model_copy(update={"templates_dir": REPO / "templates"}),
        env=env,
    )


DELIVERED = {
    "at": "0s",
    "event": "order_delivered",
    "properties": {
        "order_id": "LK-31877",
        "product_name": "Speckled stoneware vase",
        "review_url": "https://shop.example.com/reviews/new?order=LK-31877",
    },
}


async def test_shipped_review_request_thanks_a_review_written_during_the_wait(
    time_env, settings, tmp_path
):
    sim = await run_shipped(
        time_env,
        settings,
        tmp_path,
        "review_request",
        [
            DELIVERED,
            {"at": "1d", "event": "review_submitted", "properties": {"order_id": "LK-31877"}},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on order_delivered"),
        (
            DAY,
            "settle_in",
            "heard review_submitted: used at +3d 00h by reviewed_already (since entry)",
        ),
        (3 * DAY, "settle_in", "waited 3d"),
        (3 * DAY, "reviewed_already", "review_submitted received 2d ago (since entry)"),
        (3 * DAY, "thank_you", "sent on email with template review_thanks"),
        (3 * DAY, "done", "ended"),
    ]
    assert sim.entries[4].summary == "Thank you for your review, Ana"


async def test_shipped_review_request_asks_once_then_thanks(time_env, settings, tmp_path):
    """A review of another order does not count; this order's, after the ask, does."""
    sim = await run_shipped(
        time_env,
        settings,
        tmp_path,
        "review_request",
        [
            DELIVERED,
            {"at": "2d", "event": "review_submitted", "properties": {"order_id": "LK-1"}},
            {"at": "6d", "event": "review_submitted", "properties": {"order_id": "LK-31877"}},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on order_delivered"),
        (2 * DAY, "settle_in", "heard review_submitted: not awaited"),
        (3 * DAY, "settle_in", "waited 3d"),
        (4 * DAY, "reviewed_already", "timed out: no review_submitted within 1d"),
        (4 * DAY, "ask", "sent on email with template review_request"),
        (6 * DAY, "wait_for_review", "review_submitted arrived"),
        (6 * DAY, "thank_you", "sent on email with template review_thanks"),
        (6 * DAY, "done", "ended"),
    ]
    assert sim.entries[4].summary == "How is your Speckled stoneware vase?"


# -- trait_changed ----------------------------------------------------------------------


async def test_update_profile_gives_the_customer_a_trait_changed_event(
    time_env, settings, tmp_path
):
    journey = write_journey(
        tmp_path,
        """
        id: upgrade
        name: Upgrade
        entry: {event: signed_up}
        steps:
          - id: promote
            update_profile: {set: {tier: gold, region: "{{ profile.region }}"}}
          - id: promoted
            wait_for:
              event: trait_changed
              when: "event.properties.trait == 'tier'"
              since: entry
              timeout: 1d
          - id: done
            end: true
        """,
        templates={},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "signed_up"}, {"at": "2h", "event": "page_viewed"}],
        profile={"id": "c-upgrade", "tier": "silver", "region": "north"},
    )
    assert [(step, text) for _, step, text in timeline(sim)] == [
        ("entry", "entered on signed_up"),
        ("promote", "updated profile: tier, region"),
        ("promoted", "trait_changed received 0s ago (since entry)"),
        ("done", "ended"),
    ]
    assert sim.outcome == "ended"


async def test_shipped_gold_welcome_is_entered_by_an_identify(time_env, settings, tmp_path):
    """The loyalty system's identify makes the customer gold: welcomed at once; a week
    without an order brings the perks reminder."""
    sim = await run_shipped(
        time_env,
        settings,
        tmp_path,
        "gold_tier_welcome",
        [
            {"at": "0s", "type": "identify", "traits": {"tier": "gold", "points": 1200}},
            {"at": "1d", "type": "identify", "traits": {"tier": "gold"}},  # no change
        ],
        profile={"id": "c-gold", "email": "ana@example.com", "first_name": "Ana", "tier": "silver"},
    )
    assert timeline(sim) == [
        (0, "entry", "entered on trait_changed"),
        (0, "welcome", "sent on email with template gold_welcome"),
        (7 * DAY, "wait_a_week", "waited 1w"),
        (7 * DAY, "ordered_since", "branched default -> perks_reminder"),
        (7 * DAY, "perks_reminder", "sent on email with template gold_perks"),
        (7 * DAY, "done", "ended"),
    ]
    assert sim.entries[1].summary == "Welcome to Gold, Ana"


async def test_shipped_gold_welcome_ignores_other_traits_and_ends_on_a_downgrade(
    time_env, settings, tmp_path
):
    sim = await run_shipped(
        time_env,
        settings,
        tmp_path,
        "gold_tier_welcome",
        [
            {"at": "0s", "type": "identify", "traits": {"tier": "gold"}},
            {"at": "2d", "type": "identify", "traits": {"tier": "silver"}},
        ],
        profile={"id": "c-gold", "email": "ana@example.com", "tier": "silver"},
    )
    assert [(at, step, text) for at, step, text in timeline(sim)][1:] == [
        (0, "welcome", "sent on email with template gold_welcome"),
        (2 * DAY, "wait_a_week", "exited (exit on trait_changed)"),
    ]
    assert sim.outcome == "exited"


# -- goal.within ------------------------------------------------------------------------

WINDOW = """
id: window
name: Window
entry: {event: cart_abandoned}
goal:
  event: order_placed
  when: "event.properties.cart_id == trigger.properties.cart_id"
  within: {within}
steps:
  - id: remind
    send: {template: reminder, channels: [email]}
  - id: pause
    wait: 1d
  - id: done
    end: true
"""


async def test_a_goal_within_the_window_converts_an_ended_run(time_env, settings, tmp_path):
    journey = write_journey(tmp_path, WINDOW.replace("{within}", "7d"))
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "0s", "event": "cart_abandoned", "properties": {"cart_id": "k1"}},
            {"at": "2d", "event": "order_placed", "properties": {"cart_id": "other"}},
            {"at": "3d", "event": "order_placed", "properties": {"cart_id": "k1"}},
            {"at": "4d", "event": "order_placed", "properties": {"cart_id": "k1"}},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on cart_abandoned"),
        (0, "remind", "sent on email with template reminder"),
        (DAY, "pause", "waited 1d"),
        (DAY, "done", "ended"),
        (
            3 * DAY,
            "goal",
            "converted (goal order_placed within 1w of entry, after the run ended)",
        ),
    ]
    # Another cart's order does not convert, and the run converts once.
    assert [name for _, name in sim.unheard] == ["order_placed", "order_placed"]


async def test_without_within_or_past_it_an_ended_run_does_not_convert(
    time_env, settings, tmp_path
):
    for text in (WINDOW.replace("  within: {within}\n", ""), WINDOW.replace("{within}", "2d")):
        journey = write_journey(tmp_path, text)
        sim = await run(
            time_env,
            settings,
            journey,
            [
                {"at": "0s", "event": "cart_abandoned", "properties": {"cart_id": "k1"}},
                {"at": "3d", "event": "order_placed", "properties": {"cart_id": "k1"}},
            ],
        )
        assert [step for _, step, _ in timeline(sim)] == ["entry", "remind", "pause", "done"]
        assert [name for _, name in sim.unheard] == ["order_placed"]


# -- settings.journey_cap ---------------------------------------------------------------

CAPPED = """
id: capped
name: Capped
entry: {event: browsed}
settings:
  {cap}
steps:
  - id: first
    send: {template: reminder, channels: [email]}
  - id: pause
    wait: 1h
  - id: second
    send: {template: reminder, channels: [email]}
  - id: done
    end: true
"""


async def test_the_skip_reason_names_the_cap_that_held_the_message(time_env, settings, tmp_path):
    reasons = {}
    for cap in ("journey_cap: 1 per 7d", "frequency_cap: 1 per 7d"):
        journey = write_journey(tmp_path, CAPPED.replace("{cap}", cap))
        sim = await run(time_env, settings, journey, [{"at": "0s", "event": "browsed"}])
        assert [(minutes(at), step) for at, step, _ in timeline(sim)] == [
            (0, "entry"),
            (0, "first"),
            (60, "pause"),
            (60, "second"),
            (60, "done"),
        ]
        assert sim.entries[3].action == "skipped"
        reasons[cap.split(":")[0]] = sim.entries[3].detail
    assert reasons == {
        "journey_cap": "journey cap 1 per 1w reached (messages from this journey); "
        "no room within a day, not sent",
        "frequency_cap": "frequency cap 1 per 1w reached (service-wide, messages from every "
        "journey); no room within a day, not sent",
    }


async def test_a_journey_cap_waits_for_room_within_a_day(time_env, settings, tmp_path):
    """1 per 2h: the second message, due after 1h, goes out when the first leaves the period."""
    journey = write_journey(tmp_path, CAPPED.replace("{cap}", "journey_cap: 1 per 2h"))
    sim = await run(time_env, settings, journey, [{"at": "0s", "event": "browsed"}])
    deferred = "deferred: journey cap 1 per 2h reached (messages from this journey); until "
    assert [(minutes(at), step, text.split(deferred)[0]) for at, step, text in timeline(sim)][
        3:
    ] == [
        (60, "second", ""),
        (120, "second", "sent on email with template reminder"),
        (120, "done", "ended"),
    ]


# -- simulate: heard events, history before the trigger, printed durations ---------------


async def test_an_event_no_step_awaits_is_shown_as_heard(time_env, settings, tmp_path):
    """With `since: step` the review during the wait is heard and not awaited; with
    `since: entry` it is heard and used later."""
    uses = {}
    for since in ("step", "entry"):
        journey = write_journey(tmp_path, REVIEW.replace("{since}", since))
        sim = await run(
            time_env,
            settings,
            journey,
            [
                {"at": "0s", "event": "order_delivered"},
                {"at": "1d", "event": "review_submitted"},
            ],
        )
        [heard] = [e for e in sim.entries if e.action == "heard"]
        assert (heard.at_seconds, heard.step) == (DAY, "settle_in")
        assert heard.as_json()["action"] == "heard"
        uses[since] = heard.describe()
    assert uses == {
        "step": "heard review_submitted: not awaited",
        "entry": "heard review_submitted: used at +3d 00h by reviewed (since entry)",
    }


async def test_history_before_the_trigger_is_stored_not_routed(time_env, settings, tmp_path):
    """`-5h` lines are history: `count()` sees them, no run hears them."""
    journey = write_journey(
        tmp_path,
        """
        id: browse
        name: Browse
        entry: {event: product_viewed}
        steps:
          - id: often
            branch:
              - when: "count('product_viewed', within=hours(24)) >= 3"
                goto: keen
              - goto: done
          - id: keen
            update_profile: {set: {keen: true}}
          - id: done
            end: true
        """,
        templates={},
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [
            {"at": "-5h", "event": "product_viewed"},
            {"at": "-1h 30m", "event": "product_viewed"},
            {"at": "0s", "event": "product_viewed"},
            {"at": "+1d 02h", "event": "product_viewed"},
        ],
    )
    assert [(at, step) for at, step, _ in timeline(sim)] == [
        (0, "entry"),
        (0, "often"),
        (0, "keen"),
        (0, "done"),
    ]
    assert sim.unheard == [(timedelta(days=1, hours=2), "product_viewed")]


def test_events_files_read_the_durations_the_timeline_prints() -> None:
    assert parse_offset("3d 5h") == timedelta(days=3, hours=5)
    assert parse_offset("+15m 00s") == timedelta(minutes=15)
    assert parse_offset("-5h", past=True) == timedelta(hours=-5)
    assert parse_offset("-1d 02h", past=True) == -timedelta(days=1, hours=2)
    assert parse_offset(format_offset(timedelta(days=1, hours=2))) == timedelta(days=1, hours=2)
    with pytest.raises(ValueError, match="parts such as 3d 5h"):
        parse_offset("3d five")


async def test_shipped_replenishment_starts_the_next_cycle_on_a_reorder(
    time_env, settings, tmp_path
):
    """The reorder on day 10 is not swallowed: the run waits 25 days from it, reminds,
    and the reorder after the reminder starts the next cycle again."""
    beans = {
        "sku": "sku_beans_1kg",
        "product_name": "House espresso beans, 1 kg",
        "reorder_url": "https://shop.example.com/p/sku_beans_1kg?reorder=1",
        "replenishable": True,
    }
    sim = await run_shipped(
        time_env,
        settings,
        tmp_path,
        "replenishment",
        [
            {"at": "0s", "event": "product_purchased", "properties": beans},
            {"at": "10d", "event": "product_purchased", "properties": beans},
            {"at": "40d", "event": "product_purchased", "properties": beans},
        ],
    )
    assert timeline(sim) == [
        (0, "entry", "entered on product_purchased"),
        (10 * DAY, "supply_lasts", "product_purchased arrived"),
        (35 * DAY, "supply_lasts", "timed out: no product_purchased within 25d"),
        (35 * DAY, "remind", "sent on email with template replenishment_reminder"),
        (40 * DAY, "reordered", "product_purchased arrived"),
        (65 * DAY, "supply_lasts", "timed out: no product_purchased within 25d"),
        (65 * DAY, "remind", "sent on email with template replenishment_reminder"),
        (79 * DAY, "reordered", "timed out: no product_purchased within 2w"),
        (79 * DAY, "done", "ended"),
    ]
    assert sim.entries[3].summary == "Running low on House espresso beans, 1 kg?"


async def test_shipped_pickup_hold_goes_where_each_event_leads(time_env, settings, tmp_path):
    order = {
        "order_id": "LK-40117",
        "store_name": "Larkspur Pearl District",
        "pickup_code": "5531",
        "pickup_deadline": "Friday, March 13",
    }
    profile = {"id": "c-pickup", "email": "ana@example.com", "phone": "+15035550142"}
    ends = {}
    for name in ("order_picked_up", "order_cancelled"):
        sim = await run_shipped(
            time_env,
            settings,
            tmp_path,
            "store_pickup_hold",
            [
                {"at": "0s", "event": "pickup_hold_ready", "properties": order},
                {"at": "3h", "event": name, "properties": {"order_id": "LK-40117"}},
            ],
            profile=profile,
        )
        assert timeline(sim)[:3] == [
            (0, "entry", "entered on pickup_hold_ready"),
            (0, "ready", "sent on sms with template order_ready"),
            (3 * HOUR, "collected_or_cancelled", f"{name} arrived"),
        ]
        ends[name] = [(step, text) for _, step, text in timeline(sim)[3:]]
    assert ends == {
        "order_picked_up": [
            ("thanks", "sent on email with template pickup_thanks"),
            ("done", "ended"),
        ],
        "order_cancelled": [("done", "ended")],
    }
