"""`journeyman db upgrade|current|revision`: the schema, with Alembic."""

from __future__ import annotations

from typing import Annotated

import typer

from journeyman.cli.common import _migrated, command_group
from journeyman.settings import get_settings

# -- database -------------------------------------------------------------------------


db_app = command_group("db", "The database schema: migrations with Alembic.")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate DATABASE_URL to the newest schema (dev, the worker and the API do it at
    start-up; run it by hand before rolling out several workers at once)."""
    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        before = migrate.current(db)
        _migrated(db)
        after = migrate.current(db)
    finally:
        db.dispose()
    if before == after:
        typer.echo(f"database already at {after}")
    else:
        typer.echo(f"database upgraded from {before or 'empty'} to {after}")


@db_app.command("current")
def db_current() -> None:
    """The schema revision DATABASE_URL is at, and the newest one."""
    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    db = Database(get_settings().database_url)
    try:
        typer.echo(f"current {migrate.current(db) or 'none'}, newest {migrate.head()}")
    finally:
        db.dispose()


@db_app.command("revision")
def db_revision(
    message: Annotated[str, typer.Option("-m", "--message", help="What changed.")],
) -> None:
    """For developers: write the next migration from the models (review it!) against a
    scratch SQLite database at the current head."""
    import tempfile

    from journeyman.storage import migrate
    from journeyman.storage.db import Database

    with tempfile.TemporaryDirectory() as folder:
        db = Database(f"sqlite:///{folder}/scratch.db")
        try:
            migrate.upgrade(db)
            migrate.revision(db, message)
        finally:
            db.dispose()
