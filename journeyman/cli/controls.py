"""Operator controls: `run show|skip-wait|move|end`, `split stop`, `pause`, `resume`."""

from __future__ import annotations

import asyncio
from datetime import UTC
from typing import Annotated, Any

import typer

from journeyman.cli.common import (
    _fail,
    _uses_temporal,
    app,
    command_group,
    migrated_database,
    reports_problems,
)
from journeyman.settings import Settings, get_settings

# -- operator controls ----------------------------------------------------------------

run_app = command_group("run", "Steer one journey run: show it, skip its wait, move it, end it.")

WhoOption = Annotated[str, typer.Option(help="Who does this (recorded with the action).")]
WhyOption = Annotated[str, typer.Option(help="Why (recorded with the action).")]
WorkflowIdArgument = Annotated[
    str, typer.Argument(help="The run's workflow id, as `journeyman runs` lists it.")
]


split_app = command_group("split", "Operate an optimized split (`split.optimize`): stop a case.")


@split_app.command("stop")
def split_stop(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    step: Annotated[str, typer.Argument(help="The split step's id.")],
    case: Annotated[str, typer.Argument(help="The case to stop: its goto.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Stop a case of a split: from its next choice on, nobody new takes it."""
    from journeyman.optimization.splits import SplitError, stop_case

    try:
        with migrated_database() as db:
            stop_case(db, journey, step, case, who, why)
    except SplitError as exc:
        _fail(str(exc))
    typer.echo(f"stopped case {case} of split {step} in {journey}: new customers take the others")


@run_app.command("show")
def run_show(workflow_id: WorkflowIdArgument) -> None:
    """The run's status, current step and path so far."""
    from journeyman.operations import controls

    _uses_temporal()

    async def show() -> controls.RunView:
        client = await _operator_client(get_settings())
        return await controls.show_run(client, workflow_id)

    view = _control(show)
    for line in run_lines(view):
        typer.echo(line.rstrip())


@run_app.command("skip-wait")
def run_skip_wait(workflow_id: WorkflowIdArgument, who: WhoOption, why: WhyOption) -> None:
    """End the run's current wait now, as if its timer fired (a wait_for: as its timeout)."""
    _run_control(workflow_id, "skip-wait", who, why)


@run_app.command("move")
def run_move(
    workflow_id: WorkflowIdArgument,
    to: Annotated[str, typer.Option(help="The id of the step to go to.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Go to step TO once the current step is interrupted (a wait) or done."""
    _run_control(workflow_id, "move", who, why, to)


@run_app.command("end")
def run_end(workflow_id: WorkflowIdArgument, who: WhoOption, why: WhyOption) -> None:
    """Finish the run now, with outcome `ended_by_operator`."""
    _run_control(workflow_id, "end", who, why)


@app.command()
@reports_problems
def pause(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Pause a journey: new entries are held, sends are held; runs keep their place."""
    from journeyman.events.routing import Catalog
    from journeyman.operations import controls

    settings = get_settings()
    known = set(Catalog.from_dirs(settings.journeys_dir, settings.templates_dir).compiled)
    try:
        with migrated_database(settings) as db:
            known |= set(_served(db, Catalog([])).compiled)  # live, whatever the files say
            controls.pause(db, known, journey, who, why)
    except controls.ControlError as exc:
        _fail(exc.message)
    typer.echo(
        f"paused {journey}: new entries and sends are held until `journeyman resume {journey}`"
    )


@app.command()
@reports_problems
def resume(
    journey: Annotated[str, typer.Argument(help="The journey id.")],
    who: WhoOption,
    why: WhyOption,
) -> None:
    """Resume a paused journey: held entries enter (if they still apply), held sends go."""
    from journeyman.events.routing import Catalog, Router
    from journeyman.operations import controls

    settings = get_settings()
    _uses_temporal()
    catalog = Catalog.from_dirs(settings.journeys_dir, settings.templates_dir)
    with migrated_database(settings) as db:
        catalog.register(db)
        catalog = _served(db, catalog)

        async def go() -> controls.ResumeReport:
            client = await _operator_client(settings)
            router = Router(
                client, db, catalog, settings.task_queue, default_timezone=settings.default_timezone
            )
            return await controls.resume(router, journey, who, why)

        report = _control(go)
    typer.echo(f"resumed {journey}: {report.summary()}")
    for skipped in report.skipped:
        typer.echo(f"  held entry not entered: {skipped.reason}")


def _control(call: Any) -> Any:
    """Run an operator control (a coroutine function); a refusal is one line on stderr
    and exit status 1."""
    from temporalio.service import RPCError

    from journeyman.operations import devstate
    from journeyman.operations.controls import ControlError

    try:
        return asyncio.run(call())
    except ControlError as exc:
        _fail(exc.message)
    except RPCError as exc:
        _fail(f"Temporal answered: {exc.message}")
    except Exception as exc:
        if devstate.is_undecodable(exc):
            _fail(devstate.missing_key_message())
        raise


async def _operator_client(settings: Settings) -> Any:
    from journeyman.platform.temporal import connect

    try:
        return await asyncio.wait_for(connect(settings), timeout=10)
    except (RuntimeError, TimeoutError) as exc:
        address = settings.temporal_address or "localhost:7233"
        _fail(f"cannot reach Temporal at {address} ({exc}); is `journeyman dev` running?")


def _run_control(workflow_id: str, action: str, who: str, why: str, to: str | None = None) -> None:
    from journeyman.contracts import OperatorRequest
    from journeyman.operations import controls

    settings = get_settings()
    _uses_temporal()
    with migrated_database(settings) as db:

        async def go() -> str:
            client = await _operator_client(settings)
            request = OperatorRequest(who=who, why=why, to=to)
            return await controls.control_run(client, db, workflow_id, action, request)

        detail = _control(go)
    typer.echo(f"{workflow_id}: {detail}")


def _served(db: Any, files: Any) -> Any:
    """What the service serves: the live release, or the files where nothing was ever
    published (the first start publishes them)."""
    from journeyman.operations import releases

    return releases.live_catalog(db) if releases.latest_id(db) else files


def run_lines(view: Any) -> list[str]:
    """`journeyman run show`: where the run is and the path that led there."""
    state = view.state
    at = state.current_step or "-"
    if state.waiting_for:
        at += f" (waiting for {state.waiting_for})"
    lines = [
        f"{view.workflow_id}  {view.status}",
        f"journey {state.journey_id} version {state.version}, customer {state.customer_id}"
        + (" (holdout)" if state.holdout else ""),
        f"current step: {at}",
        "",
        "path (UTC)",
    ]
    rows = [
        [
            "  " + entry.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            entry.step,
            entry.action,
            entry.detail,
        ]
        for entry in state.path
    ]
    if not rows:
        return [*lines, "  (empty)"]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return lines + [
        "  ".join([*(c.ljust(w) for c, w in zip(r[:3], widths, strict=True)), r[3]]) for r in rows
    ]
