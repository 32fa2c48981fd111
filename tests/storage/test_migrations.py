"""The migration scripts give exactly the schema of the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.storage.models import Base
from tests.conftest import POSTGRES, fresh_postgres


def _check(db: Database) -> None:
    migrate.upgrade(db)
    assert migrate.current(db) == migrate.head()
    with db.engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    assert diff == [], f"models and migrations differ: {diff}"
    migrate.upgrade(db)  # a second upgrade is a no-op


def test_migrations_match_the_models_on_sqlite(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path}/m.db")
    try:
        _check(db)
    finally:
        db.dispose()


@pytest.mark.uses_postgres
def test_migrations_match_the_models_on_postgres():
    with fresh_postgres(POSTGRES or "postgresql+psycopg://postgres@127.0.0.1:5432") as db:
        _check(db)


def test_a_database_from_before_migrations_is_refused_with_what_to_do(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path}/old.db")
    try:
        Base.metadata.create_all(db.engine)  # as create_all did before migrations
        with pytest.raises(migrate.MigrationError, match=r"remove \.journeyman/journeyman\.db"):
            migrate.upgrade(db)
        with db.engine.connect() as connection:
            assert "alembic_version" not in inspect(connection).get_table_names()
            assert connection.execute(text("SELECT count(*) FROM customers")).scalar() == 0
    finally:
        db.dispose()


def test_db_upgrade_command_migrates_and_says_so(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from journeyman.cli import app
    from journeyman.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        first = runner.invoke(app, ["db", "upgrade"])
        assert first.exit_code == 0, first.output
        assert first.stdout.strip() == f"database upgraded from empty to {migrate.head()}"
        again = runner.invoke(app, ["db", "upgrade"])
        assert again.stdout.strip() == f"database already at {migrate.head()}"
        current = runner.invoke(app, ["db", "current"])
        assert current.stdout.strip() == f"current {migrate.head()}, newest {migrate.head()}"
    finally:
        get_settings.cache_clear()


def test_create_all_is_stamped_so_upgrade_accepts_it(tmp_path: Path):
    db = Database(f"sqlite:///{tmp_path}/made.db")
    try:
        db.create_all()
        assert migrate.current(db) == migrate.head()
        migrate.upgrade(db)
    finally:
        db.dispose()
