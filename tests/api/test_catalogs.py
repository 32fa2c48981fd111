"""Catalogs over the API: batches upserted whole or not at all, reads, deletes, who may
write (the admin token, or a Standard Webhooks signature), and odd bodies answered 4xx."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from standardwebhooks import Webhook

from journeyman.storage.models import CatalogItem
from tests.api.support import ADMIN_TOKEN, SERVER_KEY, WEBHOOK_SECRET, WRITE_KEY, Api

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def put(api: Api, path: str, payload: Any = None, **kwargs: Any) -> httpx.Response:
    assert api.client is not None
    headers = {**ADMIN, **kwargs.pop("headers", {})}
    if payload is not None:
        kwargs["content"] = json.dumps(payload).encode()
    return await api.client.put(path, headers=headers, **kwargs)


async def get(api: Api, path: str) -> httpx.Response:
    assert api.client is not None
    return await api.client.get(path, headers=ADMIN)


def stored_count(api: Api, catalog: str = "products") -> int:
    with api.db.session() as session:
        return int(session.scalar(select(func.count()).where(CatalogItem.catalog == catalog)) or 0)


async def test_a_batch_of_ten_thousand_items_is_one_request(api: Api) -> None:
    await api.start()
    items = [{"id": f"sku-{n}", "price": n + 0.5, "stock": n % 3} for n in range(10_000)]
    response = await put(api, "/v1/catalogs/products/items", items)
    assert response.status_code == 200, response.text
    assert response.json() == {"catalog": "products", "upserted": 10_000}
    assert stored_count(api) == 10_000
    item = await get(api, "/v1/catalogs/products/items/sku-42")
    assert item.json() == {"id": "sku-42", "price": 42.5, "stock": 0}


async def test_an_upsert_replaces_the_item_whole(api: Api) -> None:
    await api.start()
    await put(api, "/v1/catalogs/products/items", [{"id": "a", "price": 10, "sale": True}])
    response = await put(api, "/v1/catalogs/products/items", [{"id": "a", "price": 12}])
    assert response.status_code == 200
    assert (await get(api, "/v1/catalogs/products/items/a")).json() == {"id": "a", "price": 12}
    assert stored_count(api) == 1


async def test_a_numeric_id_is_found_as_text(api: Api) -> None:
    await api.start()
    await put(api, "/v1/catalogs/products/items", [{"id": 1001, "name": "Boot"}])
    assert (await get(api, "/v1/catalogs/products/items/1001")).json() == {
        "id": "1001",
        "name": "Boot",
    }


async def test_one_bad_item_stores_nothing_and_names_every_bad_one(api: Api) -> None:
    await api.start()
    items: list[Any] = [{"id": "ok", "price": 1}, {"price": 2}, "text", {"id": True}]
    response = await put(api, "/v1/catalogs/products/items", items)
    assert response.status_code == 422
    body = response.json()
    assert [p["field"] for p in body["detail"]] == ["items.1", "items.2", "items.3"]
    assert "nothing was stored" in body["error"]
    assert stored_count(api) == 0


async def test_items_in_an_object_and_a_single_item_are_accepted(api: Api) -> None:
    await api.start()
    response = await put(api, "/v1/catalogs/stores/items", {"items": [{"id": "s1"}]})
    assert response.json() == {"catalog": "stores", "upserted": 1}
    response = await put(api, "/v1/catalogs/stores/items", {"id": "s2", "city": "Lyon"})
    assert response.json() == {"catalog": "stores", "upserted": 1}
    assert stored_count(api, "stores") == 2


async def test_delete_removes_the_item_and_a_second_delete_is_404(api: Api) -> None:
    await api.start()
    await put(api, "/v1/catalogs/products/items", [{"id": "gone"}])
    assert api.client is not None
    first = await api.client.delete("/v1/catalogs/products/items/gone", headers=ADMIN)
    assert first.json() == {"catalog": "products", "deleted": "gone"}
    second = await api.client.delete("/v1/catalogs/products/items/gone", headers=ADMIN)
    assert second.status_code == 404
    assert (await get(api, "/v1/catalogs/products/items/gone")).status_code == 404


async def test_writes_and_reads_need_the_admin_token(api: Api) -> None:
    await api.start()
    assert api.client is not None
    body = json.dumps([{"id": "a"}]).encode()
    no_token = await api.client.put("/v1/catalogs/products/items", content=body)
    assert no_token.status_code == 401
    wrong = await api.client.put(
        "/v1/catalogs/products/items", content=body, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert (await api.client.get("/v1/catalogs/products/items/a")).status_code == 401
    assert stored_count(api) == 0


async def test_a_server_key_writes_and_reads_a_catalog_and_a_client_key_does_not(
    api: Api,
) -> None:
    """The inventory system's server holds a server key; a client key ships in apps and
    must never change what the shop's messages say about prices and stock."""
    await api.start()
    assert api.client is not None
    body = json.dumps([{"id": "a", "price": 10}]).encode()
    server = httpx.BasicAuth(SERVER_KEY, "")
    put = await api.client.put("/v1/catalogs/products/items", content=body, auth=server)
    assert put.status_code == 200, put.text
    got = await api.client.get("/v1/catalogs/products/items/a", auth=server)
    assert got.json() == {"id": "a", "price": 10}
    client = httpx.BasicAuth(WRITE_KEY, "")
    forged = json.dumps([{"id": "a", "price": 0}]).encode()
    refused = await api.client.put("/v1/catalogs/products/items", content=forged, auth=client)
    assert refused.status_code == 401
    assert (
        await api.client.delete("/v1/catalogs/products/items/a", auth=client)
    ).status_code == 401
    assert (await get(api, "/v1/catalogs/products/items/a")).json()["price"] == 10
    deleted = await api.client.delete("/v1/catalogs/products/items/a", auth=server)
    assert deleted.status_code == 200, deleted.text
    assert stored_count(api) == 0


