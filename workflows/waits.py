"""Waiting, with goal and exit watched throughout.

A `goal` event ends the run as converted and an `exit` event as exited at any step,
including while a wait, a wait_for or a deferred send is pending; the operator's
controls (`skip_wait`, `move_to`, `end_run`) interrupt a wait too, and `wake` ends a
deferred send's wait early. Before it blocks, the run shows where it stays and writes
its path (by era: workflows/steplog.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow

from journeyman.contracts import CustomerEvent
from journeyman.dsl.model import EventRule, WaitFor
from workflows.conditions import Conditions
from workflows.options import HEARD_KEPT, Finished, Moved


class Waits(Conditions):
    async def _wait(
        self,
        until: datetime,
        rule: EventRule | WaitFor | None,
        summary: str,
        *,
        deferral: bool = False,
    ) -> CustomerEvent | None:
        """Sleep until `until`, or until an event matches `rule`; goal/exit interrupt, and
        so do the operator's controls. A `deferral` (a send's) also ends on `wake`."""

        def woken() -> bool:
            return bool(self._inbox) or self._operator_pending() or (deferral and self._wake)

        self._waiting = True
        try:
            while True:
                await self._check_interrupts(rule_for_wait=rule)
                if self._matched is not None:
                    matched, self._matched = self._matched, None
                    return matched
                if self._skip or (deferral and self._wake):
                    return None
                await self._book.stay()
                remaining = until - workflow.now()
                if remaining <= timedelta(0):
                    return None
                try:
                    await workflow.wait_condition(woken, timeout=remaining, timeout_summary=summary)
                except TimeoutError:
                    return None
        finally:
            self._waiting = False
            self._skip = False
            if deferral:
                self._wake = False

    async def _check_interrupts(self, rule_for_wait: EventRule | WaitFor | None = None) -> None:
        """The operator's end or move first; then the inbox in order: a goal or exit ends
        the run, a match ends a wait."""
        plan = self._require_plan()
        state = self._require_state()
        if self._end:
            raise Finished("ended_by_operator")
        if self._move_to is not None:
            step_id, self._move_to = self._move_to, None
            raise Moved(step_id)
        while self._inbox:
            event = self._inbox.pop(0)
            state.heard.append(event)
            del state.heard[:-HEARD_KEPT]
            if plan.journey.goal and await self._matches(plan.journey.goal, event):
                state.last_event = event
                self._log(state.current or "", "converted", f"goal {event.name}")
                raise Finished("converted")
            for rule in plan.journey.exit:
                if await self._matches(rule, event):
                    state.last_event = event
                    self._log(state.current or "", "exited", f"exit on {event.name}")
                    raise Finished("exited")
            if rule_for_wait is not None and await self._matches(rule_for_wait, event):
                state.last_event = event
                self._matched = event
                return

    async def _heard_match(self, spec: WaitFor) -> CustomerEvent | None:
        """The latest event received since entry that `spec` waits for, if any."""
        for event in reversed(self._require_state().heard):
            if await self._matches(spec, event):
                return event
        return None
