"""The DSL v2 journeys we ship, simulated as a marketer would before going live: each
test plays the customer's events and asserts the timeline a marketer expects.

- support_nps: a score sent as text ("4") is a detractor: callback webhook (its secret a
  placeholder, never a value) and an apology; a promoter is thanked; a score that is no
  number goes to on_error, never to the passive default.
- browse_abandonment: the nudge depends on views of *this* product (a filtered count).
- order_shipped: texts at once when no push went out, waits for the push otherwise
  (a branch on `steps.push_tracking.channel`).
- price_drop: list filters over the event's products decide entry, the message and the
  reminder.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.testing import WorkflowEnvironment

from journeyman.insight.scenario import load_events
from journeyman.insight.simulate import simulate
from journeyman.insight.timeline import Simulation, format_offset
from journeyman.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
ANA = {
    "id": "cust_ana",
    "email": "ana@example.com",
    "phone": "+15035550142",
    "first_name": "Ana",
    "timezone": "UTC",
}


def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/unused.db",
        journeys_dir=ROOT / "journeys",
        templates_dir=ROOT / "templates",
        default_timezone="UTC",
    )


async def play(
    env: WorkflowEnvironment,
    tmp_path: Path,
    journey: str,
    events: list[dict[str, Any]],
    profile: dict[str, Any] | None = None,
) -> Simulation:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return await simulate(
        ROOT / "journeys" / f"{journey}.yaml",
        profile or ANA,
        load_events(path),
        settings=settings(tmp_path),
        env=env,
        start="10:00",
    )


def timeline(sim: Simulation) -> list[tuple[str, str, str]]:
    """(offset, step, what happened); offsets to the minute below, so that the real
    seconds a busy machine takes to run a step do not show."""
    minute = timedelta(minutes=1)
    return [(format_offset(e.offset // minute * minute), e.step, e.describe()) for e in sim.entries]


# -- support NPS ------------------------------------------------------------------------


def nps(score: Any) -> dict[str, Any]:
    properties = {"ticket_id": "T-4411", "comment": "took three days"}
    if score is not None:
        properties["score"] = score
    return {"at": "0s", "event": "nps_submitted", "properties": properties}


async def test_support_nps_calls_back_a_detractor_whose_score_came_as_text(time_env, tmp_path):
    sim = await play(time_env, tmp_path, "support_nps", [nps("4")])
    assert [(at, step) for at, step, _ in timeline(sim)] == [
        ("+0s", "entry"),
        ("+0s", "by_score"),
        ("+0s", "request_callback"),
        ("+0s", "tell_detractor"),
        ("+0s", "done"),
    ]
    assert (
        sim.entries[1].describe() == "branched when event.properties.score <= 6 -> request_callback"
    )
    call = sim.entries[2].request
    assert call is not None
    assert (call.method, call.url) == ("POST", "https://helpdesk.example.com/api/v2/callbacks")
    assert call.headers["authorization"] == "Bearer [secret HELPDESK_TOKEN]"
    assert json.loads(call.body) == {
        "customer_id": "cust_ana",
        "ticket_id": "T-4411",
        "score": 4,
        "comment": "took three days",
    }
    assert sim.entries[3].summary == "We're sorry: someone from our team will call you"
    assert sim.outcome == "ended"


async def test_support_nps_thanks_a_promoter(time_env, tmp_path):
    sim = await play(time_env, tmp_path, "support_nps", [nps(10)])
    steps = [(step, text) for _, step, text in timeline(sim)]
    assert ("thank_promoter", "sent on email with template nps_thanks") in steps
    assert "request_callback" not in [step for step, _ in steps]


async def test_support_nps_never_treats_an_unreadable_score_as_a_passive(time_env, tmp_path):
    sim = await play(time_env, tmp_path, "support_nps", [nps("ten")])
    steps = [(step, text.split(":")[0]) for _, step, text in timeline(sim)]
    assert steps == [
        ("entry", "entered on nps_submitted"),
        ("by_score", "error"),
        ("by_score", "on_error"),
        ("flag_for_review", "updated profile"),
        ("done", "ended"),
    ]


# -- browse abandonment -------------------------------------------------------------------


def viewed(at: str, sku: str) -> dict[str, Any]:
    return {
        "at": at,
        "event": "product_viewed",
        "properties": {
            "sku": sku,
            "product_name": "Speckled stoneware vase" if sku == "vase" else "Linen throw",
            "price": 34.5,
            "url": f"https://shop.example.com/p/{sku}",
        },
    }


async def test_browse_abandonment_nudges_after_a_second_look_at_the_same_product(
    time_env, tmp_path
):
    sim = await play(
        time_env, tmp_path, "browse_abandonment", [viewed("0s", "vase"), viewed("40m", "vase")]
    )
    trigger_run = [e for e in sim.entries if e.run.endswith("/vase")]
    assert [(e.step, e.describe()) for e in trigger_run][-3:] == [
        (
            "still_interested",
            "branched when count('product_viewed', within=hours(24), "
            "sku=trigger.properties.sku) >= 2 -> nudge",
        ),
        ("nudge", "sent on email with template browse_reminder"),
        ("done", "ended"),
    ]
    assert trigger_run[-2].summary == "Still thinking about the Speckled stoneware vase?"


async def test_browse_abandonment_does_not_count_views_of_other_products(time_env, tmp_path):
    sim = await play(
        time_env, tmp_path, "browse_abandonment", [viewed("0s", "vase"), viewed("40m", "throw")]
    )
    assert sim.messages == 0
    vase = [e for e in sim.entries if e.run.endswith("/vase")]
    assert vase[-2].describe() == "branched default -> done"


# -- order shipped: push, then text ------------------------------------------------------

SHIPPED = {
    "at": "0s",
    "event": "order_shipped",
    "properties": {
        "order_id": "LK-5521",
        "carrier": "UPS",
        "tracking_url": "https://track.example.com/LK-5521",
    },
}


async def test_order_shipped_texts_at_once_when_no_push_could_go_out(time_env, tmp_path):
    sim = await play(time_env, tmp_path, "order_shipped", [SHIPPED])
    assert timeline(sim) == [
        ("+0s", "entry", "entered on order_shipped"),
        ("+0s", "push_tracking", "skipped: push: not reachable (no push token)"),
        ("+0s", "how_was_it_sent", "branched default -> text_tracking"),
        ("+0s", "text_tracking", "sent on sms with template order_shipped"),
        ("+0s", "done", "ended"),
    ]


async def test_order_shipped_waits_for_the_push_to_be_opened_before_texting(time_env, tmp_path):
    profile = {**ANA, "push_tokens": ["fcm-token-1"]}
    opened = {"at": "30m", "event": "push_opened", "properties": {"order_id": "LK-5521"}}
    sim = await play(time_env, tmp_path, "order_shipped", [SHIPPED, opened], profile)
    assert timeline(sim) == [
        ("+0s", "entry", "entered on order_shipped"),
        ("+0s", "push_tracking", "sent on push with template order_shipped"),
        (
            "+0s",
            "how_was_it_sent",
            "branched when steps.push_tracking.channel == 'push' -> wait_for_open",
        ),
        ("+30m 00s", "wait_for_open", "push_opened arrived"),
        ("+30m 00s", "done", "ended"),
    ]


async def test_order_shipped_texts_when_the_push_is_not_opened(time_env, tmp_path):
    profile = {**ANA, "push_tokens": ["fcm-token-1"]}
    sim = await play(time_env, tmp_path, "order_shipped", [SHIPPED], profile)
    assert [(at, step) for at, step, _ in timeline(sim)][-3:] == [
        ("+2h 00m", "wait_for_open"),
        ("+2h 00m", "text_tracking"),
        ("+2h 00m", "done"),
    ]
    assert sim.messages == 2


# -- price drop ------------------------------------------------------------------------------


def dropped(*percents: float) -> dict[str, Any]:
    products = [
        {
            "sku": f"sku_{n}",
            "name": f"Product {n}",
            "price": 80 - p,
            "previous_price": 80,
            "percent_off": p,
            "url": f"https://shop.example.com/p/sku_{n}",
        }
        for n, p in enumerate(percents)
    ]
    return {"at": "0s", "event": "wishlist_prices_dropped", "properties": {"products": products}}


async def test_price_drop_leads_with_the_biggest_drop_and_reminds_after_a_big_one(
    time_env, tmp_path
):
    sim = await play(time_env, tmp_path, "price_drop", [dropped(5, 25, 12)])
    assert [(at, step, text) for at, step, text in timeline(sim)] == [
        ("+0s", "entry", "entered on wishlist_prices_dropped"),
        ("+0s", "announce", "sent on email with template price_drop"),
        ("+2d 00h", "wait_two_days", "waited 2d"),
        (
            "+2d 00h",
            "worth_a_reminder",
            "branched when (trigger.properties.products | "
            "map(attribute='percent_off') | max) >= 20 -> reminder",
        ),
        ("+2d 00h", "reminder", "sent on email with template price_drop"),
        ("+2d 00h", "done", "ended"),
    ]
    assert sim.entries[1].summary == "Price drop: Product 1 is now 25% off"


async def test_price_drop_ignores_small_drops_and_ends_on_an_order_of_one(time_env, tmp_path):
    small = await play(time_env, tmp_path, "price_drop", [dropped(3, 8)])
    assert not small.entered
    order = {
        "at": "1d",
        "event": "order_placed",
        "properties": {"products": [{"sku": "sku_0", "quantity": 1}]},
    }
    sim = await play(time_env, tmp_path, "price_drop", [dropped(15), order])
    assert timeline(sim)[-1] == ("+1d 00h", "wait_two_days", "converted (goal order_placed)")
