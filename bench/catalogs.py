"""Catalogs: upserting 100,000 items over the API, and what a lookup adds to a send.

    python -m bench.catalogs [--items 100000] [--sends 400] [--database URL]

1. Upsert: a `journeyman api` process of its own (SQLite file by default, Temporal not
   needed: the API connects lazily) takes `--items` products (about 270 bytes of JSON
   each) as `PUT /v1/catalogs/products/items` batches of 10,000, one after another on
   one connection; the time from the first request to the last answer, and each
   batch's. Then the same items again (every one an update).
2. Lookup in a send: the send activity (`JourneyActivities.send`, in this process,
   outbox channel) for `--sends` customers of each of two journeys on the same
   database, interleaved: one plain, one whose send has `only_if` reading
   `catalog('products', id).stock` and whose template shows the item's name, price and
   picture. The difference of the medians is what the lookups add to a send.
docs/benchmarks.md ("Catalogs") keeps the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from activities.journey import JourneyActivities
from bench.core import clean_env, free_port
from journeyman.contracts import CustomerEvent, ExprContext, SendInput
from journeyman.events.routing import Catalog
from journeyman.messaging import catalogs
from journeyman.settings import Settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer
from journeyman.wiring import journey_activities

ADMIN = "bench-admin-token"
BATCH = catalogs.MAX_BATCH

PLAIN = """\
id: plain
name: Plain
entry: {event: product_back_in_stock}
steps:
  - id: notify
    send: {template: plain, channels: [email]}
"""
GUARDED = """\
id: guarded
name: Guarded
entry: {event: product_back_in_stock}
steps:
  - id: notify
    send:
      template: guarded
      channels: [email]
      only_if: "catalog('products', trigger.properties.product_id).stock > 0"
