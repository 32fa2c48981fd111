"""Back in stock from outside, next to a real `journeyman dev`: catalogs kept current
through the API (the admin token, and a Standard Webhooks signed inventory webhook),
pushes held by quiet hours, and at the end of the quiet hours the item that sold out
meanwhile is not announced (the run says why) while the one still in stock goes out
at its current price."""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.processes import clean_environment, free_port, running
from tests.waiting import eventually

pytestmark = pytest.mark.slow

JOURNEYMAN = Path(sys.executable).parent / "journeyman"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"inventory system key 32 bytes..").decode()

JOURNEY = """\
id: restock
name: Restock
entry:
  event: product_back_in_stock
  key: "event.properties.product_id"
settings: {{quiet_hours: "{window}"}}
steps:
  - id: notify
    send:
      template: restock
      channels: [push]
      only_if: "catalog('products', trigger.properties.product_id).stock > 0"
"""
TEMPLATE = (
    "{% set item = catalog('products', trigger.properties.product_id) %}"
    "{% block title %}{{ item.name }} is back{% endblock %}"
    "{% block body %}Now {{ item.price }} {{ item.currency }}{% endblock %}"
)


def quiet_window(now: datetime) -> tuple[str, datetime]:
    """Quiet hours (UTC) that hold a push sent now and end at the next minute at least
    25 s away: the window and its end."""
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    if end - now < timedelta(seconds=25):
        end += timedelta(minutes=1)
    start = now - timedelta(hours=2)
    return f"{start:%H:%M}-{end:%H:%M}", end


def signed(body: bytes, msg_id: str) -> dict[str, str]:
    at = datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(WEBHOOK_SECRET).sign(msg_id, at, body.decode()),
        "Content-Type": "application/json",
    }


