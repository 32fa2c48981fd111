"""`goal.within`: the router marks ended runs a goal event converts within the window
(journeyman/insight/attribution.py), and stats, the funnel and the journey page count them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from journeyman.contracts import CustomerEvent
from journeyman.dsl.compiler import compile_file
from journeyman.dsl.plan import Plan
from journeyman.insight.attribution import attribute
from journeyman.insight.stats import Conversions, funnel, journey_stats
from journeyman.storage.db import Database
from journeyman.storage.models import Event, JourneyRun
from tests.insight.test_stats import T0, add_delivery, add_runs, add_version

JOURNEY = """\
id: cart
name: Cart reminder
entry: {event: cart_abandoned}
goal:
  event: order_placed
  when: "event.properties.cart_id == trigger.properties.cart_id"
  within: 7d
steps:
  - id: pause
    wait: 1h
  - id: done
    end: true
"""


def plan(tmp_path: Path, text: str = JOURNEY) -> Plan:
    (tmp_path / "journeys").mkdir(exist_ok=True)
    (tmp_path / "templates").mkdir(exist_ok=True)
    path = tmp_path / "journeys" / "cart.yaml"
    path.write_text(text)
    return compile_file(path, tmp_path / "templates").plan


def order(cart: str, message_id: str = "o1") -> CustomerEvent:
    return CustomerEvent(message_id=message_id, name="order_placed", properties={"cart_id": cart})


def test_an_order_within_the_window_converts_the_ended_run_once(db: Database, tmp_path) -> None:
    journey = plan(tmp_path)
    with db.session() as session:
        add_version(session, journey.version)
        [ended] = add_runs(session, version=journey.version, outcome="ended", customer="c1")
        add_delivery(session, ended)
        add_runs(session, version=journey.version, outcome="ended", customer="c2")
        for run in session.scalars(select(JourneyRun)):
            run.trigger_message_id = f"t-{run.customer_id}"
            session.add(
                Event(
                    message_id=f"t-{run.customer_id}",
                    type="track",
                    customer_id=run.customer_id,
                    name="cart_abandoned",
                    properties={"cart_id": "k1"},
                    timestamp=T0,
                )
            )

    def route(customer: str, event: CustomerEvent, after: timedelta) -> list[str]:
        with db.session() as session:
            return attribute(
                session, [journey], lambda j, v: journey, [customer], event, T0 + after
            )

    assert route("c1", order("other"), timedelta(days=2)) == []  # another cart
    assert route("c1", order("k1"), timedelta(days=3)) == ["cart/c1"]
    assert route("c1", order("k1", "o2"), timedelta(days=4)) == []  # converted once
    assert route("c2", order("k1"), timedelta(days=8)) == []  # past the window

    report = journey_stats_of(db)
    assert (report.converted, report.after_end, report.entered) == (1, 1, 2)
    assert report.by_channel == {"email": 1}
    assert report.rate == 0.5
    with db.session() as session:
        assert funnel(session, "cart").converted == 1
        overall = journey_stats(session, "cart").overall
    assert overall.finished == {"ended": 2}  # the outcome stays what the run did


def test_without_within_an_ended_run_is_left_alone(db: Database, tmp_path) -> None:
    journey = plan(tmp_path, JOURNEY.replace("  within: 7d\n", ""))
    with db.session() as session:
        add_version(session, journey.version)
        add_runs(session, version=journey.version, outcome="ended", customer="c1")
    with db.session() as session:
        found = attribute(
            session, [journey], lambda j, v: journey, ["c1"], order("k1"), T0 + timedelta(hours=2)
        )
    assert found == []
    assert journey_stats_of(db).converted == 0


def journey_stats_of(db: Database) -> Conversions:
    with db.session() as session:
        return journey_stats(session, "cart").overall.conversions
