"""Operators' reads, health and the API docs."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from journeyman.events.routing import Router
from tests.api.support import CART_JOURNEY, Api


async def started_cart(api: Api) -> None:
    identify = {"userId": "u1", "traits": {"email": "ana@example.com", "tier": "gold"}}
    await api.post("/v1/identify", identify)
    await api.post(
        "/v1/track",
        {"userId": "u1", "event": "cart_abandoned", "properties": {"cart_id": "c9"}},
    )
    await api.dispatch()


@pytest.mark.temporal
async def test_customer_shows_profile_active_journeys_and_events(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await started_cart(api)
    response = await api.admin_get("/v1/customers/u1")
    assert response.status_code == 200
    view = response.json()
    assert (view["id"], view["email"], view["traits"]) == (
        "u1",
        "ana@example.com",
        {"tier": "gold"},
    )
    [run] = view["active_journeys"]
    assert (run["journey_id"], run["workflow_id"], run["status"]) == (
        "cart",
        "cart/u1/c9",
        "running",
    )
    # Newest first; the identify's tier gave a trait_changed (journey DSL v2).
    assert [(e["type"], e["name"]) for e in view["recent_events"]] == [
        ("track", "cart_abandoned"),
        ("track", "trait_changed"),
        ("identify", None),
    ]
    assert view["recent_events"][0]["dispatched_at"] is not None
    assert view["recent_messages"] == []


@pytest.mark.temporal
async def test_customer_shows_messages_sent(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await started_cart(api)
    await api.harness.result("cart/u1/c9")
    view = (await api.admin_get("/v1/customers/u1")).json()
    assert view["active_journeys"] == []
    [message] = view["recent_messages"]
    assert (message["channel"], message["status"], message["to"]) == (
        "email",
        "sent",
        "ana@example.com",
    )
    assert message["template"] == "cart_reminder"


@pytest.mark.temporal
async def test_journeys_list_and_detail_with_live_counts(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await started_cart(api)
    listing = (await api.admin_get("/v1/journeys")).json()
    assert [(j["id"], j["running"], j["entered"]) for j in listing] == [("cart", 1, 1)]
    detail = (await api.admin_get("/v1/journeys/cart")).json()
    assert detail["name"] == "Cart reminder"
    assert detail["entry_event"] == "cart_abandoned"
    assert detail["audience"] is None
    assert detail["definition"]["entry"]["key"] == "event.properties.cart_id"
    [version] = detail["versions"]
    assert (version["current"], version["running"]) == (True, 1)
    assert version["version"] == detail["current_version"]
    await api.harness.result("cart/u1/c9")
    detail = (await api.admin_get("/v1/journeys/cart")).json()
    assert (detail["running"], detail["outcomes"]) == (0, {"completed": 1})


@pytest.mark.temporal
async def test_a_segment_journey_shows_its_schedule_and_latest_checks(api: Api) -> None:
    from journeyman.audiences import schedules

    await api.start(
        """
        id: lapsed
        name: Lapsed
        entry:
          segment: "count('order_placed') == 0"
          every: 1d
        steps:
          - {id: done, end: true}
        """
    )
    await api.post("/v1/identify", {"userId": "u1", "traits": {"email": "ana@example.com"}})
    plan = api.router.catalog.compiled["lapsed"].plan
    handle = await schedules.start_tick(
        api.harness.client, plan, tick_id="audience/lapsed-t1", task_queue=api.harness.task_queue
    )
    await handle.result()

    detail = (await api.admin_get("/v1/journeys/lapsed")).json()

    assert detail["entry_event"] is None
    audience = detail["audience"]
    assert (audience["segment"], audience["every"], audience["once_at"]) == (
        "count('order_placed') == 0",
        "1d",
        None,
    )
    assert audience["schedule_id"] == f"audience/{api.harness.task_queue}/lapsed"
    [check] = audience["checks"]
    assert (check["tick_id"], check["status"], check["evaluated"], check["entered"]) == (
        "audience/lapsed-t1",
        "done",
        1,
        1,
    )


async def test_unknown_journey_is_404(api: Api) -> None:
    await api.start(CART_JOURNEY)
    response = await api.admin_get("/v1/journeys/nope")
    assert response.status_code == 404
    assert response.json()["detail"][0]["field"] == "journey_id"


@pytest.mark.temporal
async def test_outbox_lists_held_messages_by_customer(api: Api) -> None:
    await api.start(CART_JOURNEY)
    await started_cart(api)
    await api.harness.result("cart/u1/c9")
    [message] = (await api.admin_get("/v1/outbox", customer="u1")).json()
    assert (message["to"], message["journey_id"], message["channel"]) == (
        "ana@example.com",
        "cart",
        "email",
    )
    assert (await api.admin_get("/v1/outbox", customer="u2")).json() == []
    assert len((await api.admin_get("/v1/outbox")).json()) == 1


@pytest.mark.temporal
async def test_health_and_readiness(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    assert (await api.client.get("/healthz")).json() == {"status": "ok", "checks": {}}
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "temporal": "ok"}


async def test_not_ready_when_temporal_is_unreachable(api: Api) -> None:
    unreachable = await Client.connect(
        "127.0.0.1:1", data_converter=pydantic_data_converter, lazy=True
    )

    def elsewhere(router: Router) -> Router:
        return Router(unreachable, router.db, router.catalog, router.task_queue)

    await api.start(CART_JOURNEY, router=elsewhere)
    assert api.client is not None
    response = await api.client.get("/readyz")
    assert response.status_code == 503
    body: dict[str, Any] = response.json()
    assert body["error"] == "not ready"
    assert [d["field"] for d in body["detail"]] == ["temporal"]


async def test_openapi_docs_are_served(api: Api) -> None:
    await api.start(CART_JOURNEY)
    assert api.client is not None
    assert (await api.client.get("/docs")).status_code == 200
    schema = (await api.client.get("/openapi.json")).json()
    assert {"/v1/track", "/v1/identify", "/v1/alias", "/v1/batch"} <= set(schema["paths"])
    assert "TrackMessage" in schema["components"]["schemas"]


async def test_openapi_documents_the_error_body_the_api_sends(api: Api) -> None:
    # Found by tests/fuzz: the schema documented FastAPI's own 422 body ({"detail":
    # [{"loc", "msg", "type"}]}) rather than ours.
    await api.start(CART_JOURNEY)
    assert api.client is not None
    schema = (await api.client.get("/openapi.json")).json()
    response = await api.admin_get("/v1/outbox", limit="many")

    assert response.status_code == 422
    documented = schema["paths"]["/v1/outbox"]["get"]["responses"]["422"]
    body_schema = {**documented["content"]["application/json"]["schema"], **schema}
    jsonschema.validate(response.json(), body_schema)
