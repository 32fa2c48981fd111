"""Operator controls, shared by `journeyman run|pause|resume` and the API.

- On one run: `skip_wait`, `move_to` and `end_run` are Temporal updates whose validators
  live in the workflow (workflows/journey.py), so a refusal (an unknown step, a finished
  run, no who or why) comes back with the workflow's own message and changes nothing.
- On a whole journey: `pause` stops new entries (the router holds them; a segment check
  enters nobody and stops) and holds sends (the send activity defers while paused);
  `resume` lifts it, enters the held entries that still apply, signals `wake` to the
  journey's running runs so a held send goes out now rather than at the end of its
  deferral, and lets a broadcast whose check the pause stopped go on.

Every action that took effect is recorded in `operator_actions` with who, why and when.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from journeyman.audiences import schedules, segments
from journeyman.contracts import OperatorRequest, RunStatus
from journeyman.events.routing import Router, Skipped
from journeyman.names import (
    END_RUN_UPDATE,
    JOURNEY_ID,
    MOVE_TO_UPDATE,
    SKIP_WAIT_UPDATE,
    STATE_QUERY,
)
from journeyman.storage.db import Database
from journeyman.storage.models import HeldEntry, JourneyControl, JourneyVersion, OperatorAction

# The controls on one run, by the name the CLI and the API use, to the update's name.
RUN_ACTIONS = {"skip-wait": SKIP_WAIT_UPDATE, "move": MOVE_TO_UPDATE, "end": END_RUN_UPDATE}


class ControlError(Exception):
    """An action that cannot be done, said so that an operator can act on it.

    `kind`: `not_found` (no such run or journey), `invalid` (who, why or the step
    missing), `rejected` (refused by the run's validator, or the run is finished).
    """

    def __init__(self, message: str, kind: Literal["not_found", "invalid", "rejected"]) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


@dataclass
class RunView:
    """A run as operators see it: Temporal's status and the run's own state and path."""

    workflow_id: str
    status: str  # running | completed | terminated | ...
    state: RunStatus


@dataclass
class ResumeReport:
    entered: list[str] = field(default_factory=list)  # workflow ids of held entries
    skipped: list[Skipped] = field(default_factory=list)  # held entries that no longer apply
    woken: list[str] = field(default_factory=list)  # running runs signalled `wake`
    broadcast: str | None = None  # the broadcast's check, started again where it stopped

    def summary(self) -> str:
        entered, skipped, woken = len(self.entered), len(self.skipped), len(self.woken)
        text = (
            f"{entered} held {'entry' if entered == 1 else 'entries'} entered, "
            f"{skipped} no longer {'applies' if skipped == 1 else 'apply'}, "
            f"{woken} running {'run' if woken == 1 else 'runs'} woken"
        )
        if self.broadcast is not None:
            text += f"; the broadcast goes on ({self.broadcast})"
        return text


# -- one run --------------------------------------------------------------------------


async def show_run(client: Client, workflow_id: str) -> RunView:
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
        state = await handle.query(STATE_QUERY, result_type=RunStatus)
    except RPCError as exc:
        _not_found(workflow_id, exc)
        raise
    except WorkflowQueryFailedError as exc:
        raise ControlError(
            f"run {workflow_id}: the state query failed: {exc}", "rejected"
        ) from None
    return RunView(workflow_id, _status(description.status), state)


async def control_run(
    client: Client, db: Database, workflow_id: str, action: str, request: OperatorRequest
) -> str:
    """Apply `action` (`skip-wait`, `move`, `end`) to the run; returns what its path
    records. Raises ControlError when the run is unknown, finished, or refuses."""
    update = RUN_ACTIONS.get(action)
    if update is None:
        raise ControlError(f"unknown action {action!r}: use " + ", ".join(RUN_ACTIONS), "invalid")
    _require(request.who, request.why)
    if update == MOVE_TO_UPDATE and not request.to:
        raise ControlError("to is required: the id of the step to move to", "invalid")
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        _not_found(workflow_id, exc)
        raise
    if description.status != WorkflowExecutionStatus.RUNNING:
        raise ControlError(
            f"run {workflow_id} is finished ({_status(description.status)})", "rejected"
        )
    try:
        # The result is read after the update is done, on its own: a result this process
        # cannot decode (no payload key) must not turn an action taken into a failure.
        raw = await handle.execute_update(update, request, result_type=RawValue)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        reason = cause.message if isinstance(cause, ApplicationError) else str(cause)
        raise ControlError(f"run {workflow_id} refused {update}: {reason}", "rejected") from None
    except RPCError as exc:
        _not_found(workflow_id, exc)
        raise
    detail = await _decoded_detail(client, raw, action)
    journey_id = description.typed_search_attributes.get(JOURNEY_ID) or workflow_id.split("/")[0]
    await asyncio.to_thread(
        _audit, db, journey_id, workflow_id, update, request.who, request.why, detail
    )
    return detail


async def _decoded_detail(client: Client, raw: RawValue, action: str) -> str:
    """What the run recorded for an update it applied; when this process has no key to
    read it, that the update was applied (it was) and why the detail is missing."""
    try:
        (detail,) = await client.data_converter.decode([raw.payload], [str])
    except (KeyError, ValueError) as exc:
        from journeyman.operations.devstate import is_undecodable, missing_key_message

        if not is_undecodable(exc):
            raise
        return f"{action} done (its detail is not readable here: {missing_key_message()})"
    return str(detail)


def _status(status: WorkflowExecutionStatus | None) -> str:
    return status.name.lower() if status is not None else "unknown"


def _not_found(workflow_id: str, exc: RPCError) -> None:
    """A NOT_FOUND answer as a ControlError; any other is left to the caller."""
    if exc.status == RPCStatusCode.NOT_FOUND:
        raise ControlError(f"no run {workflow_id}: {exc.message}", "not_found") from None


# -- a whole journey ------------------------------------------------------------------


def pause(db: Database, known: set[str], journey_id: str, who: str, why: str) -> None:
    """Pause `journey_id` (pausing again updates who and why). `known`: the journey ids
    in force; a journey only registered in the database counts too."""
    _require(who, why)
    now = datetime.now(UTC)
    with db.session() as session:
        _known(session, known, journey_id)
        control = session.get(JourneyControl, journey_id)
        if control is None:
            control = JourneyControl(journey_id=journey_id)
            session.add(control)
        control.paused, control.paused_by, control.reason, control.at = True, who, why, now
        session.add(
            OperatorAction(
                journey_id=journey_id, action="pause", who=who, why=why, detail=None, at=now
            )
        )


async def resume(router: Router, journey_id: str, who: str, why: str) -> ResumeReport:
    """Lift the pause, wake the running runs, enter the held entries.

    Waking first: the runs the pause held are woken, and the runs the held entries start
    are not signalled for nothing (they start unpaused) in their first moments."""
    _require(who, why)
    await asyncio.to_thread(_unpause, router.db, set(router.catalog.compiled), journey_id)
    woken = await router.wake(journey_id)
    released = await router.release_held(journey_id)
    report = ResumeReport(released.entered, released.skipped, woken)
    report.broadcast = await _resume_broadcast(router, journey_id)
    await asyncio.to_thread(
        _audit, router.db, journey_id, None, "resume", who, why, report.summary()
    )
    return report


async def _resume_broadcast(router: Router, journey_id: str) -> str | None:
    """A broadcast whose check the pause stopped goes on from where it stopped (the same
    tick, so nobody it entered enters again); the id of that check's run, else None.
    A recurring segment needs nothing: its next tick comes."""
    compiled = router.catalog.compiled.get(journey_id)
    if compiled is None or compiled.plan.journey.entry.once_at is None:
        return None
    ticks = await asyncio.to_thread(segments.latest_ticks, router.db, journey_id, 1)
    if not ticks or ticks[0].status != "paused":
        return None
    handle = await schedules.start_tick(
        router.client, compiled.plan, tick_id=ticks[0].tick_id, task_queue=router.task_queue
    )
    return handle.id


def paused(db: Database, journey_id: str) -> JourneyControl | None:
    """The journey's pause, if it is paused."""
    with db.session() as session:
        control = session.get(JourneyControl, journey_id)
        return control if control is not None and control.paused else None


def _unpause(db: Database, known: set[str], journey_id: str) -> None:
    with db.session() as session:
        _known(session, known, journey_id)
        control = session.get(JourneyControl, journey_id)
        held = session.scalar(select(HeldEntry.id).where(HeldEntry.journey_id == journey_id))
        if (control is None or not control.paused) and held is None:
            raise ControlError(f"journey {journey_id} is not paused", "rejected")
        if control is not None:
            control.paused, control.at = False, datetime.now(UTC)


def _known(session: Session, known: set[str], journey_id: str) -> None:
    if journey_id in known:
        return
    registered = session.scalar(
        select(JourneyVersion.journey_id).where(JourneyVersion.journey_id == journey_id).limit(1)
    )
    if registered is None:
        raise ControlError(f"no journey {journey_id!r}", "not_found")


# -- both -----------------------------------------------------------------------------


def _require(who: str, why: str) -> None:
    if not who or not who.strip():
        raise ControlError("who is required: the name of the operator", "invalid")
    if not why or not why.strip():
        raise ControlError("why is required: the reason for the action", "invalid")


def _audit(
    db: Database,
    journey_id: str,
    workflow_id: str | None,
    action: str,
    who: str,
    why: str,
    detail: str | None,
) -> None:
    with db.session() as session:
        session.add(
            OperatorAction(
                journey_id=journey_id,
                workflow_id=workflow_id,
                action=action,
                who=who,
                why=why,
                detail=detail,
                at=datetime.now(UTC),
            )
        )
