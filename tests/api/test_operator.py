"""Operator controls over HTTP: one run's state and path, skip, move, end; pause, resume."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from journeyman.storage.models import OperatorAction
from tests.api.support import ADMIN_TOKEN, Api

JOURNEY = """
id: welcome
name: Welcome
entry:
  event: signed_up
steps:
  - id: wait_a_day
    wait: 1d
  - id: hello
    send: {template: hello, channels: [email]}
  - id: wait_for_order
    wait_for: {event: order_placed, timeout: 3d}
  - id: done
    end: true
"""
RUN = "welcome/u1"
ALICE = {"who": "alice", "why": "customer called support"}


async def admin_post(api: Api, path: str, body: dict[str, Any]) -> httpx.Response:
    assert api.client is not None
    return await api.client.post(
        path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )


async def entered(api: Api, customer: str = "u1") -> None:
    api.harness.customer(customer, email=f"{customer}@example.com")
    routed = await api.harness.event("signed_up", customer)
    assert routed.entered == [f"welcome/{customer}"]


@pytest.mark.temporal
async def test_run_shows_state_and_path(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api)
    response = await api.admin_get(f"/v1/runs/{RUN}")
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["workflow_id"] == RUN
    assert view["status"] == "running"
    assert view["journey_id"] == "welcome"
    assert view["current_step"] == "wait_a_day"
    assert [(p["step"], p["action"]) for p in view["path"]] == [("entry", "entered")]


@pytest.mark.temporal
async def test_unknown_run_is_404(api: Api) -> None:
    await api.start(JOURNEY)
    assert (await api.admin_get("/v1/runs/welcome/nobody")).status_code == 404
    response = await admin_post(api, "/v1/runs/welcome/nobody/end", ALICE)
    assert response.status_code == 404
    assert response.json()["error"].startswith("no run welcome/nobody")


@pytest.mark.temporal
async def test_skip_wait_sends_now_and_is_in_the_path(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api)
    response = await admin_post(api, f"/v1/runs/{RUN}/skip-wait", ALICE)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "workflow_id": RUN,
        "action": "skip-wait",
        "detail": "skip_wait by alice: customer called support",
    }
    await api.harness.sleep(timedelta(minutes=1))
    assert [m.customer_id for m in api.outbox()] == ["u1"]
    view = (await api.admin_get(f"/v1/runs/{RUN}")).json()
    assert view["current_step"] == "wait_for_order"
    assert ("wait_a_day", "operator") in [(p["step"], p["action"]) for p in view["path"]]


@pytest.mark.temporal
async def test_move_to_an_unknown_step_is_409_with_the_runs_message(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api)
    response = await admin_post(api, f"/v1/runs/{RUN}/move", {**ALICE, "to": "goodbye"})
    assert response.status_code == 409
    error = response.json()["error"]
    assert "no step 'goodbye' in journey welcome" in error
    assert "valid steps: wait_a_day, hello, wait_for_order, done" in error
    assert (await api.admin_get(f"/v1/runs/{RUN}")).json()["current_step"] == "wait_a_day"


@pytest.mark.temporal
async def test_move_and_end(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api)
    moved = await admin_post(api, f"/v1/runs/{RUN}/move", {**ALICE, "to": "wait_for_order"})
    assert moved.status_code == 200, moved.text
    await api.harness.sleep(timedelta(minutes=1))
    assert (await api.admin_get(f"/v1/runs/{RUN}")).json()["current_step"] == "wait_for_order"
    ended = await admin_post(api, f"/v1/runs/{RUN}/end", {"who": "bob", "why": "test account"})
    assert ended.status_code == 200, ended.text
    result = await api.harness.result(RUN)
    assert result.outcome == "ended_by_operator"
    again = await admin_post(api, f"/v1/runs/{RUN}/end", {"who": "bob", "why": "again"})
    assert again.status_code == 409
    assert "is finished" in again.json()["error"]


@pytest.mark.temporal
async def test_who_and_why_are_required(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api)
    missing = await admin_post(api, f"/v1/runs/{RUN}/end", {"who": "bob"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["field"] == "why"
    blank = await admin_post(api, f"/v1/runs/{RUN}/end", {"who": " ", "why": "x"})
    assert blank.status_code == 422
    assert blank.json()["error"].startswith("who is required")
    paused = await admin_post(api, "/v1/journeys/welcome/pause", {"who": "bob", "why": ""})
    assert paused.status_code == 422


async def test_controls_need_the_admin_token(api: Api) -> None:
    await api.start(JOURNEY)
    assert api.client is not None
    response = await api.client.post(f"/v1/runs/{RUN}/end", json=ALICE)
    assert response.status_code == 401


@pytest.mark.temporal
async def test_pause_holds_entries_and_sends_resume_releases_them(api: Api) -> None:
    await api.start(JOURNEY)
    await entered(api, "u1")
    paused = await admin_post(api, "/v1/journeys/welcome/pause", ALICE)
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused_by"] == "alice"
    api.harness.customer("u2", email="u2@example.com")
    assert (await api.harness.event("signed_up", "u2")).entered == []

    await api.harness.sleep(timedelta(days=1, minutes=10))
    assert api.outbox() == []
    path = (await api.admin_get(f"/v1/runs/{RUN}")).json()["path"]
    deferred = [p for p in path if p["action"] == "deferred"]
    assert deferred[0]["detail"].startswith("journey paused by alice: customer called support")

    resumed = await admin_post(api, "/v1/journeys/welcome/resume", {"who": "alice", "why": "ok"})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["entered"] == ["welcome/u2"]
    await api.harness.sleep(timedelta(seconds=10))  # woken: no 5-minute recheck to wait for
    assert [m.customer_id for m in api.outbox()] == ["u1"]
    await api.harness.sleep(timedelta(hours=1))
    assert [m.customer_id for m in api.outbox()] == ["u1"]

    again = await admin_post(api, "/v1/journeys/welcome/resume", {"who": "alice", "why": "ok"})
    assert again.status_code == 409
    unknown = await admin_post(api, "/v1/journeys/nope/pause", ALICE)
    assert unknown.status_code == 404
    with api.db.session() as session:
        audit = [(a.action, a.who, a.why) for a in session.scalars(select(OperatorAction))]
    assert audit == [("pause", "alice", "customer called support"), ("resume", "alice", "ok")]
