"""Schema migrations with Alembic: the same scripts on SQLite and PostgreSQL.

`upgrade(db)` brings a database to the newest schema; `dev`, the worker and the API
call it at start-up, and `journeyman db upgrade` does it by hand (several workers may
start at once: on PostgreSQL an advisory lock lets one migrate while the others wait).
A database made before migrations existed (tables but no `alembic_version`) is refused
with what to do, rather than guessed at.

For developers: after changing `journeyman/storage/models.py`, write the next revision
with `journeyman db revision -m "what changed"` (autogenerate; review it), and
`tests/storage/test_migrations.py` checks that the scripts give exactly the models.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

if TYPE_CHECKING:
    # Only for annotations: `Database.create_all` calls `stamp_head`, so a runtime import
    # here would make the two modules import each other.
    from journeyman.storage.db import Database

SCRIPTS = Path(__file__).parent / "migrations"
# Alembic narrates every migration step at INFO; commands print their own summary.
logging.getLogger("alembic").setLevel(logging.WARNING)
LOCK_ID = 7_351_902  # pg_advisory_lock key: "journeyman migrations"


class MigrationError(RuntimeError):
    """The database cannot be migrated as it is; the message says what to do."""


def config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    return cfg


def head() -> str:
    current = _scripts().get_current_head()
    assert current is not None, "no migration scripts"
    return current


def current(db: Database) -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> None:
    cfg = config(db)
    with db.engine.begin() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        tables = set(inspect(connection).get_table_names())
        if tables and "alembic_version" not in tables:
            raise MigrationError(
                f"{_where(db)} was created before migrations existed and cannot be "
                "upgraded in place; for the dev database, remove .journeyman/journeyman.db "
                "and start again"
            )
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def stamp_head(db: Database) -> None:
    """Record the newest revision on a database whose tables `create_all` just made."""
    with db.engine.begin() as connection:
        context = MigrationContext.configure(connection)
        if context.get_current_revision() is None:
            context.stamp(_scripts(), "head")


def _scripts() -> ScriptDirectory:
    global _SCRIPT_DIRECTORY
    if _SCRIPT_DIRECTORY is None:
        _SCRIPT_DIRECTORY = ScriptDirectory(str(SCRIPTS))
    return _SCRIPT_DIRECTORY


_SCRIPT_DIRECTORY: ScriptDirectory | None = None


def revision(db: Database, message: str) -> None:
    """Autogenerate the next revision script from the models (developers)."""
    cfg = config(db)
    with db.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.revision(cfg, message=message, autogenerate=True)


def _where(db: Database) -> str:
    return db.engine.url.render_as_string(hide_password=True)
