"""Work under way when a customer is erased writes nothing of them back: the send in
flight, its retry, the step log, a profile update (the erasure tombstone)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from journeyman.contracts import ExprContext, PathEntry, RecordStepsInput, UpdateProfileInput
from journeyman.messaging.providers import OutgoingMessage
from journeyman.privacy.erasure import ErasureReport, _erase_rows, _find
from journeyman.privacy.pseudonyms import installation_key, pseudonym
from journeyman.storage.models import Base, Customer, Delivery, StepLog
from tests.activities.test_send import KEY, NOW, World, world  # noqa: F401

CUSTOMER = "cust-5b7e0d"
ERASURE_KEY = installation_key(KEY)


def erase_rows(world: World) -> str:  # noqa: F811
    """The database part of an erasure (what `erasure.erase` does around Temporal)."""
    found = _find(world.db, CUSTOMER, ERASURE_KEY)
    assert found is not None
    ids = found[0]
    alias = pseudonym(ERASURE_KEY, CUSTOMER)
    report = ErasureReport(customer_id=CUSTOMER, pseudonym=alias, identities=ids)
    with world.db.session() as session:
        _erase_rows(session, ids, report)
    return alias


def mentions(world: World, text: str) -> list[str]:  # noqa: F811
    """The tables with a row mentioning `text`."""
    found = []
    with world.db.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if text in str(connection.execute(table.select()).all()):
                found.append(table.name)
    return found


def during_the_call(world: World, action: Callable[[], Any]) -> None:  # noqa: F811
    email = world.providers["email"]
    original = email.send

    def send(message: OutgoingMessage, session: Any) -> str:
        action()
        return original(message, session)

    email.send = send  # type: ignore[method-assign]


def test_a_send_in_flight_during_erasure_writes_the_id_back_nowhere(world):  # noqa: F811
    world.customer(CUSTOMER, email="ana@example.com")
    aliases: list[str] = []
    during_the_call(world, lambda: aliases.append(erase_rows(world)))
    outcome = world.send(key=f"promo/{CUSTOMER}/run/hello/1", customer_id=CUSTOMER)
    assert outcome.status == "sent"  # it did go out: the provider had it
    assert len(world.providers["email"].sent) == 1
    assert mentions(world, CUSTOMER) == []
    with world.db.session() as session:
        [row] = session.scalars(select(Delivery)).all()
    assert row.customer_id == aliases[0]
    # The activity retried after the erasure (its answer lost): nothing sent or written.
    again = world.send(key=f"promo/{CUSTOMER}/run/hello/1", customer_id=CUSTOMER)
    assert (again.status, again.reason) == ("skipped", "customer erased")
    assert len(world.providers["email"].sent) == 1
    assert mentions(world, CUSTOMER) == []


def test_the_step_log_and_profile_updates_of_an_erased_run_are_dropped(world):  # noqa: F811
    world.customer(CUSTOMER, email="ana@example.com")
    erase_rows(world)
    with world.db.session() as session:
        assert session.get(Customer, CUSTOMER) is None
    added = world.activities.record_steps(
        RecordStepsInput(
            run_id="run-1",
            journey_id="promo",
            version=world.version,
            customer_id=CUSTOMER,
            first_seq=0,
            entries=[PathEntry(at=NOW, step="hello", action="sent", detail="ana@example.com")],
            workflow_id=f"promo/{CUSTOMER}",
            outcome="ended",
            ended_at=NOW,
        )
    )
    assert added == 0
    context = ExprContext(event=None, trigger=None, journey={}, now=NOW)  # type: ignore[arg-type]
    updated = world.activities.update_profile(
        UpdateProfileInput(customer_id=CUSTOMER, values={"vip": ["lit", True]}, context=context)
    )
    assert (updated.ok, updated.detail) == (False, "customer erased")
    assert mentions(world, CUSTOMER) == []
    with world.db.session() as session:
        assert session.scalars(select(StepLog)).all() == []


def test_a_customer_who_comes_back_is_a_new_customer(world):  # noqa: F811
    world.customer(CUSTOMER, email="ana@example.com")
    erase_rows(world)
    # Later, they sign up again: a new profile, messaged as anyone else.
    with world.db.session() as session:
        session.add(
            Customer(
                id=CUSTOMER,
                email="ana@example.com",
                traits={"first_name": "Ana"},
                push_tokens=[],
                created_at=NOW + timedelta(days=400),
            )
        )
    outcome = world.send(key=f"promo/{CUSTOMER}/run2/hello/1", customer_id=CUSTOMER)
    assert outcome.status == "sent"