"""
PLAIN_TEMPLATE = (
    "{% block subject %}{{ trigger.properties.product_id }} is back{% endblock %}"
    "<p>Hello {{ profile.first_name }}</p>"
)
GUARDED_TEMPLATE = (
    "{% set item = catalog('products', trigger.properties.product_id) %}"
    "{% block subject %}{{ item.name }} is back{% endblock %}"
    "<p>Hello {{ profile.first_name }}</p><p>{{ item.price }} {{ item.currency }}</p>"
    '<img src="{{ item.image_url }}">'
)


def product(n: int, stock: int | None = None) -> dict[str, Any]:
    return {
        "id": f"sku_{n:07d}",
        "name": f"Speckled stoneware vase no. {n}",
        "price": round(10 + (n % 9000) / 7, 2),
        "currency": "USD",
        "stock": (n % 17) if stock is None else stock,
        "category": ["home", "kitchen", "garden"][n % 3],
        "image_url": f"https://cdn.example.com/p/sku_{n:07d}.jpg",
        "url": f"https://shop.example.com/p/sku_{n:07d}",
    }


# -- 1. upserts over the API ---------------------------------------------------------


def upserts(items: int, database: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="journeyman-bench-catalogs-") as folder:
        root = Path(folder)
        (root / "journeys").mkdir()
        (root / "templates").mkdir()
        port = free_port()
        env = clean_env(
            DATABASE_URL=database or f"sqlite:///{root}/bench.db",
            JOURNEYMAN_ADMIN_TOKEN=ADMIN,
            JOURNEYS_DIR=str(root / "journeys"),
            TEMPLATES_DIR=str(root / "templates"),
            TEMPORAL_ADDRESS="127.0.0.1:1",  # never reached: the API connects lazily
        )
        command = [str(Path(sys.executable).parent / "journeyman"), "api", "--port", str(port)]
        log = (root / "api.log").open("wb")
        process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=log)
        try:
            with httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=120,
            ) as client:
                _wait_up(client, process, root)
                bodies = [
                    httpx.Request(
                        "PUT", "/", json=[product(n) for n in range(s, min(s + BATCH, items))]
                    ).content
                    for s in range(0, items, BATCH)
                ]
                first = _put_all(client, bodies)
                again = _put_all(client, bodies)
                probe = client.get(f"/v1/catalogs/products/items/sku_{items - 1:07d}").json()
                assert probe == product(items - 1), probe
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()
    return {
        "items": items,
        "bytes": sum(len(b) for b in bodies),
        "insert_s": first[0],
        "insert_batches": first[1],
        "update_s": again[0],
        "update_batches": again[1],
    }


def _wait_up(client: httpx.Client, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"journeyman api exited:\n{(root / 'api.log').read_text()}")
        try:
            if client.get("/v1/catalogs/products/items/none").status_code == 404:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("journeyman api did not start within 60 s")


def _put_all(client: httpx.Client, bodies: list[bytes]) -> tuple[float, list[float]]:
    started = time.perf_counter()
    batches = []
    for body in bodies:
        sent = time.perf_counter()
        response = client.put(
            "/v1/catalogs/products/items",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        response.raise_for_status()
        batches.append(time.perf_counter() - sent)
    return time.perf_counter() - started, batches


# -- 2. lookups in a send ------------------------------------------------------------


def lookups(items: int, sends: int, database: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="journeyman-bench-lookups-") as folder:
        root = Path(folder)
        db = Database(database or f"sqlite:///{root}/bench.db")
        try:
            db.create_all()
            return _lookups(db, root, items, sends)
        finally:
            db.dispose()


def _lookups(db: Database, root: Path, items: int, sends: int) -> dict[str, Any]:
    for name, journey, template in (
        ("plain", PLAIN, PLAIN_TEMPLATE),
        ("guarded", GUARDED, GUARDED_TEMPLATE),
    ):
        (root / "journeys").mkdir(exist_ok=True)
        (root / "journeys" / f"{name}.yaml").write_text(journey)
        (root / "templates" / name).mkdir(parents=True)
        (root / "templates" / name / "email.html").write_text(template)
    compiled = Catalog.from_dirs(root / "journeys", root / "templates")
    compiled.register(db)
    with db.session() as session:
        for start in range(0, items, BATCH):
            batch = [product(n, stock=5) for n in range(start, min(start + BATCH, items))]
            catalogs.upsert(session, "products", [catalogs.Item(p["id"], p) for p in batch])
        for n in range(2 * sends):
            session.add(
                Customer(
                    id=f"c{n}",
                    email=f"c{n}@example.com",
                    traits={"first_name": "Ana"},
                    push_tokens=[],
                )
            )
    settings = Settings(database_url=db.url, secret_key="bench")
    activities = journey_activities(db, settings, providers={})
    timings: dict[str, list[float]] = {"plain": [], "guarded": []}
    order = [("plain", n) for n in range(sends)] + [("guarded", n) for n in range(sends)]
    random.Random(7).shuffle(order)
    for warm in range(20):  # caches (renderers, connections) warm before measuring
        _send(activities, compiled, "plain" if warm % 2 else "guarded", f"w{warm}", items, None)
    for name, n in order:
        timings[name].append(_send(activities, compiled, name, f"{name}-{n}", items, n))
    activities.close()
    plain, guarded = statistics.median(timings["plain"]), statistics.median(timings["guarded"])
    return {
        "sends": sends,
        "plain_ms": plain * 1000,
        "guarded_ms": guarded * 1000,
        "added_ms": (guarded - plain) * 1000,
        "plain_p90_ms": _p90(timings["plain"]) * 1000,
        "guarded_p90_ms": _p90(timings["guarded"]) * 1000,
    }


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


def _send(
    activities: JourneyActivities,
    compiled: Catalog,
    name: str,
    key: str,
    items: int,
    n: int | None,
) -> float:
    plan = compiled.compiled[name].plan
    now = datetime.now(UTC)
    sku = f"sku_{random.randrange(items):07d}"
    trigger = CustomerEvent(
        message_id=uuid.uuid4().hex, name="product_back_in_stock", properties={"product_id": sku}
    )
    customer = f"c{(n or 0) * 2 + (name == 'guarded')}"
    inp = SendInput(
        idempotency_key=f"bench/{key}",
        workflow_id=f"{name}/{customer}",
        journey_id=name,
        version=plan.version,
        step_id="notify",
        customer_id=customer,
        template=name,
        channels=["email"],
        topic=None,
        context=ExprContext(
            event=trigger,
            trigger=trigger,
            journey={"id": name, "version": plan.version, "entered_at": now},
            now=now,
        ),
        only_if="catalog('products', trigger.properties.product_id).stock > 0"
        if name == "guarded"
        else None,
        only_if_tree=plan.journey.steps[0].send.only_if.tree  # type: ignore[union-attr]
        if name == "guarded"
        else None,
    )
    started = time.perf_counter()
    outcome = activities.send(inp)
    elapsed = time.perf_counter() - started
    assert outcome.status == "sent", outcome
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--sends", type=int, default=400)
    parser.add_argument("--database", help="a database URL (default: a SQLite file)")
    args = parser.parse_args()
    os.environ.setdefault("JOURNEYMAN_LOG_FORMAT", "text")
    up = upserts(args.items, args.database)
    rate = up["items"] / up["insert_s"]
    print(
        f"upsert {up['items']:,} items ({up['bytes'] / 1e6:.1f} MB) over the API in "
        f"{len(up['insert_batches'])} requests: {up['insert_s']:.1f} s ({rate:,.0f} items/s; "
        f"batch median {statistics.median(up['insert_batches']):.2f} s); "
        f"again (all updates): {up['update_s']:.1f} s"
    )
    found = lookups(args.items, args.sends, args.database)
    print(
        f"send, median of {found['sends']} each: plain {found['plain_ms']:.2f} ms "
        f"(p90 {found['plain_p90_ms']:.2f}), with only_if + template lookup "
        f"{found['guarded_ms']:.2f} ms (p90 {found['guarded_p90_ms']:.2f}): "
        f"+{found['added_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