def signed(body: bytes, secret: str = WEBHOOK_SECRET, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "webhook-id": "msg_inventory_1",
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign("msg_inventory_1", at, body.decode()),
        "Content-Type": "application/json",
    }


async def test_a_signed_inventory_webhook_upserts_items(api: Api) -> None:
    await api.start()
    assert api.client is not None
    body = json.dumps({"id": "sku-1", "stock": 0}).encode()
    response = await api.client.post(
        "/v1/catalogs/products/items", content=body, headers=signed(body)
    )
    assert response.status_code == 200, response.text
    assert (await get(api, "/v1/catalogs/products/items/sku-1")).json()["stock"] == 0


async def test_a_tampered_or_stale_webhook_is_refused(api: Api) -> None:
    await api.start()
    assert api.client is not None
    body = json.dumps({"id": "sku-1", "stock": 0}).encode()
    tampered = await api.client.post(
        "/v1/catalogs/products/items",
        content=body.replace(b"0}", b"9}"),
        headers=signed(body),
    )
    assert tampered.status_code == 401
    stale = await api.client.post(
        "/v1/catalogs/products/items",
        content=body,
        headers=signed(body, at=datetime.now(UTC) - timedelta(minutes=6)),
    )
    assert stale.status_code == 401
    assert stored_count(api) == 0


async def test_odd_bodies_are_4xx_json(api: Api) -> None:
    await api.start()
    cases: list[tuple[bytes, int]] = [
        (b"", 400),
        (b"{not json", 400),
        (b"[NaN]", 400),
        (b"[" * 100_000 + b"]" * 100_000, 400),
        (b'"text"', 422),
        (b"[1, 2]", 422),
        (json.dumps([{"id": "x" * 201}]).encode(), 422),
        (json.dumps([{"id": "big", "blob": "x" * 70_000}]).encode(), 422),
        (json.dumps([{"id": n} for n in range(10_001)]).encode(), 422),
        (b"\xff\xfe", 400),
    ]
    for body, status in cases:
        response = await put(api, "/v1/catalogs/products/items", content=body)
        assert response.status_code == status, (body[:40], response.text)
        assert "error" in response.json()
    bad_name = await put(api, "/v1/catalogs/bad name!/items", [{"id": "a"}])
    assert bad_name.status_code == 422
    assert stored_count(api) == 0


