"""The journeys and templates we ship: every journey compiles, and every template renders
on every channel it has, in every locale it has, for customers with and without a name,
from the template sources a run would carry (`Compiled.templates`)."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from journeyman.customers.profiles import clock_names
from journeyman.dsl import Compiled, validate
from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.dsl.model import SendStep
from journeyman.messaging.rendering import GSM7, RenderedMessage, Renderer

ROOT = Path(__file__).resolve().parents[2]
JOURNEYS_DIR = ROOT / "journeys"
TEMPLATES_DIR = ROOT / "templates"
NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)

SHIPPED = {
    "abandoned_cart",
    "back_in_stock",
    "birthday",
    "browse_abandonment",
    "gold_tier_welcome",
    "order_ready_for_pickup",
    "order_shipped",
    "price_alert",
    "price_drop",
    "recently_viewed",
    "replenishment",
    "review_request",
    "store_news_december",
    "store_pickup_hold",
    "support_nps",
    "welcome_series",
    "win_back",
}
# What a segment check gives the runs it enters as their trigger (journeyman/audiences/segments.py).
SEGMENT_ENTRY = {"event": "segment_entry", "properties": {"tick": "t-1", "kind": "schedule"}}

# The trigger of each journey, with the properties its templates use.
TRIGGERS: dict[str, dict[str, Any]] = {
    "abandoned_cart": {
        "event": "cart_abandoned",
        "properties": {
            "cart_id": "cart_8841",
            "cart_total": 86.5,
            "currency": "USD",
            "cart_url": "https://shop.example.com/cart/cart_8841",
            "products": [
                {
                    "product_id": "sku_vase_12",
                    "name": "Speckled stoneware vase",
                    "price": 34.5,
                    "quantity": 1,
                    "image_url": "https://cdn.example.com/p/sku_vase_12.jpg",
                    "url": "https://shop.example.com/p/sku_vase_12",
                },
                {"product_id": "sku_throw_3", "name": "Linen throw", "price": 26, "quantity": 2},
            ],
        },
    },
    "welcome_series": {"event": "signed_up", "properties": {"source": "footer_form"}},
    "back_in_stock": {
        "event": "product_back_in_stock",
        "properties": {
            "product_id": "sku_planter_40",
            "product_name": "Terracotta planter, 40 cm",
            "product_url": "https://shop.example.com/p/sku_planter_40",
        },
    },
    "order_ready_for_pickup": {
        "event": "order_ready_for_pickup",
        "properties": {
            "order_id": "LK-20931",
            "store_name": "Larkspur Pearl District",
            "pickup_code": "4827",
            "pickup_deadline": "Saturday, March 14",
        },
    },
    "gold_tier_welcome": {
        "event": "trait_changed",
        "properties": {"trait": "tier", "old": "silver", "new": "gold"},
    },
    "replenishment": {
        "event": "product_purchased",
        "properties": {
            "sku": "sku_beans_1kg",
            "product_name": "House espresso beans, 1 kg",
            "reorder_url": "https://shop.example.com/p/sku_beans_1kg?reorder=1",
            "replenishable": True,
        },
    },
    "store_pickup_hold": {
        "event": "pickup_hold_ready",
        "properties": {
            "order_id": "LK-40117",
            "store_name": "Larkspur Pearl District",
            "pickup_code": "5531",
            "pickup_deadline": "Friday, March 13",
        },
    },
    "review_request": {
        "event": "order_delivered",
        "properties": {
            "order_id": "LK-31877",
            "product_name": "Speckled stoneware vase",
            "review_url": "https://shop.example.com/reviews/new?order=LK-31877",
        },
    },
    "support_nps": {
        "event": "nps_submitted",
        "properties": {"score": "4", "ticket_id": "T-4411", "comment": "took three days"},
    },
    "browse_abandonment": {
        "event": "product_viewed",
        "properties": {
            "sku": "sku_vase_12",
            "product_name": "Speckled stoneware vase",
            "price": 34.5,
            "url": "https://shop.example.com/p/sku_vase_12",
            "image_url": "https://cdn.example.com/p/sku_vase_12.jpg",
        },
    },
    "order_shipped": {
        "event": "order_shipped",
        "properties": {
            "order_id": "LK-5521",
            "carrier": "UPS",
            "tracking_url": "https://track.example.com/LK-5521",
        },
    },
    "price_drop": {
        "event": "wishlist_prices_dropped",
        "properties": {
            "products": [
                {
                    "sku": "sku_lamp_2",
                    "name": "Rattan floor lamp",
                    "price": 119,
                    "previous_price": 149,
                    "percent_off": 20.1,
                    "url": "https://shop.example.com/p/sku_lamp_2",
                },
                {
                    "sku": "sku_mug_8",
                    "name": "Glazed mug",
                    "price": 17,
                    "previous_price": 18,
                    "percent_off": 5.6,
                    "url": "https://shop.example.com/p/sku_mug_8",
                },
            ]
        },
    },
    "price_alert": {
        "event": "price_dropped",
        "properties": {
            "product_id": "sku_planter_40",
            "product_name": "Terracotta planter, 40 cm",
            "product_url": "https://shop.example.com/p/sku_planter_40",
            "old_price": 49,
        },
    },
    "recently_viewed": {"event": "product_viewed", "properties": {"sku": "sku_lamp_7"}},
    "win_back": SEGMENT_ENTRY,
    "birthday": SEGMENT_ENTRY,
    "store_news_december": {**SEGMENT_ENTRY, "properties": {"tick": "t-1", "kind": "broadcast"}},
}

PROFILES: dict[str, dict[str, Any]] = {
    "named": {
        "id": "cust_1001",
        "email": "ana.silva@example.com",
        "phone": "+15035550142",
        "timezone": "America/Los_Angeles",
        "locale": "en-US",
        "first_name": "Ana",
        "lifetime_value": 820,
        "winback_offer": "free_shipping",
        "birthday": "1991-03-10",
    },
    "no-name": {"id": "cust_1002", "email": "sam@example.com", "timezone": "Europe/Paris"},
    "null-name": {"id": "cust_1003", "email": "lee@example.com", "first_name": None},
}


# The `products` catalog the templates read (catalogs/products.yaml).
PRODUCTS: dict[str, dict[str, Any]] = {
    "sku_planter_40": {
        "id": "sku_planter_40",
        "name": "Terracotta planter, 40 cm",
        "price": 39.0,
        "currency": "USD",
        "stock": 3,
        "image_url": "https://cdn.example.com/p/sku_planter_40.jpg",
        "url": "https://shop.example.com/p/sku_planter_40",
    },
    "sku_lamp_7": {
        "id": "sku_lamp_7",
        "name": "Rattan floor lamp",
        "price": 119,
        "currency": "USD",
        "stock": 0,
        "image_url": "https://cdn.example.com/p/sku_lamp_7.jpg",
        "url": "https://shop.example.com/p/sku_lamp_7",
    },
}


def _compiled() -> tuple[list[Compiled], list[str]]:
    compiled, problems = validate([JOURNEYS_DIR], TEMPLATES_DIR)
    return compiled, [str(p) for p in problems]


COMPILED, PROBLEMS = _compiled()


def _sent_templates(compiled: Compiled) -> list[str]:
    steps = compiled.plan.journey.steps
    return sorted({step.send.template for step in steps if isinstance(step, SendStep)})


def _cases() -> list[Any]:
    """(journey, template, channel, locale) for every file a shipped journey can render."""
    cases = []
    for compiled in COMPILED:
        renderer = Renderer(compiled.templates)
        for template in _sent_templates(compiled):
            for channel, filename in CHANNEL_FILES.items():
                if f"{template}/{filename}" not in compiled.templates:
                    continue
                for locale in [None, *renderer.locales(template, channel)]:
                    case_id = f"{template}-{channel}-{locale or 'default'}"
                    cases.append(
                        pytest.param(compiled, template, channel, locale, id=case_id),
                    )
    return cases


def _names(compiled: Compiled, profile: dict[str, Any]) -> dict[str, Any]:
    """What the send activity passes: the names expressions see, plus an unsubscribe
    link for journeys with a topic."""
    journey = compiled.plan.journey
    trigger = {**TRIGGERS[journey.id], "timestamp": NOW, "at": NOW, "message_id": "m-1"}
    trigger["name"] = trigger["event"]
    names: dict[str, Any] = {
        "event": trigger,
        "trigger": trigger,
        "profile": profile,
        "journey": {"id": journey.id, "version": compiled.plan.version, "entered_at": NOW},
        "now": NOW + timedelta(hours=1),
        "last": lambda name: None,
        "count": lambda name, within=None: 0,
        "catalog": lambda name, ident: PRODUCTS.get(ident) if name == "products" else None,
        "viewed_products": lambda limit=3, catalog="products", within=None: [
            {**item, "viewed_at": NOW} for item in list(PRODUCTS.values())[:limit]
        ],
        **clock_names(NOW + timedelta(hours=1), ZoneInfo(profile.get("timezone") or "UTC")),
    }
    if journey.topic is not None:
        names["unsubscribe_url"] = f"https://shop.example.com/unsubscribe/tok-{profile['id']}"
    return names


def _outputs(message: RenderedMessage) -> list[str]:
    fields = ("subject", "preheader", "html", "text", "title", "body")
    outputs = [getattr(message, name) or "" for name in fields]
    return [*outputs, *(message.data or {}).values()]


def test_every_shipped_journey_compiles_without_problems() -> None:
    assert PROBLEMS == []
    assert {c.plan.journey.id for c in COMPILED} == SHIPPED


def test_every_template_folder_is_used_by_a_shipped_journey() -> None:
    used = {template for compiled in COMPILED for template in _sent_templates(compiled)}
    folders = {p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir() and p.name != "_layouts"}
    assert folders == used


def test_at_least_one_template_has_a_french_variant() -> None:
    assert any(path.endswith(".fr.html") for c in COMPILED for path in c.templates)


@pytest.mark.parametrize("profile_kind", sorted(PROFILES))
@pytest.mark.parametrize(("compiled", "template", "channel", "locale"), _cases())
def test_shipped_template_renders(
    compiled: Compiled, template: str, channel: str, locale: str | None, profile_kind: str
) -> None:
    profile = PROFILES[profile_kind]
    names = _names(compiled, profile)
    message = Renderer(compiled.templates).render(template, channel, names, locale)

    assert message.locale == locale
    for output in _outputs(message):
        assert "{{" not in output and "{%" not in output
        assert "None" not in output
    if channel == "email":
        assert message.subject and message.text and message.html
        assert ("Ana" in message.text) == (profile_kind == "named")
        assert f"<title>{html.escape(message.subject, quote=False)}</title>" in message.html
        assert ("Unsubscribe" in message.text or "désabonner" in message.text) == (
            "unsubscribe_url" in names
        )
    elif channel == "sms":
        assert message.sms_encoding == GSM7
        assert message.sms_segments is not None and message.sms_segments <= 2
        if compiled.plan.journey.topic is not None:
            assert "STOP" in (message.text or "")
    elif channel == "whatsapp":
        assert message.text
        if "first_name" in compiled.templates[message.source]:
            assert ("Ana" in message.text) == (profile_kind == "named")
        # Outside the 24-hour window the approved template goes, its variables filled.
        assert message.data is not None
        assert message.data["content_sid"].startswith("HX")
        variables = json.loads(message.data["content_variables"])
        assert variables and all(variables.values())
    elif channel == "inbox":
        assert message.title and message.body
        assert ("Ana" in message.title) == (profile_kind == "named")
        assert message.data is not None
        assert message.data["link"].startswith("https://")
    else:
        assert message.title and message.body
        assert message.data is not None
        assert message.data["deep_link"].startswith("larkspur://")


@pytest.mark.parametrize("journey_id", ["back_in_stock", "price_alert", "recently_viewed"])
def test_catalog_templates_render_when_the_catalog_has_nothing(journey_id: str) -> None:
    """An item gone from the catalog (the send's guard stops those, the reminder's
    render may still meet one): no picture, no price, no error."""
    [compiled] = [c for c in COMPILED if c.plan.journey.id == journey_id]
    names = {
        **_names(compiled, PROFILES["named"]),
        "catalog": lambda name, ident: None,
        "viewed_products": lambda limit=3, catalog="products", within=None: [],
    }
    renderer = Renderer(compiled.templates)
    for template in _sent_templates(compiled):
        for channel, filename in CHANNEL_FILES.items():
            if f"{template}/{filename}" in compiled.templates:
                message = renderer.render(template, channel, names, None)
                assert "None" not in " ".join(_outputs(message))
                assert "cdn.example.com" not in " ".join(_outputs(message))
