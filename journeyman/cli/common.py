"""The `journeyman` app and what every command group shares: one-line failures, problem
lists, the hard exit after Temporal, and the `journeyman dev` state every command finds."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar

import typer

from journeyman.dsl import JourneyError, Problem
from journeyman.dsl.compiler import CHANNEL_FILES
from journeyman.settings import Settings

if TYPE_CHECKING:
    from journeyman.storage.db import Database


P = ParamSpec("P")
R = TypeVar("R")


class _Journeyman(typer.Typer):
    """The app run as a console script: commands that used Temporal end the process with
    `os._exit` once their output is flushed. The SDK's Rust threads can outlive the event
    loop and abort the interpreter's shutdown ("PyGILState_Release ... must be current",
    temporalio/sdk-python#300), turning a clean exit into status 134."""

    hard_exit = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            super().__call__(*args, **kwargs)
        except SystemExit as exc:
            if not _Journeyman.hard_exit:
                raise
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


def _uses_temporal() -> None:
    _Journeyman.hard_exit = True


def _next_to_dev(ctx: typer.Context) -> None:
    # Every command but `dev` itself finds what a `journeyman dev` of this folder keeps
    # (payload key, Temporal address) when the environment does not say otherwise.
    if ctx.invoked_subcommand != "dev":
        from journeyman.operations import devstate

        before = devstate.apply()
        ctx.call_on_close(lambda: devstate.restore(before))


app = _Journeyman(
    name="journeyman",
    help="Marketing journeys as YAML, run as durable Temporal workflows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    callback=_next_to_dev,
)

CHANNELS = tuple(CHANNEL_FILES)


def _fail(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(1)


def _problems(problems: list[Problem]) -> None:
    for problem in problems:
        typer.echo(str(problem), err=True)


def reports_problems(command: Callable[P, R]) -> Callable[P, R]:
    """For a command that compiles journeys: files with problems end it with one
    `file:line:col: message` line per problem on stderr and exit status 1, never a
    traceback. Put it under `@app.command()`."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except JourneyError as exc:
            _problems(exc.problems)
            raise typer.Exit(1) from None

    return run


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _migrated(db: Any) -> None:
    """Bring the configured database to the current schema, or stop saying why."""
    from journeyman.storage import migrate

    try:
        migrate.upgrade(db)
    except migrate.MigrationError as exc:
        _fail(str(exc))


def command_group(name: str, help: str) -> typer.Typer:
    """A group of commands, `journeyman NAME ...`; run without a command, its help."""
    group = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


@contextlib.contextmanager
def migrated_database(settings: Settings | None = None) -> Iterator[Database]:
    """The configured database brought to the current schema (or stop saying why),
    disposed when the block ends."""
    from journeyman.settings import get_settings
    from journeyman.storage.db import Database

    db = Database((settings or get_settings()).database_url)
    try:
        _migrated(db)
        yield db
    finally:
        db.dispose()


def _catalog_files(specs: list[str] | None) -> dict[str, Any]:
    """simulate and backtest `--catalog NAME=FILE`: the catalogs, or stop saying why."""
    from journeyman.messaging import catalogs

    try:
        return catalogs.read_catalog_files(specs or [])
    except catalogs.CatalogError as exc:
        _fail(str(exc))


def _preview_lookups(given: dict[str, Any]) -> dict[str, Any]:
    """`catalog()` over the files of `--catalog`; `viewed_products()` their first items."""
    items = {name: {item.id: item.data for item in found} for name, found in given.items()}

    def catalog(name: Any, ident: Any) -> Any:
        return items.get(name, {}).get(str(ident))

    def viewed_products(limit: Any = 3, catalog: Any = "products", within: Any = None) -> Any:
        now = datetime.now(UTC)
        return [
            {**item, "viewed_at": now} for item in list(items.get(catalog, {}).values())[:limit]
        ]

    return {"catalog": catalog, "viewed_products": viewed_products}


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [f"{c!s:<{w}}" for c, w in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, str(row[-1])]).rstrip())


async def _running_steps(
    settings: Settings, journey: str, version: str | None
) -> dict[str, int] | None:
    """Running runs by step from Temporal's visibility; None when it cannot be asked."""
    from temporalio.service import RPCError

    from journeyman.insight.stats import running_steps
    from journeyman.platform.temporal import connect

    try:
        client = await asyncio.wait_for(connect(settings), timeout=5)
        return await asyncio.wait_for(running_steps(client, journey, version), timeout=20)
    except (RuntimeError, TimeoutError, RPCError):
        return None