async def test_back_in_stock_checks_stock_and_price_when_quiet_hours_end(tmp_path: Path) -> None:
    journey = tmp_path / "journeys" / "restock.yaml"
    journey.parent.mkdir()
    journey.write_text(JOURNEY.format(window="03:00-04:00"))  # replaced once dev is up
    (tmp_path / "templates" / "restock").mkdir(parents=True)
    (tmp_path / "templates" / "restock" / "push.txt").write_text(TEMPLATE)
    ports = {name: free_port() for name in ("api", "temporal", "ui")}
    command = [
        *(str(JOURNEYMAN), "dev", "--port", str(ports["api"])),
        *("--temporal-port", str(ports["temporal"]), "--ui-port", str(ports["ui"])),
    ]
    env = clean_environment(JOURNEYMAN_WEBHOOK_SECRET=WEBHOOK_SECRET)
    with (
        running(command, env, tmp_path, tmp_path / "dev.log") as dev,
        contextlib.ExitStack() as closing,
    ):
        banner = await eventually(
            lambda: "Write key:" in dev.output() and dev.output(),
            what="journeyman dev starts",
            within=90,
            detail=dev.detail,
        )
        write_key = banner.split("Write key:", 1)[1].split()[0]
        admin = (tmp_path / ".journeyman" / "admin_token").read_text().strip()
        base = f"http://127.0.0.1:{ports['api']}"
        intake = closing.enter_context(
            httpx.Client(base_url=base, auth=(write_key, ""), timeout=10)
        )
        api = closing.enter_context(
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        )

        products = [
            {"id": "boot-1", "name": "Trail boot", "price": 129, "currency": "EUR", "stock": 2},
            {"id": "lamp-1", "name": "Rattan lamp", "price": 120, "currency": "EUR", "stock": 5},
        ]
        # Quiet hours ending in a minute or so, published as a saved edit (dev watches
        # the files): set once dev is up, so that its start-up time does not matter.
        for _ in range(3):
            window, window_end = quiet_window(datetime.now(UTC))
            journey.write_text(JOURNEY.format(window=window))

            def live(window: str = window) -> bool:
                found = api.get("/v1/journeys/restock").json()
                return found.get("definition", {}).get("settings", {}).get("quiet_hours") == window

            await eventually(live, what="the edit goes live", within=30, detail=dev.detail)
            if window_end - datetime.now(UTC) > timedelta(seconds=10):
                break
        else:
            pytest.fail("the edits took too long to go live")

        # Loaded as a user would next to dev: the command finds dev's database itself.
        (tmp_path / "products.csv").write_text(
            "id,name,price,currency,stock\n"
            + "".join(f"{p['id']},{p['name']},{p['price']},EUR,{p['stock']}\n" for p in products)
        )
        imported = subprocess.run(
            [str(JOURNEYMAN), "catalog", "import", "products", "products.csv"],
            cwd=tmp_path,
            env=clean_environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.strip() == "2 items upserted into catalog products"
        assert api.get("/v1/catalogs/products/items/boot-1").json() == products[0]
        identify = {"userId": "c1", "traits": {"push_token": "device-1"}}
        assert intake.post("/v1/identify", json=identify).status_code == 200
        for product in ("boot-1", "lamp-1"):
            track = {
                "userId": "c1",
                "event": "product_back_in_stock",
                "messageId": f"restock-{product}",
                "properties": {"product_id": product},
            }
            assert intake.post("/v1/track", json=track).status_code == 200

        def path(product: str) -> list[dict[str, Any]]:
            response = api.get(f"/v1/runs/restock/c1/{product}")
            return response.json()["path"] if response.status_code == 200 else []

        def notify(product: str) -> list[tuple[str, str]]:
            return [(p["action"], p["detail"]) for p in path(product) if p["step"] == "notify"]

        for product in ("boot-1", "lamp-1"):
            held = await eventually(
                lambda product=product: notify(product),
                what=f"the push for {product} is held by quiet hours",
                within=60,
                detail=dev.detail,
            )
            assert held[0][0] == "deferred" and held[0][1].startswith(f"quiet hours {window}")

        # Overnight: the boot sells out (the admin), the lamp is repriced by the
        # inventory system's signed webhook.
        sold_out = api.put("/v1/catalogs/products/items", json=[{**products[0], "stock": 0}]).json()
        assert sold_out["upserted"] == 1
        body = json.dumps({**products[1], "price": 99}).encode()
        repriced = httpx.post(
            f"{base}/v1/catalogs/products/items",
            content=body,
            headers=signed(body, "inventory-1"),
            timeout=10,
        )
        assert repriced.status_code == 200, repriced.text
        assert api.get("/v1/catalogs/products/items/lamp-1").json()["price"] == 99

        # The quiet hours end; an operator need not wait for the runs' timers.
        await eventually(
            lambda: datetime.now(UTC) > window_end + timedelta(seconds=1),
            what="the quiet hours end",
            within=90,
        )
        for product in ("boot-1", "lamp-1"):
            skipped = api.post(
                f"/v1/runs/restock/c1/{product}/skip-wait",
                json={"who": "ops", "why": "quiet hours are over"},
            )
            assert skipped.status_code in (200, 409), skipped.text  # 409: its timer won

        final = await eventually(
            lambda: len(notify("boot-1")) > 1 and notify("boot-1")[-1],
            what="the boot's push is decided",
            within=60,
            detail=dev.detail,
        )
        assert final == (
            "skipped",
            "only_if false: catalog('products', trigger.properties.product_id).stock > 0 "
            "[catalog('products', trigger.properties.product_id).stock = 0]",
        )
        await eventually(
            lambda: ("sent", "restock on push") in notify("lamp-1"),
            what="the lamp's push goes out",
            within=60,
            detail=dev.detail,
        )
        outbox = api.get("/v1/outbox", params={"customer": "c1"}).json()
        assert [(m["subject"], m["body"]) for m in outbox] == [
            ("Rattan lamp is back", "Now 99 EUR")
        ]
