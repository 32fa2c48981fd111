"""The real Segment and RudderStack SDKs, unchanged, pointed at the running API: their
identify, track, page, screen and alias calls, sent in a batch as the SDKs send them,
give the same profiles, stored events and journey runs as our own test client's calls
to the single endpoints.

Python: `segment-analytics-python` and `rudder-sdk-python` (dev dependencies). Node:
`@segment/analytics-node` and `@rudderstack/rudder-sdk-node`, pinned in
tests/conformance/package.json and installed by `make test` (`npm ci`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics import Client as SegmentClient

from tests.api.support import CART_JOURNEY, WRITE_KEY, Api, served

CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"

PAGE_JOURNEY = """
id: pricing
name: Pricing follow-up
entry:
  event: page_viewed
  when: "event.properties.name == 'Pricing'"
steps:
  - id: pause
    wait: 1h
"""


def scenario(p: str) -> list[tuple[str, dict[str, Any]]]:
    """What every client sends (tests/conformance/send.mjs says the same), with ids
    under the prefix `p`."""
    return [
        (
            "page",
            {
                "anonymousId": f"{p}anon-1",
                "name": "Pricing",
                "category": "Docs",
                "properties": {"url": "https://shop.example/pricing"},
            },
        ),
        ("screen", {"userId": f"{p}u2", "name": "Home"}),
        (
            "identify",
            {
                "userId": f"{p}u1",
                "anonymousId": f"{p}anon-1",
                "traits": {"email": f"{p}u1@example.com", "plan": "pro"},
            },
        ),
        (
            "track",
            {
                "userId": f"{p}u1",
                "event": "cart_abandoned",
                "properties": {"cart_id": "c1", "cart_total": 42},
            },
        ),
        ("alias", {"userId": f"{p}u1", "previousId": f"{p}anon-2"}),
        (
            "track",
            {
                "userId": f"{p}u2",
                "event": "cart_abandoned",
                "properties": {"cart_id": "c2", "cart_total": 7},
            },
        ),
    ]


async def ours(api: Api, p: str) -> None:
    for kind, body in scenario(p):
        response = await api.post(f"/v1/{kind}", body)
        assert response.status_code == 200, response.text


def python_sdk(kind: str, base_url: str, p: str) -> None:
    """The Python SDK's own calls, queued and flushed as one batch."""
    errors: list[Any] = []

    def on_error(error: Any, _batch: Any) -> None:
        errors.append(error)

    options: dict[str, Any] = {
        "host": base_url,
        "upload_size": 100,
        "max_retries": 0,
        "on_error": on_error,
        "sync_mode": False,
    }
    client: Any = (
        SegmentClient(WRITE_KEY, **options)
        if kind == "segment"
        else RudderClient(WRITE_KEY, **options)
    )
    for method, body in scenario(p):
        args = {_snake(k): v for k, v in body.items()}
        if method in ("page", "screen"):
            args.setdefault("user_id", None)
        getattr(client, method)(**args)
    client.flush()
    client.shutdown()
    assert errors == [], errors


def _snake(name: str) -> str:
    return {"userId": "user_id", "anonymousId": "anonymous_id", "previousId": "previous_id"}.get(
        name, name
    )


def snapshot(api: Api, p: str) -> dict[str, Any]:
    """Profiles, events and runs of the customers under prefix `p`, with the prefix
    taken out (so that every client's can be compared) and times left out."""

    def strip(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(p, "")
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    with api.db.session() as session:
        from sqlalchemy import select

        from journeyman.storage.models import Customer

        customers = session.scalars(select(Customer).where(Customer.id.startswith(p))).all()
        profiles = {
            strip(c.id): strip(
                {
                    "email": c.email,
                    "traits": c.traits,
                    "merged_into": c.merged_into,
                    "identified": c.identified_at is not None,
                }
            )
            for c in customers
        }
    events = [
        strip([e.type, e.name, e.customer_id, e.properties])
        for e in api.events()
        if e.customer_id.startswith(p)
    ]
    runs = sorted(strip(r.workflow_id) for r in api.runs() if r.customer_id.startswith(p))
    return {"profiles": profiles, "events": events, "runs": runs}


async def settle(api: Api) -> None:
    """Hand over what the client sent, once it has all arrived (so that the page view
    of a visitor who identified in the same session enters as the known customer,
    whichever way the calls came)."""
    await api.dispatch()


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    if found is None or not (CONFORMANCE / "node_modules").is_dir():
        pytest.skip(
            "the Node SDKs are not installed: `make test` runs `npm ci` in tests/conformance"
        )
    return found


@pytest.mark.temporal
@pytest.mark.database_incidental
async def test_every_sdk_gives_the_profiles_and_runs_of_our_own_client(api: Api, node: str) -> None:
    app = await api.start(CART_JOURNEY, PAGE_JOURNEY)
    await ours(api, "ours-")
    await settle(api)
    expected = snapshot(api, "ours-")
    # What the scenario means, so that agreeing on something wrong does not pass.
    assert expected["profiles"]["u1"] == {
        "email": "u1@example.com",
        "traits": {"plan": "pro"},
        "merged_into": None,
        "identified": True,
    }
    assert expected["profiles"]["anon-1"]["merged_into"] == "u1"
    assert expected["profiles"]["anon-2"]["merged_into"] == "u1"
    assert expected["runs"] == ["cart/u1/c1", "cart/u2/c2", "pricing/u1"]
    assert [e[1] for e in expected["events"]] == [
        "page_viewed",
        "screen_viewed",
        None,
        "trait_changed",  # plan: none → pro (the email is a contact point, not a trait)
        "cart_abandoned",
        None,
        "cart_abandoned",
    ]
    async with served(app) as base_url:
        for kind in ("segment", "rudderstack"):
            await asyncio.to_thread(python_sdk, kind, base_url, f"{kind}-py-")
            await settle(api)
        for kind in ("segment", "rudderstack"):
            done = await asyncio.to_thread(
                subprocess.run,
                [node, "send.mjs", kind, base_url, WRITE_KEY, f"{kind}-node-"],
                cwd=CONFORMANCE,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            await settle(api)
    for prefix in ("segment-py-", "rudderstack-py-", "segment-node-", "rudderstack-node-"):
        assert snapshot(api, prefix) == expected, prefix
