"""An entry is tied to its trigger's message id before the run starts: a crash between
the start and its record, then the event routed again, never starts a second run, even
under `reentry: always` (journeyman/events/claims.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from journeyman.contracts import CustomerEvent
from journeyman.events.routing import RouteResult
from journeyman.storage.models import JourneyRun
from tests.api.support import SERVER_KEY, Api

pytestmark = pytest.mark.temporal

ALWAYS_JOURNEY = """
id: receipt
name: Receipt
entry:
  event: order_placed
  reentry: always
steps:
  - id: thanks
    send: {template: thanks, channels: [email]}
"""


class CrashAfterStart:
    """The real router, whose first record of a started run fails, as if the process
    died between the start and its record."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.crashed = False
        original = real._record_run

        def record_run(*args: Any) -> bool:
            if not self.crashed:
                self.crashed = True
                raise ConnectionError("the process died here")
            recorded: bool = original(*args)
            return recorded

        real._record_run = record_run

    async def route(self, customer_id: str, event: CustomerEvent) -> RouteResult:
        result: RouteResult = await self.real.route(customer_id, event)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


async def test_reentry_always_never_starts_twice_for_one_event(api: Api) -> None:
    await api.start(ALWAYS_JOURNEY, router=CrashAfterStart)
    identify = {"userId": "u1", "traits": {"email": "u1@example.com"}}
    assert (await api.post("/v1/identify", identify, write_key=SERVER_KEY)).status_code == 200
    order = {"userId": "u1", "event": "order_placed", "messageId": "o1"}
    assert (await api.post("/v1/track", order)).status_code == 200
    first = await api.dispatch()
    assert first.failed == 1  # started, then "crashed" before the record
    await api.harness.result("receipt/u1")  # the run it started finishes
    api.clock.advance(timedelta(minutes=1))
    second = await api.dispatch()
    assert second.dispatched == 1
    with api.db.session() as session:
        runs = session.scalars(select(JourneyRun).where(JourneyRun.journey_id == "receipt")).all()
        assert [r.trigger_message_id for r in runs] == ["o1"]
    assert len(api.outbox()) == 1  # one run, one message
    # A later order is a new entry, as reentry: always says.
    again = {"userId": "u1", "event": "order_placed", "messageId": "o2"}
    assert (await api.post("/v1/track", again)).status_code == 200
    assert (await api.dispatch()).dispatched == 1
    await api.harness.result("receipt/u1")
    assert len(api.outbox()) == 2
