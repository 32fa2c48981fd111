"""Segment's own Python library, pointed at a real server, drives journeys unchanged."""

from __future__ import annotations

import asyncio

import pytest
from segment.analytics import Client

from tests.api.support import CART_JOURNEY, WRITE_KEY, Api, served


@pytest.mark.temporal
async def test_segment_library_identify_and_track_start_the_journey(api: Api) -> None:
    app = await api.start(CART_JOURNEY, run_dispatcher=True)
    assert api.dispatcher is not None
    async with served(app) as base_url:
        for gzip in (False, True):
            segment = Client(WRITE_KEY, host=base_url, sync_mode=True, gzip=gzip, max_retries=0)
            user = f"user-{int(gzip)}"
            await asyncio.to_thread(
                segment.identify, user, {"email": f"{user}@example.com", "tier": "gold"}
            )
            await asyncio.to_thread(
                segment.track, user, "cart_abandoned", {"cart_id": "c1", "cart_total": 30}
            )
            async with asyncio.timeout(30):
                await api.dispatcher.idle()

    assert sorted(r.workflow_id for r in api.runs()) == ["cart/user-0/c1", "cart/user-1/c1"]
    customer = api.customer("user-1")
    assert customer is not None
    assert (customer.email, customer.traits) == ("user-1@example.com", {"tier": "gold"})
    [track] = [
        e
        for e in api.events()
        if e.type == "track" and e.customer_id == "user-1" and e.name != "trait_changed"
    ]
    assert track.properties == {"cart_id": "c1", "cart_total": 30}
    await api.harness.result("cart/user-1/c1")
    assert "user-1@example.com" in [m.to for m in api.outbox()]


async def test_segment_library_sees_a_bad_write_key_refused(api: Api) -> None:
    app = await api.start(CART_JOURNEY)
    errors: list[Exception] = []
    async with served(app) as base_url:
        segment = Client(
            "wk_wrong",
            host=base_url,
            sync_mode=True,
            max_retries=0,
            on_error=lambda error, _batch: errors.append(error),
        )
        try:
            await asyncio.to_thread(segment.track, "u1", "cart_abandoned")
        except Exception as exc:  # sync mode raises where the queue would call on_error
            errors.append(exc)
    assert [getattr(e, "status", None) for e in errors] == [401]
    assert api.events() == []
