"""The activity of a segment tick: enter every customer the segment matches.

Contract:
- `enter` walks all profiles in pages (journeyman/audiences/segments.py), evaluating the segment
  at the tick's time and entering each matching customer that the entry rules let in,
  with the router's keyed, idempotent start: the run `journey/customer`, its trigger a
  `segment_entry` event whose message id is fixed by the tick and the customer.
- Progress is durable: after each page the tick's row records the cursor and counts in
  one transaction, and the activity heartbeats. A retried tick (worker lost, Temporal
  unreachable) resumes after the last recorded page; the page in flight is evaluated
  again, and the customers it had entered are recognized by their trigger's message
  id, so nobody is entered twice and nobody is counted twice.
- A paused journey stops the tick at the next page (status `paused`); resuming a
  broadcast starts its tick again, which goes on from the cursor.

Database work runs in threads; entering (Temporal calls) runs on the worker's event loop,
`ENTER_CONCURRENCY` customers at a time.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity

from journeyman import names
from journeyman.audiences.segments import Page, begin_tick, finish_tick, pages, paused, record_page
from journeyman.audiences.segments import segment_trigger as trigger_for
from journeyman.contracts import AudienceTickInput, AudienceTickResult
from journeyman.events.routing import Catalog, Router
from journeyman.storage.db import Database
from journeyman.storage.models import AudienceTick

log = logging.getLogger(__name__)

# Starts in flight at once: enough to keep Temporal busy, few enough to leave the worker's
# event loop responsive.
ENTER_CONCURRENCY = 16


class AudienceActivities:
    def __init__(
        self, db: Database, default_timezone: str = "UTC", erasure_key: bytes | None = None
    ) -> None:
        self.db = db
        self.default_timezone = default_timezone
        self.erasure_key = erasure_key

    @activity.defn(name=names.AUDIENCE_ENTER_ACTIVITY)
    async def enter(self, inp: AudienceTickInput) -> AudienceTickResult:
        journey_id = inp.plan.journey.id
        router = Router(
            activity.client(),
            self.db,
            Catalog([]),
            activity.info().task_queue,
            default_timezone=self.default_timezone,
            erasure_key=self.erasure_key,
        )
        tick = await asyncio.to_thread(begin_tick, self.db, inp.plan, inp.tick_id, inp.kind, inp.at)
        if tick.status == "done":
            return _result(tick)
        walk = pages(
            self.db,
            inp.plan,
            inp.at,
            tick_id=inp.tick_id,
            after=tick.cursor,
            default_timezone=self.default_timezone,
        )
        while True:
            reason = await asyncio.to_thread(paused, self.db, journey_id)
            if reason is not None:
                log.info("segment tick %s stopped: %s", inp.tick_id, reason)
                return _result(await asyncio.to_thread(finish_tick, self.db, inp.tick_id, "paused"))
            page: Page | None = await asyncio.to_thread(next, walk, None)
            if page is None:
                break
            entered = await self._enter_page(router, inp, page)
            tick = await asyncio.to_thread(record_page, self.db, inp.tick_id, page, entered)
            activity.heartbeat(tick.cursor)
        tick = await asyncio.to_thread(finish_tick, self.db, inp.tick_id, "done")
        log.info(
            "segment tick %s: %d customers evaluated, %d matched, %d entered",
            inp.tick_id,
            tick.evaluated,
            tick.matched,
            tick.entered,
        )
        return _result(tick)

    async def _enter_page(self, router: Router, inp: AudienceTickInput, page: Page) -> int:
        slots = asyncio.Semaphore(ENTER_CONCURRENCY)

        async def one(customer_id: str) -> None:
            async with slots:
                trigger = trigger_for(inp.tick_id, inp.kind, customer_id, inp.at)
                await router.enter(inp.plan, customer_id, "", trigger, inp.at)

        await asyncio.gather(*(one(customer_id) for customer_id in page.enter))
        return len(page.enter)


# What a tick's result reports of its row as it is.
_RESULT_FIELDS = ("tick_id", "status", "evaluated", "matched", "entered", "errors")


def _result(tick: AudienceTick) -> AudienceTickResult:
    return AudienceTickResult(
        **{name: getattr(tick, name) for name in _RESULT_FIELDS},
        skipped=dict(tick.skipped or {}),
    )
