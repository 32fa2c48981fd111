"""Product data at send time through the whole workflow: `send.only_if` checked after
quiet hours against the catalog as it is then, `catalog()` in templates and branch
conditions (evaluated by activities, the result recorded in the run's history), and
`viewed_products()` in a template."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from journeyman.messaging import catalogs
from journeyman.storage.models import Delivery, Event
from tests.harness import Harness, actions

BACK_IN_STOCK = """
    id: stock_alert
    name: Back in stock
    entry:
      event: product_back_in_stock
      key: "event.properties.product_id"
    settings: {quiet_hours: "21:00-08:00"}
    steps:
      - id: until_night
        wait: {until: "22:00"}
      - id: notify
        send:
          template: back_in_stock
          channels: [push]
          only_if: "catalog('products', trigger.properties.product_id).stock > 0"
    """

PRICE_TEMPLATE = {
    "push.txt": (
        "{% set item = catalog('products', trigger.properties.product_id) %}"
        "{% block title %}{{ item.name }} is back{% endblock %}"
        "{% block body %}Now {{ item.price }} EUR{% endblock %}"
    )
}


def stock(harness: Harness, product_id: str, **fields: Any) -> None:
    with harness.db.session() as session:
        catalogs.upsert(
            session, "products", [catalogs.Item(product_id, {"id": product_id, **fields})]
        )


async def start_back_in_stock(harness: Harness) -> None:
    harness.template("back_in_stock", PRICE_TEMPLATE)
    await harness.journey(BACK_IN_STOCK)
    harness.customer("c1", push_tokens=["device-1"], timezone="Europe/Paris")
    stock(harness, "boot-1", name="Trail boot", price=129.0, stock=3)
    await harness.event("product_back_in_stock", product_id="boot-1")
    # 23:00 in Paris: the send was tried at 22:00 and deferred to 08:00.
    await harness.sleep_past("22:00", timedelta(hours=1), "Europe/Paris")


@pytest.mark.clock_sensitive
async def test_an_item_sold_out_during_quiet_hours_is_not_sent_and_the_run_says_why(harness):
    await start_back_in_stock(harness)
    stock(harness, "boot-1", name="Trail boot", price=129.0, stock=0)  # sold out overnight
    result = await harness.result("stock_alert/c1/boot-1")
    notify = [p for p in result.path if p.step == "notify"]
    assert [p.action for p in notify] == ["deferred", "skipped"]
    assert notify[0].detail.startswith("quiet hours 21:00-08:00")
    assert notify[1].detail == (
        "only_if false: catalog('products', trigger.properties.product_id).stock > 0 "
        "[catalog('products', trigger.properties.product_id).stock = 0]"
    )
    assert notify[1].at.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M") == "08:00"
    assert harness.outbox("c1") == []
    [delivery] = harness.deliveries()
    assert (delivery.status, delivery.reason) == ("skipped", notify[1].detail)


@pytest.mark.clock_sensitive
async def test_an_item_still_in_stock_is_sent_at_its_current_price(harness):
    await start_back_in_stock(harness)
    stock(harness, "boot-1", name="Trail boot", price=99.0, stock=1)  # repriced overnight
    result = await harness.result("stock_alert/c1/boot-1")
    assert ("notify", "sent") in actions(result)
    [message] = harness.outbox("c1")
    assert (message.channel, message.subject, message.body) == (
        "push",
        "Trail boot is back",
        "Now 99.0 EUR",
    )


async def test_a_guard_that_cannot_be_evaluated_fails_the_send_rather_than_skip(harness):
    """The item was deleted: `none.stock` is an error, and an error is never false."""
    await harness.journey(
        """
        id: guarded
        name: Guarded
        entry: {event: product_back_in_stock}
        steps:
          - id: notify
            send:
              template: hello
              channels: [email]
              only_if: "catalog('products', trigger.properties.product_id).stock > 0"
        """
    )
    harness.customer("c1", email="ada@example.com")
    await harness.event("product_back_in_stock", product_id="unknown")
    result = await harness.result("guarded/c1")
    [notify] = [p for p in result.path if p.step == "notify"]
    assert notify.action == "failed"
    assert notify.detail.startswith("only_if error: catalog('products'")
    assert "is empty (none)" in notify.detail
    assert harness.outbox("c1") == []


async def test_a_branch_reads_the_catalog_through_an_activity(harness):
    await harness.journey(
        """
        id: price_drop
        name: Price drop
        entry: {event: price_dropped}
        steps:
          - id: still_lower
            branch:
              - when: "catalog('products', trigger.properties.product_id).price
                       < trigger.properties.old_price"
                goto: tell
              - goto: done
          - id: tell
            send: {template: hello, channels: [email]}
          - id: done
            end: true
        """
    )
    harness.customer("c1", email="ada@example.com")
    harness.customer("c2", email="bob@example.com")
    stock(harness, "lamp", price=40)
    await harness.event("price_dropped", "c1", product_id="lamp", old_price=50)
    assert ("tell", "sent") in actions(await harness.result("price_drop/c1"))
    stock(harness, "lamp", price=55)  # back up before the second customer's run
    await harness.event("price_dropped", "c2", product_id="lamp", old_price=50)
    assert ("tell", "sent") not in actions(await harness.result("price_drop/c2"))


async def test_viewed_products_lists_the_latest_distinct_views_with_catalog_data(harness):
    harness.template(
        "browse",
        {
            "email.html": (
                "{% block subject %}Still thinking?{% endblock %}{% block content %}"
                "{% for p in viewed_products(2) %}<p>{{ p.name }} {{ p.price }}</p>"
                "{% endfor %}{% endblock %}"
            )
        },
    )
    await harness.journey(
        """
        id: browse
        name: Browse abandonment
        entry: {event: browse_abandoned}
        steps:
          - id: nudge
            send: {template: browse, channels: [email]}
        """
    )
    harness.customer("c1", email="ada@example.com")
    stock(harness, "p1", name="Lamp", price=40)
    stock(harness, "p2", name="Rug", price=120)
    stock(harness, "p3", name="Vase", price=25)
    await harness.event("product_viewed", product_id="p1")
    await harness.sleep(timedelta(minutes=1))
    await harness.event("product_viewed", sku="p2")  # `sku` when there is no product_id
    await harness.sleep(timedelta(minutes=1))
    await harness.event("product_viewed", product_id="gone")  # not in the catalog
    await harness.sleep(timedelta(minutes=1))
    await harness.event("product_viewed", product_id="p3")
    await harness.sleep(timedelta(minutes=1))
    await harness.event("product_viewed", product_id="p2")
    await harness.event("browse_abandoned")
    await harness.result("browse/c1")
    [message] = harness.outbox("c1")
    html = message.html or ""
    assert "<p>Rug 120</p>" in html and "<p>Vase 25</p>" in html
    assert html.index("Rug") < html.index("Vase")
    assert "Lamp" not in html
    with harness.db.session() as session:
        assert session.scalar(select(Delivery.status)) == "sent"
        assert len(session.scalars(select(Event)).all()) == 6
