"""Record the histories that the replay test replays: `python -m tests.histories.export`.

Runs every shipped journey in a few scenarios on the time-skipping test server, with
the real worker and activities (webhooks answered by a stub transport, no network),
and writes each run's history as JSON beside this file, as
`temporal workflow show --output json` would. Re-export after a deliberate change to
the interpreter only together with a `workflow.patched()` guard (docs/versioning.md).

Without arguments it records the scenarios that have no file yet: a recorded history
is the proof that runs of older code still replay, so it is never overwritten by
accident. Name scenarios (`abandoned_cart__no_response`, `audience/win_back__tick`) to
record them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from activities.journey import JourneyActivities
from journeyman.audiences import schedules
from journeyman.audiences.segments import segment_trigger
from journeyman.contracts import OperatorRequest
from journeyman.messaging import catalogs
from journeyman.messaging.channels import Channels
from journeyman.messaging.journey_secrets import placeholder
from journeyman.messaging.providers import OutgoingMessage
from journeyman.messaging.ratelimit import parse_rate
from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.operations import controls
from journeyman.platform.binaries import find_binary
from journeyman.platform.codec import plain_data_converter
from journeyman.storage.db import Database
from journeyman.storage.models import Event, JourneyRun, RateLimit
from journeyman.wiring import build_worker
from tests.harness import Harness
from tests.messaging.test_shipped_templates import PRODUCTS, PROFILES, TRIGGERS

HERE = Path(__file__).parent
ROOT = HERE.parents[1]

# An operator skips the first wait, moves the run back to it, then ends it.
OPERATOR_CONTROLS = [
    (timedelta(hours=1), "operator:skip-wait", {"who": "ana", "why": "asked by phone"}),
    (
        timedelta(hours=1),
        "operator:move",
        {"who": "bo", "why": "tips again", "to": "wait_two_days"},
    ),
    (timedelta(hours=1), "operator:end", {"who": "cy", "why": "duplicate account"}),
]
# (journey, scenario, events after the trigger as (delay, name, properties)); a name
# `operator:<action>` is an operator's control instead (journeyman.operations.controls.control_run,
# properties those of an OperatorRequest).
SCENARIOS: list[tuple[str, str, list[tuple[timedelta, str, dict[str, Any]]]]] = [
    ("abandoned_cart", "no_response", []),
    (
        "abandoned_cart",
        "opened_then_converted",
        [
            (timedelta(hours=3), "email_opened", {}),
            (timedelta(minutes=1), "order_placed", {"cart_id": "cart_8841"}),
        ],
    ),
    ("abandoned_cart", "emptied", [(timedelta(minutes=20), "cart_emptied", {})]),
    ("welcome_series", "no_order", []),
    ("welcome_series", "first_order", [(timedelta(days=3), "order_placed", {})]),
    ("back_in_stock", "no_purchase", []),
    ("order_ready_for_pickup", "never_picked_up", []),
    ("order_ready_for_pickup", "picked_up", [(timedelta(hours=2), "order_picked_up", {})]),
    ("win_back", "no_order", []),
    ("win_back", "came_back", [(timedelta(hours=1), "order_placed", {})]),
    # Recorded with the step log (patch "record-steps"); the ones above are from before.
    ("abandoned_cart", "recorded_steps", []),
    ("abandoned_cart", "recorded_steps_opened", [(timedelta(hours=3), "email_opened", {})]),
    ("welcome_series", "recorded_steps_first_order", [(timedelta(days=3), "order_placed", {})]),
    # Recorded with a rate-limited Twilio whose next seconds are taken: the first text
    # waits for its slot (patch "send-pacing").
    (
        "order_ready_for_pickup",
        "paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
    # Recorded with JourneyStep only where runs stay, the step log written there and the
    # run closed by the last record (patch "lean-steps"); every one above is from before.
    ("abandoned_cart", "lean_steps", []),
    ("abandoned_cart", "lean_steps_opened", [(timedelta(hours=3), "email_opened", {})]),
    ("welcome_series", "lean_steps_first_order", [(timedelta(days=3), "order_placed", {})]),
    (
        "welcome_series",
        "lean_steps_operator",
        OPERATOR_CONTROLS,
    ),
    (
        "order_ready_for_pickup",
        "lean_steps_paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
    # `wait_for` with `since: entry` (patch "v2b-since-entry"): a review written during
    # the wait is found at once; one written after the request is waited for.
    (
        "review_request",
        "reviewed_during_wait",
        [(timedelta(days=1), "review_submitted", {"order_id": "LK-31877"})],
    ),
    (
        "review_request",
        "reviewed_after_asking",
        [(timedelta(days=5), "review_submitted", {"order_id": "LK-31877"})],
    ),
    ("review_request", "never_reviewed", []),
    # A reorder starts the next cycle inside the run (a wait_for looping to the start).
    (
        "replenishment",
        "reordered_then_reminded",
        [(timedelta(days=10), "product_purchased", {"sku": "sku_beans_1kg"})],
    ),
    # One of two events with an on_event map; since entry (patch "v2b-since-entry").
    (
        "store_pickup_hold",
        "picked_up",
        [(timedelta(hours=3), "order_picked_up", {"order_id": "LK-40117"})],
    ),
    (
        "store_pickup_hold",
        "cancelled",
        [(timedelta(hours=3), "order_cancelled", {"order_id": "LK-40117"})],
    ),
    # Entered on the built-in trait_changed; a downgrade exits.
    ("gold_tier_welcome", "no_order", []),
    (
        "gold_tier_welcome",
        "downgraded",
        [(timedelta(days=2), "trait_changed", {"trait": "tier", "old": "gold", "new": "silver"})],
    ),
]
# Recorded with DSL v2's failing conditions (patch "v2a-condition-errors"): an old
# journey, and the v2 journeys that read text as numbers, filtered history, what a send
# did, list filters, and a secret (a placeholder: histories never hold a value).
SCENARIOS += [
    ("abandoned_cart", "v2a_opened", [(timedelta(hours=3), "email_opened", {})]),
    ("support_nps", "v2a_detractor", []),
    ("support_nps", "v2a_unreadable_score", []),
    (
        "browse_abandonment",
        "v2a_looked_again",
        [(timedelta(minutes=40), "product_viewed", {"sku": "sku_vase_12", "price": 34.5})],
    ),
    ("order_shipped", "v2a_no_push", []),
    ("price_drop", "v2a_reminded", []),
]
# Triggers other than the journey's usual one (tests/messaging/test_shipped_templates.py TRIGGERS).
TRIGGER_PROPERTIES: dict[tuple[str, str], dict[str, Any]] = {
    ("support_nps", "v2a_unreadable_score"): {"score": "ten", "ticket_id": "T-4412"},
    ("support_nps", "one_marker_unreadable_score"): {"score": "ten", "ticket_id": "T-4412"},
}
# The planter sold out before the reminder (back_in_stock's `send.only_if`).
SOLD_OUT: list[tuple[timedelta, str, dict[str, Any]]] = [
    (
        timedelta(hours=2),
        "catalog:products",
        {"id": "sku_planter_40", "name": "Terracotta planter, 40 cm", "stock": 0},
    )
]
# Journeys that read the `products` catalog (tests.messaging.test_shipped_templates.PRODUCTS) at
# send time; a name `catalog:<name>` upserts its properties as an item of that catalog.
SCENARIOS += [
    (
        "back_in_stock",
        "guarded_sold_out_before_reminder",
        SOLD_OUT,
    ),
    ("price_alert", "price_held", []),
    ("recently_viewed", "suggested", []),
]
# Segment journeys, entered as a segment check enters them (a `segment_entry` trigger).
SCENARIOS += [
    ("win_back", "segment_came_back", [(timedelta(hours=1), "order_placed", {})]),
    ("birthday", "gift_used", [(timedelta(hours=10), "order_placed", {})]),
    ("store_news_december", "sent", []),
]
# The win-back with an optimized split (patch "opt-split") and best-hour sends (patch
# "opt-best-hour"): a customer whose opens cluster at 19:00 in their zone waits for it;
# one without opens is sent to at once.
SCENARIOS += [
    ("win_back", "best_hour_came_back", [(timedelta(days=1), "order_placed", {})]),
    ("win_back", "no_opens_no_order", []),
]
# Recorded since patch "perf-one-marker": one marker at the start of the run stands for
# every patch before it, none asked at a step. One scenario for each of those patches:
# lean steps, an operator, send pacing, since entry, a failing condition, best hour and
# an optimized split.
SCENARIOS += [
    ("abandoned_cart", "one_marker_opened", [(timedelta(hours=3), "email_opened", {})]),
    (
        "welcome_series",
        "one_marker_operator",
        OPERATOR_CONTROLS,
    ),
    (
        "order_ready_for_pickup",
        "one_marker_paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
    (
        "review_request",
        "one_marker_reviewed_during_wait",
        [(timedelta(days=1), "review_submitted", {"order_id": "LK-31877"})],
    ),
    ("support_nps", "one_marker_unreadable_score", []),
    ("win_back", "one_marker_best_hour_came_back", [(timedelta(days=1), "order_placed", {})]),
]
# Recorded since patch "perf-fold-steps" (its one marker stands for perf-one-marker): a
# send writes the step log entries before it and its own; the trigger comes in the start
# input. The same scenarios as perf-one-marker's where a send is followed by a wait or
# deferred, and journeys whose last step is a send (the send closes the run).
SCENARIOS += [
    ("abandoned_cart", "fold_steps_opened", [(timedelta(hours=3), "email_opened", {})]),
    ("welcome_series", "fold_steps_operator", OPERATOR_CONTROLS),
    (
        "order_ready_for_pickup",
        "fold_steps_paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
    ("recently_viewed", "fold_steps_suggested", []),
    ("store_news_december", "fold_steps_sent", []),
]
# Started showing the step where the run first stays (journeyman.events.starting.
# first_stay; no patch: the interpreter already upserts `JourneyStep` only when it
# changes): the same scenarios as perf-fold-steps' where sends come before the first wait.
SCENARIOS += [
    ("welcome_series", "first_stay_operator", OPERATOR_CONTROLS),
    (
        "order_ready_for_pickup",
        "first_stay_paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
]
# A reorder routed with its trigger, before the worker ran the run's first task (one
# batch from an SDK): the first wait hears it (patch "first-wait-hears-arrivals").
SCENARIOS += [
    (
        "replenishment",
        "reordered_with_its_trigger",
        [(timedelta(0), "product_purchased", TRIGGERS["replenishment"]["properties"])],
    ),
]
# Era 1 (`JourneyInput.era`, workflows/eras.py): started as the router starts runs since,
# every patch up to first-wait-hears-arrivals taken unasked, so no patch marker and no
# `TemporalChangeVersion` upsert. One scenario for each shipped journey; those of the
# latest scenarios of era 0 (perf-fold-steps, first stay, first wait) are their twins.
SCENARIOS += [
    ("abandoned_cart", "era1_opened", [(timedelta(hours=3), "email_opened", {})]),
    ("back_in_stock", "era1_guarded_sold_out_before_reminder", SOLD_OUT),
    ("birthday", "era1_gift_used", [(timedelta(hours=10), "order_placed", {})]),
    (
        "browse_abandonment",
        "era1_looked_again",
        [(timedelta(minutes=40), "product_viewed", {"sku": "sku_vase_12", "price": 34.5})],
    ),
    (
        "gold_tier_welcome",
        "era1_downgraded",
        [(timedelta(days=2), "trait_changed", {"trait": "tier", "old": "gold", "new": "silver"})],
    ),
    (
        "order_ready_for_pickup",
        "era1_paced_picked_up",
        [(timedelta(hours=2), "order_picked_up", {"order_id": "LK-20931"})],
    ),
    ("order_shipped", "era1_no_push", []),
    ("price_alert", "era1_price_held", []),
    ("price_drop", "era1_reminded", []),
    ("recently_viewed", "era1_suggested", []),
    (
        "replenishment",
        "era1_reordered_with_its_trigger",
        [(timedelta(0), "product_purchased", TRIGGERS["replenishment"]["properties"])],
    ),
    (
        "review_request",
        "era1_reviewed_during_wait",
        [(timedelta(days=1), "review_submitted", {"order_id": "LK-31877"})],
    ),
    ("store_news_december", "era1_sent", []),
    (
        "store_pickup_hold",
        "era1_picked_up",
        [(timedelta(hours=3), "order_picked_up", {"order_id": "LK-40117"})],
    ),
    ("support_nps", "era1_unreadable_score", []),
    ("welcome_series", "era1_operator", OPERATOR_CONTROLS),
    ("win_back", "era1_best_hour_came_back", [(timedelta(days=1), "order_placed", {})]),
]
TRIGGER_PROPERTIES[("support_nps", "era1_unreadable_score")] = {
    "score": "ten",
    "ticket_id": "T-4412",
}
# Scenarios whose events with no delay are routed before the worker starts.
WITH_TRIGGER = {
    ("replenishment", "reordered_with_its_trigger"),
    ("replenishment", "era1_reordered_with_its_trigger"),
}
# Opens the customer made before the trigger, as (days before, local hour, minute).
EVENINGS = [(d, 19, m) for d, m in ((1, 5), (2, 20), (4, 40))]
OPENS_BEFORE = {
    ("win_back", "best_hour_came_back"): EVENINGS,
    ("win_back", "one_marker_best_hour_came_back"): EVENINGS,
    ("win_back", "era1_best_hour_came_back"): EVENINGS,
}
# The sample profile a scenario's customer has (PROFILES), when not "named" (whom
# win_back's 10% holdout keeps out).
PROFILE_OF = {
    ("win_back", "best_hour_came_back"): "no-name",
    ("win_back", "no_opens_no_order"): "no-name",
    ("win_back", "one_marker_best_hour_came_back"): "no-name",
    ("win_back", "era1_best_hour_came_back"): "no-name",
}
# Runs of the `Audience` workflow (a segment check over a few customers), replayed with
# it: tests/histories/audience/<journey>__<scenario>.json.
AUDIENCE_SCENARIOS: list[tuple[str, str]] = [("win_back", "tick")]
# Scenarios whose texts go through `_PacedTwilio`, at 10 a second, Twilio busy for 2 s.
PACED = {
    ("order_ready_for_pickup", "paced_picked_up"),
    ("order_ready_for_pickup", "lean_steps_paced_picked_up"),
    ("order_ready_for_pickup", "one_marker_paced_picked_up"),
    ("order_ready_for_pickup", "fold_steps_paced_picked_up"),
    ("order_ready_for_pickup", "first_stay_paced_picked_up"),
    ("order_ready_for_pickup", "era1_paced_picked_up"),
}
OPERATOR = "operator:"
CATALOG = "catalog:"


def history_path(journey: str, scenario: str) -> Path:
    return HERE / f"{journey}__{scenario}.json"


def audience_history_path(journey: str, scenario: str) -> Path:
    return HERE / "audience" / f"{journey}__{scenario}.json"


class _PacedTwilio:
    """Stands for Twilio (the name its rate limit is keyed by): takes every text."""

    name = "twilio"
    transactional = False

    def send(self, message: OutgoingMessage, session: Session | None) -> str:
        return f"SM{message.delivery_id:032d}"

    def close(self) -> None:
        pass


async def _run(env: WorkflowEnvironment, journey: str, scenario: str, later: list[Any]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/j.db")
        db.create_all()
        harness = Harness(env, db, Path(tmp), f"export-{journey}-{scenario}")
        harness.journeys_dir = ROOT / "journeys"
        harness.templates_dir = ROOT / "templates"
        webhooks = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        channels = Channels()
        if (journey, scenario) in PACED:
            channels = Channels({"sms": _PacedTwilio()}, rate_limits={"twilio": parse_rate("10/s")})
            busy_until = await harness.now() + timedelta(seconds=2)
            with db.session() as session:
                session.add(RateLimit(provider="twilio", next_slot_at=busy_until))
        activities = JourneyActivities(db, channels, http=webhooks, secrets=placeholder)
        with db.session() as session:
            items = [catalogs.Item(ident, data) for ident, data in PRODUCTS.items()]
            catalogs.upsert(session, "products", items)
        catalog = await harness.start_catalog_only()
        async with contextlib.AsyncExitStack() as worker:
            together = (journey, scenario) in WITH_TRIGGER
            if not together:
                await worker.enter_async_context(
                    build_worker(env.client, harness.task_queue, activities)
                )
            profile = dict(PROFILES[PROFILE_OF.get((journey, scenario), "named")])
            customer_id = profile.pop("id")
            harness.customer(customer_id, **profile)
            await _opens_before(
                harness, customer_id, profile, OPENS_BEFORE.get((journey, scenario))
            )
            plan = catalog.compiled[journey].plan
            if plan.journey.entry.segment is not None:
                now = await harness.now()
                trigger_event = segment_trigger(f"export/{journey}", "schedule", customer_id, now)
                assert harness.router is not None
                workflow_id = await harness.router.enter(plan, customer_id, "", trigger_event, now)
            else:
                trigger = TRIGGERS[journey]
                properties = TRIGGER_PROPERTIES.get((journey, scenario), trigger["properties"])
                routed = await harness.event(trigger["event"], customer_id, **properties)
                [workflow_id] = [w for w in routed.entered if w.startswith(journey)]
            for delay, name, properties in later:
                if together and delay > timedelta(0):
                    # The events with no delay reached the run with its trigger; the
                    # worker starts only now, as one loaded or restarting would.
                    together = False
                    await worker.enter_async_context(
                        build_worker(env.client, harness.task_queue, activities)
                    )
                await harness.sleep(delay)
                if name.startswith(CATALOG):
                    with db.session() as session:
                        item = catalogs.Item(str(properties["id"]), properties)
                        catalogs.upsert(session, name.removeprefix(CATALOG), [item])
                elif name.startswith(OPERATOR):
                    action, request = name.removeprefix(OPERATOR), OperatorRequest(**properties)
                    await controls.control_run(env.client, db, workflow_id, action, request)
                else:
                    await harness.event(name, customer_id, **properties)
            if together:
                await worker.enter_async_context(
                    build_worker(env.client, harness.task_queue, activities)
                )
            await harness.result(workflow_id)
            history = await harness.handle(workflow_id).fetch_history()
        del catalog
        db.dispose()
        return history.to_json()


async def _opens_before(
    harness: Harness,
    customer_id: str,
    profile: dict[str, Any],
    opens: list[tuple[int, int, int]] | None,
) -> None:
    """Store `email_opened` events of the customer at those local times before now."""
    if not opens:
        return
    local_now = (await harness.now()).astimezone(ZoneInfo(profile["timezone"]))
    with harness.db.session() as session:
        for n, (days, hour, minute) in enumerate(opens):
            at = (local_now - timedelta(days=days)).replace(hour=hour, minute=minute)
            session.add(
                Event(
                    message_id=f"open-{customer_id}-{n}",
                    type="track",
                    customer_id=customer_id,
                    name="email_opened",
                    properties={},
                    timestamp=at.astimezone(UTC),
                )
            )


async def _run_tick(env: WorkflowEnvironment, journey: str, scenario: str) -> str:
    """A segment check of `journey` over the three sample profiles, each last ordering
    150 days ago: the history of its `Audience` run."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/j.db")
        db.create_all()
        harness = Harness(env, db, Path(tmp), f"export-{journey}-{scenario}")
        harness.journeys_dir = ROOT / "journeys"
        harness.templates_dir = ROOT / "templates"
        webhooks = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
        activities = JourneyActivities(db, Channels(), http=webhooks)
        catalog = await harness.start_catalog_only()
        async with contextlib.AsyncExitStack() as worker:
            together = (journey, scenario) in WITH_TRIGGER
            if not together:
                await worker.enter_async_context(
                    build_worker(env.client, harness.task_queue, activities)
                )
            now = await harness.now()
            for sample in PROFILES.values():
                profile = dict(sample)
                customer_id = profile.pop("id")
                harness.customer(customer_id, **profile)
                with db.session() as session:
                    session.add(
                        Event(
                            message_id=f"order-{customer_id}",
                            type="track",
                            customer_id=customer_id,
                            name="order_placed",
                            properties={},
                            timestamp=now - timedelta(days=150),
                        )
                    )
            tick_id = f"audience/{journey}-export"
            handle = await schedules.start_tick(
                env.client,
                catalog.compiled[journey].plan,
                tick_id=tick_id,
                task_queue=harness.task_queue,
                kind="schedule",
            )
            await handle.result()
            history = await handle.fetch_history()
            with db.session() as session:
                entered = list(session.scalars(select(JourneyRun.workflow_id)))
            for workflow_id in entered:
                await env.client.get_workflow_handle(workflow_id).terminate("export over")
        db.dispose()
        return history.to_json()


async def _environment() -> WorkflowEnvironment:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=plain_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                k.name: IndexedValueType.ValueType(k.indexed_value_type) for k in SEARCH_ATTRIBUTES
            },
        )
    )
    return env


async def main(names: list[str]) -> None:
    known = {history_path(j, s).stem for j, s, _ in SCENARIOS}
    known |= {f"audience/{audience_history_path(j, s).stem}" for j, s in AUDIENCE_SCENARIOS}
    if unknown := sorted(set(names) - known):
        raise SystemExit(f"no scenario {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    for journey, scenario, later in SCENARIOS:
        path = history_path(journey, scenario)
        if path.stem not in names and (names or path.exists()):
            continue
        async with await _environment() as env:
            text = await _run(env, journey, scenario, later)
        path.write_text(text + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    for journey, scenario in AUDIENCE_SCENARIOS:
        path = audience_history_path(journey, scenario)
        if f"audience/{path.stem}" not in names and (names or path.exists()):
            continue
        async with await _environment() as env:
            text = await _run_tick(env, journey, scenario)
        path.parent.mkdir(exist_ok=True)
        path.write_text(text + "\n")
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
