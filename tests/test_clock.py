"""The suite's own clock (tests/conftest.py `CLOCKS`): a result never depends on when the
suite runs, because each test starts at a fixed instant on both clocks it can read."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import CLOCKS


@pytest.mark.clock_sensitive
async def test_the_server_and_python_start_at_the_tests_instant(time_env, clock) -> None:
    server = await time_env.get_current_time()
    # The server was moved there before the test began; virtual time passes only while
    # something runs on it, and Python's clock ticks on in real time from the same start.
    assert clock <= server < clock + timedelta(minutes=1)
    assert clock <= datetime.now(UTC) < clock + timedelta(minutes=1)
    assert clock.timestamp() <= time.time() < clock.timestamp() + 60


def test_the_hours_where_date_code_breaks_are_among_the_clocks() -> None:
    instants = {(c.month, c.day, c.hour, c.minute) for c in CLOCKS.values()}
    assert (2, 29, 23, 30) in instants  # a day most years lack, half an hour before its end
    assert any((hour, minute) == (0, 0) for _, _, hour, minute in instants)
    assert any((hour, minute) == (23, 30) for m, _, hour, minute in instants if m != 2)


def test_a_test_without_the_marker_runs_once_at_the_default(request) -> None:
    assert "[" not in request.node.name


@pytest.mark.clock_sensitive
def test_a_marked_test_runs_at_every_clock(request, clock) -> None:
    name = request.node.callspec.params["clock"]
    assert CLOCKS[name] == clock


# -- PostgreSQL where CI promises it ---------------------------------------------------------

NOWHERE = "postgresql+psycopg://postgres@127.0.0.1:1"  # a port nothing listens on


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_a_missing_postgresql_fails_saying_so(monkeypatch, ci) -> None:
    from tests.conftest import fresh_postgres

    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"no PostgreSQL at .*CI=true"):  # noqa: SIM117
        with fresh_postgres(NOWHERE):
            raise AssertionError("no database can have been made")


def test_on_a_laptop_a_missing_postgresql_skips_saying_so(monkeypatch) -> None:
    from tests.conftest import fresh_postgres

    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"no PostgreSQL at .*a skip outside CI"):  # noqa: SIM117
        with fresh_postgres(NOWHERE):
            raise AssertionError("no database can have been made")
