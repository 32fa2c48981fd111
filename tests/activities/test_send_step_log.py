"""The step log rows a send writes (patch `perf-fold-steps`): in the transaction that
decides the message, with that transaction's one erasure check; once, whatever the
retries; never of a customer erased meanwhile; and a log failure never fails the message."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

import activities.journey as journey_module
from journeyman.contracts import PathEntry, RecordStepsInput
from journeyman.storage.models import Delivery, JourneyRun, StepLog
from tests.activities.test_erasure_race import (
    CUSTOMER,
    during_the_call,
    erase_rows,
    mentions,
)
from tests.activities.test_send import NOW, World, world  # noqa: F401

KEY = f"promo/{CUSTOMER}/run/hello/1"


def record(outcome: str | None = None) -> RecordStepsInput:
    """Two entries not logged yet, before the send's own (seq 2)."""
    return RecordStepsInput(
        run_id="run-1",
        journey_id="promo",
        version="",
        customer_id=CUSTOMER,
        first_seq=0,
        entries=[
            PathEntry(at=NOW, step="(entry)", action="entered", detail="signed_up"),
            PathEntry(at=NOW, step="pause", action="waited", detail="1h"),
        ],
        workflow_id=f"promo/{CUSTOMER}",
        outcome=outcome,
    )


def send(world: World, **extra: Any) -> Any:  # noqa: F811
    step_log = record(**extra)
    step_log.version = world.version
    return world.send(key=KEY, customer_id=CUSTOMER, channels=("email",), step_log=step_log)


def logged(world: World) -> list[tuple[int, str, str]]:  # noqa: F811
    with world.db.session() as session:
        rows = session.scalars(select(StepLog).order_by(StepLog.seq)).all()
        return [(r.seq, r.step_id, r.action) for r in rows]


class Counted:
    """Commits on the database, and the erasure checks the send activity makes."""

    def __init__(self, world: World, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
        self.commits = 0
        self.checks = 0
        original = journey_module.erased

        def erased(session: Session, key: bytes | None, customer_id: str) -> bool:
            self.checks += 1
            return original(session, key, customer_id)

        monkeypatch.setattr(journey_module, "erased", erased)

        def commit(_: Any) -> None:
            self.commits += 1

        event.listen(world.db.engine, "commit", commit)


def warm(world: World) -> None:  # noqa: F811
    """The renderer loaded (a read of its own, once per process and version)."""
    world.activities._renderer("promo", world.version)


@pytest.mark.parametrize("transactional", [True, False], ids=["outbox", "external"])
def test_a_send_writes_the_runs_entries_and_its_own_once(world, transactional):  # noqa: F811
    world.providers["email"].transactional = transactional
    world.customer(CUSTOMER, email="ana@example.com")
    first = send(world)
    assert first.status == "sent" and first.logged_at is not None
    assert logged(world) == [
        (0, "(entry)", "entered"),
        (1, "pause", "waited"),
        (2, "hello", "sent"),
    ]
    # Retried (its answer lost): nothing sent or written again, the first time answered.
    again = send(world)
    assert (again.status, again.logged_at) == ("sent", first.logged_at)
    assert len(world.providers["email"].sent) == 1
    assert len(logged(world)) == 3


def test_an_outbox_send_and_its_rows_take_one_transaction_and_one_check(
    world,  # noqa: F811
    monkeypatch,
):
    world.providers["email"].transactional = True
    world.customer(CUSTOMER, email="ana@example.com")
    warm(world)
    counted = Counted(world, monkeypatch)
    outcome = send(world)
    assert outcome.status == "sent" and outcome.logged_at is not None
    assert (counted.commits, counted.checks) == (1, 1)
    assert [r[0] for r in logged(world)] == [0, 1, 2]


def test_the_last_send_closes_the_run_in_its_transaction(world, monkeypatch):  # noqa: F811
    world.providers["email"].transactional = True
    world.customer(CUSTOMER, email="ana@example.com")
    with world.db.session() as session:
        session.add(
            JourneyRun(
                run_id="run-1",
                workflow_id=f"promo/{CUSTOMER}",
                journey_id="promo",
                version=world.version,
                customer_id=CUSTOMER,
                entry_key="m1",
                status="running",
                started_at=NOW,
            )
        )
    warm(world)
    counted = Counted(world, monkeypatch)
    outcome = send(world, outcome="ended")
    assert counted.commits == 1
    with world.db.session() as session:
        run = session.get(JourneyRun, "run-1")
        assert run is not None
        assert (run.status, run.outcome) == ("completed", "ended")
        assert run.ended_at is not None and outcome.logged_at is not None
        assert run.ended_at.replace(tzinfo=None) == outcome.logged_at.replace(tzinfo=None)


@pytest.mark.parametrize("transactional", [True, False], ids=["outbox", "external"])
@pytest.mark.parametrize("failure", ["python", "database"])
def test_a_step_log_failure_leaves_the_message_sent_and_the_rows_to_the_run(
    world,  # noqa: F811
    monkeypatch,
    transactional,
    failure,
):
    world.providers["email"].transactional = transactional
    world.customer(CUSTOMER, email="ana@example.com")

    def down(session: Session, *args: Any) -> int:
        if failure == "database":  # aborts PostgreSQL's transaction but for the savepoint
            session.execute(text("SELECT no_such_column FROM step_log"))
        raise RuntimeError("database unavailable")

    monkeypatch.setattr(world.activities, "_write_steps", down)
    outcome = send(world)
    assert (outcome.status, outcome.logged_at) == ("sent", None)
    assert len(world.providers["email"].sent) == 1
    with world.db.session() as session:
        [row] = session.scalars(select(Delivery)).all()
        assert row.status == "sent"  # committed with the message, not rolled back
    assert logged(world) == []


def test_a_customer_erased_during_the_provider_call_gets_no_step_log_rows(world):  # noqa: F811
    world.customer(CUSTOMER, email="ana@example.com")
    during_the_call(world, lambda: erase_rows(world))
    outcome = send(world)
    assert outcome.status == "sent"  # it did go out: the provider had it
    # As `record_steps` would: nothing written, and the run is not asked to write it.
    assert outcome.logged_at is not None
    assert logged(world) == []
    assert mentions(world, CUSTOMER) == []


@pytest.mark.parametrize("transactional", [True, False], ids=["outbox", "external"])
def test_an_erased_customers_send_writes_no_step_log_rows(world, transactional):  # noqa: F811
    world.providers["email"].transactional = transactional
    world.customer(CUSTOMER, email="ana@example.com")
    erase_rows(world)
    outcome = send(world)
    assert (outcome.status, outcome.reason) == ("skipped", "customer erased")
    assert world.providers["email"].sent == []
    assert logged(world) == []
    assert mentions(world, CUSTOMER) == []
