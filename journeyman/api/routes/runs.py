"""Operator controls over HTTP: one run's state and path, skip its wait, move it, end it;
pause and resume a whole journey. Each action is recorded with who and why (see
journeyman/operations/controls.py); a run's refusal comes back as 409 with the run's own message."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Depends
from temporalio.client import Client

from journeyman.api.deps import DatabaseDep, RouterDep, require_admin
from journeyman.api.errors import ApiError
from journeyman.api.schemas import (
    OperatorBody,
    PathEntryView,
    PauseView,
    ResumeView,
    RunControlView,
    RunStateView,
)
from journeyman.api.views import view_of
from journeyman.contracts import OperatorRequest
from journeyman.operations import controls

router = APIRouter(tags=["operator controls"], dependencies=[Depends(require_admin)])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such run or journey"},
    409: {"description": "refused: the run's validator said why, or it is finished"},
    422: {"description": "who, why or the step missing"},
}
STATUS = {"not_found": 404, "rejected": 409, "invalid": 422}


@router.get("/v1/runs/{workflow_id:path}", response_model=RunStateView, responses={404: {}})
async def read_run(workflow_id: str, journeys: RouterDep) -> RunStateView:
    """Where the run is, and the path that led there (the workflow's `state` query)."""
    try:
        view = await controls.show_run(journeys.client, workflow_id)
    except controls.ControlError as exc:
        raise _error(exc, "workflow_id") from None
    return view_of(
        RunStateView,
        view.state,
        workflow_id=view.workflow_id,
        status=view.status,
        path=[view_of(PathEntryView, p) for p in view.state.path],
    )


@router.post(
    "/v1/runs/{workflow_id:path}/skip-wait", response_model=RunControlView, responses=ERRORS
)
async def skip_wait(
    workflow_id: str, body: OperatorBody, journeys: RouterDep, db: DatabaseDep
) -> RunControlView:
    """End the current wait now, as if its timer fired (a wait_for: as its timeout)."""
    return await _control(workflow_id, "skip-wait", body, journeys.client, db)


@router.post("/v1/runs/{workflow_id:path}/move", response_model=RunControlView, responses=ERRORS)
async def move(
    workflow_id: str, body: OperatorBody, journeys: RouterDep, db: DatabaseDep
) -> RunControlView:
    """Go to step `to` once the current step is interrupted (a wait) or done."""
    return await _control(workflow_id, "move", body, journeys.client, db)


@router.post("/v1/runs/{workflow_id:path}/end", response_model=RunControlView, responses=ERRORS)
async def end(
    workflow_id: str, body: OperatorBody, journeys: RouterDep, db: DatabaseDep
) -> RunControlView:
    """Finish the run now, with outcome `ended_by_operator`."""
    return await _control(workflow_id, "end", body, journeys.client, db)


@router.post("/v1/journeys/{journey_id}/pause", response_model=PauseView, responses=ERRORS)
async def pause(journey_id: str, body: OperatorBody, journeys: RouterDep) -> PauseView:
    """Hold new entries and sends of the journey until it is resumed."""
    known = set(journeys.catalog.compiled)
    try:
        await asyncio.to_thread(controls.pause, journeys.db, known, journey_id, body.who, body.why)
    except controls.ControlError as exc:
        raise _error(exc, "journey_id") from None
    control = await asyncio.to_thread(controls.paused, journeys.db, journey_id)
    assert control is not None
    return PauseView(
        journey_id=journey_id,
        paused=True,
        paused_by=control.paused_by,
        reason=control.reason,
        at=control.at,
    )


@router.post("/v1/journeys/{journey_id}/resume", response_model=ResumeView, responses=ERRORS)
async def resume(journey_id: str, body: OperatorBody, journeys: RouterDep) -> ResumeView:
    """Lift the pause: held entries enter if they still apply, held sends go out now."""
    try:
        report = await controls.resume(journeys, journey_id, body.who, body.why)
    except controls.ControlError as exc:
        raise _error(exc, "journey_id") from None
    return ResumeView(
        journey_id=journey_id,
        entered=report.entered,
        skipped=[str(skipped) for skipped in report.skipped],
        woken=report.woken,
    )


async def _control(
    workflow_id: str,
    action: Literal["skip-wait", "move", "end"],
    body: OperatorBody,
    client: Client,
    db: DatabaseDep,
) -> RunControlView:
    request = OperatorRequest(who=body.who, why=body.why, to=body.to)
    try:
        detail = await controls.control_run(client, db, workflow_id, action, request)
    except controls.ControlError as exc:
        raise _error(exc, "workflow_id") from None
    return RunControlView(workflow_id=workflow_id, action=action, detail=detail)


def _error(exc: controls.ControlError, subject: str) -> ApiError:
    # An invalid body's message starts with the field: "who is required: ...".
    field = exc.message.split(" ", 1)[0] if exc.kind == "invalid" else subject
    return ApiError(
        STATUS[exc.kind],
        exc.message,
        [{"field": field, "message": exc.message, "type": exc.kind}],
    )