async def test_a_body_over_the_limit_is_413_as_sent_and_as_decoded(api: Api) -> None:
    await api.start(max_catalog_body_bytes=10_000)
    big = json.dumps([{"id": n, "pad": "x" * 100} for n in range(200)]).encode()
    assert (await put(api, "/v1/catalogs/products/items", content=big)).status_code == 413
    assert api.client is not None
    anonymous = await api.client.put("/v1/catalogs/products/items", content=big)
    assert anonymous.status_code == 401  # refused before its body is read
    zipped = gzip.compress(big)
    assert len(zipped) < 10_000
    response = await put(
        api, "/v1/catalogs/products/items", content=zipped, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    small = gzip.compress(json.dumps([{"id": "z"}]).encode())
    response = await put(
        api, "/v1/catalogs/products/items", content=small, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 200


async def test_the_journey_page_and_stats_show_only_if_skips(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from journeyman.api.routes import journeys as journey_routes
    from journeyman.storage.models import Delivery, JourneyVersion

    async def running_steps(*_: Any, **__: Any) -> dict[str, int]:
        return {}

    monkeypatch.setattr(journey_routes, "running_steps", running_steps)
    await api.start(
        """
        id: restock
        name: Restock
        entry: {event: product_back_in_stock}
        steps:
          - id: notify
            send:
              template: restock
              channels: [email]
              only_if: "catalog('products', trigger.properties.product_id).stock > 0"
        """
    )
    reason = (
        "only_if false: catalog('products', trigger.properties.product_id).stock > 0 "
        "[catalog('products', trigger.properties.product_id).stock = 0]"
    )
    with api.db.session() as session:
        version = session.scalars(select(JourneyVersion.version)).one()
        session.add(
            Delivery(
                idempotency_key="restock/c1/notify/1",
                workflow_id="restock/c1",
                journey_id="restock",
                version=version,
                step_id="notify",
                customer_id="c1",
                template="restock",
                channel=None,
                status="skipped",
                reason=reason,
            )
        )
    page = await get(api, "/journeys/restock")
    assert page.status_code == 200
    assert "only_if false (1)" in page.text
    stats = (await get(api, "/v1/journeys/restock")).json()["stats"]
    assert stats["overall"]["total"]["skipped_reasons"] == {"only_if false": 1}


async def test_patch_changes_only_the_fields_given_on_existing_items(api: Api) -> None:
    await api.start()
    assert api.client is not None
    await put(api, "/v1/catalogs/products/items", [{"id": "a", "price": 10, "stock": 4}])
    body = json.dumps([{"id": "a", "stock": 0}]).encode()
    response = await api.client.patch(
        "/v1/catalogs/products/items", content=body, headers=signed(body)
    )
    assert response.json() == {"catalog": "products", "updated": 1}, response.text
    assert (await get(api, "/v1/catalogs/products/items/a")).json() == {
        "id": "a",
        "price": 10,
        "stock": 0,
    }


async def test_patch_of_an_unknown_item_changes_nothing_and_names_it(api: Api) -> None:
    await api.start()
    assert api.client is not None
    await put(api, "/v1/catalogs/products/items", [{"id": "a", "stock": 4}])
    response = await api.client.patch(
        "/v1/catalogs/products/items",
        json=[{"id": "a", "stock": 1}, {"id": "nope", "stock": 1}],
        headers=ADMIN,
    )
    assert response.status_code == 422
    assert [p["field"] for p in response.json()["detail"]] == ["items.1"]
    assert (await get(api, "/v1/catalogs/products/items/a")).json()["stock"] == 4
