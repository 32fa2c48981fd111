"""JOURNEYMAN_GLOBAL_HOLDOUT: a stable share of customers gets no marketing, and
`journeyman stats --global` measures all marketing against them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from journeyman.cli import app
from journeyman.events.routing import Catalog
from journeyman.insight.lift import newcombe_interval
from journeyman.insight.stats import journey_stats
from journeyman.optimization.holdout import REASON, GlobalHoldout, global_lift
from journeyman.settings import Settings, get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, JourneyRun
from tests.harness import Harness
from tests.insight.test_simulate import run, write_journey

KEY = b"installation-key"


def test_membership_is_stable_keyed_and_about_the_share() -> None:
    holdout = GlobalHoldout(0.05, KEY)
    ids = [f"c{n}" for n in range(20_000)]
    members = {c for c in ids if holdout.holds(c)}
    assert 0.04 < len(members) / len(ids) < 0.06
    assert members == {c for c in ids if GlobalHoldout(0.05, KEY).holds(c)}  # stable
    other = {c for c in ids if GlobalHoldout(0.05, b"another installation").holds(c)}
    assert len(members & other) < len(members) / 5  # keyed: not guessable from the id
    assert not any(GlobalHoldout(0.0, KEY).holds(c) for c in ids[:1000])


def test_only_marketing_topics_are_held_back() -> None:
    holdout = GlobalHoldout(1.0, KEY, frozenset({"orders"}))
    assert holdout.reason("c1", "promotions") == REASON
    assert holdout.reason("c1", "orders") is None  # transactional
    assert holdout.reason("c1", None) is None  # a service message: no topic


def test_settings_read_the_share_and_topics_and_refuse_nonsense() -> None:
    settings = Settings(
        JOURNEYMAN_GLOBAL_HOLDOUT="5%", JOURNEYMAN_TRANSACTIONAL_TOPICS="orders, receipts"
    )
    assert settings.global_holdout_share == 0.05
    assert settings.transactional_topic_list == ["orders", "receipts"]
    with pytest.raises(ValidationError, match="expected a percentage such as 10%"):
        Settings(JOURNEYMAN_GLOBAL_HOLDOUT="0.05")
    with pytest.raises(ValidationError, match="at most 50%"):
        Settings(JOURNEYMAN_GLOBAL_HOLDOUT="80%")
    keyless = Settings(JOURNEYMAN_GLOBAL_HOLDOUT="5%", JOURNEYMAN_SECRET_KEY=None)
    with pytest.raises(ValueError, match="JOURNEYMAN_GLOBAL_HOLDOUT needs JOURNEYMAN_SECRET_KEY"):
        GlobalHoldout.from_settings(keyless)
    keyed = GlobalHoldout.from_settings(settings.model_copy(update={"secret_key": SecretStr("k")}))
    assert keyed.key == b"k" and keyed.share == 0.05


PROMO = """
id: promo
name: Promo
topic: promotions
entry: {event: signed_up}
goal: {event: order_placed}
steps:
  - id: offer
    send: {template: offer, channels: [email]}
  - id: done
    end: true
"""

RECEIPT = """
id: receipt
name: Receipt
topic: orders
entry: {event: signed_up}
steps:
  - id: thanks
    send: {template: thanks, channels: [email]}
"""


async def test_a_member_gets_no_marketing_but_transactional_mail(harness: Harness) -> None:
    harness.settings = harness.settings.model_copy(
        update={"global_holdout": "50%", "transactional_topics": "orders"}
    )
    holdout = GlobalHoldout.from_settings(harness.settings)
    ids = [f"c{n}" for n in range(40)]
    member = next(c for c in ids if holdout.holds(c))
    other = next(c for c in ids if not holdout.holds(c))
    await harness.journey(PROMO)
    await harness.journey(RECEIPT)
    for customer in (member, other):
        harness.customer(customer, email=f"{customer}@example.com")
        route = await harness.event("signed_up", customer)
        for workflow_id in route.entered:
            await harness.result(workflow_id)
    sent = {(m.customer_id, m.journey_id) for m in harness.outbox()}
    assert sent == {(member, "receipt"), (other, "receipt"), (other, "promo")}
    (skipped,) = [d for d in harness.deliveries() if d.status == "skipped"]
    assert (skipped.customer_id, skipped.reason) == (member, "global holdout")
    with harness.db.session() as session:
        stats = journey_stats(session, "promo")
    reasons = [m.skipped_reasons for m in stats.overall.messages if m.skipped_reasons]
    assert reasons == [{"global holdout": 1}]


def _runs(db: Database, journey: str, customers: list[str], converted: int) -> None:
    with db.session() as session:
        for n, customer in enumerate(customers):
            session.add(
                JourneyRun(
                    run_id=uuid.uuid4().hex,
                    workflow_id=f"{journey}/{customer}",
                    journey_id=journey,
                    version="v",
                    customer_id=customer,
                    status="completed",
                    outcome="converted" if n < converted else "ended",
                    started_at=datetime.now(UTC) - timedelta(days=3),
                )
            )


def _register(root: Path, db: Database) -> None:
    (root / "journeys").mkdir(exist_ok=True)
    for text in (PROMO, RECEIPT):
        journey_id = text.split("id: ", 1)[1].split("\n", 1)[0]
        (root / "journeys" / f"{journey_id}.yaml").write_text(text.strip() + "\n")
    for template in ("offer", "thanks"):
        (root / "templates" / template).mkdir(parents=True, exist_ok=True)
        (root / "templates" / template / "email.html").write_text(
            "{% block subject %}Hi{% endblock %}<p>Hi</p>"
        )
    Catalog.from_dirs(root / "journeys", root / "templates").register(db)


def test_global_lift_compares_marketing_customers_with_the_holdout(
    db: Database, tmp_path: Path
) -> None:
    _register(tmp_path, db)
    holdout = GlobalHoldout(0.2, KEY, frozenset({"orders"}))
    ids = [f"c{n}" for n in range(1000)]
    members = [c for c in ids if holdout.holds(c)][:60]
    treated = [c for c in ids if not holdout.holds(c)][:300]
    _runs(db, "promo", treated, converted=60)  # 20%
    _runs(db, "promo", members, converted=6)  # 10%
    _runs(db, "receipt", treated + members, converted=0)  # not marketing: not counted
    with db.session() as session:
        report = global_lift(session, holdout)
    assert report.marketing_journeys == ["promo"]
    (goal,) = report.goals
    assert (goal.goal, goal.journeys) == ("order_placed", ["promo"])
    lift = goal.lift
    assert (lift.treatment_entered, lift.treatment_converted) == (300, 60)
    assert (lift.control_entered, lift.control_converted) == (60, 6)
    assert lift.interval == newcombe_interval(60, 300, 6, 60)
    assert lift.verdict.startswith("no significant difference yet (+10.0 points")


def test_global_lift_counts_a_merged_anonymous_run_as_its_known_customer(
    db: Database, tmp_path: Path
) -> None:
    # A run started under an anonymous id, later merged into a known customer, is that
    # customer's: the send asked the holdout about the known id, and so does the lift.
    _register(tmp_path, db)
    holdout = GlobalHoldout(0.2, KEY, frozenset({"orders"}))
    ids = [f"c{n}" for n in range(1000)]
    member = next(c for c in ids if holdout.holds(c))
    treated = next(c for c in ids if not holdout.holds(c))
    anonymous = [f"anon-{n}" for n in range(1000)]
    # Anonymous ids that the holdout would classify the other way round on their own.
    anon_of_member = next(a for a in anonymous if not holdout.holds(a))
    anon_of_treated = next(a for a in anonymous if holdout.holds(a))
    with db.session() as session:
        session.add_all(
            [
                Customer(id=member),
                Customer(id=treated),
                Customer(id=anon_of_member, merged_into=member),
                Customer(id=anon_of_treated, merged_into=treated),
            ]
        )
    _runs(db, "promo", [anon_of_member], converted=1)
    _runs(db, "promo", [anon_of_treated], converted=0)
    with db.session() as session:
        (goal,) = global_lift(session, holdout).goals
    assert (goal.lift.control_entered, goal.lift.control_converted) == (1, 1)
    assert (goal.lift.treatment_entered, goal.lift.treatment_converted) == (1, 0)


def test_journeyman_stats_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db_url = f"sqlite:///{tmp_path}/journeyman.db"
    for name, value in {
        "DATABASE_URL": db_url,
        "JOURNEYMAN_GLOBAL_HOLDOUT": "20%",
        "JOURNEYMAN_TRANSACTIONAL_TOPICS": "orders",
        "JOURNEYMAN_SECRET_KEY": KEY.decode(),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    db = Database(db_url)
    db.create_all()
    _register(tmp_path, db)
    holdout = GlobalHoldout(0.2, KEY)
    ids = [f"c{n}" for n in range(1000)]
    _runs(db, "promo", [c for c in ids if not holdout.holds(c)][:200], converted=80)
    _runs(db, "promo", [c for c in ids if holdout.holds(c)][:50], converted=5)
    db.dispose()
    try:
        text = CliRunner().invoke(app, ["stats", "--global"], catch_exceptions=False)
        as_json = CliRunner().invoke(app, ["stats", "--global", "--json"])
        both = CliRunner().invoke(app, ["stats", "promo", "--global"])
        neither = CliRunner().invoke(app, ["stats"])
    finally:
        get_settings.cache_clear()
    assert text.exit_code == 0, text.output
    assert text.stdout.splitlines() == [
        "global holdout 20% of customers get no marketing (transactional topics exempt: orders)",
        "marketing journeys: promo",
        "",
        "goal order_placed (promo)",
        "  marketing  80 of 200 customers (40.0%)",
        "  holdout    5 of 50 customers (10.0%)",
        "  all marketing lifts conversion by 30.0 points (95% CI 16.9 to 38.9)",
    ]
    assert json.loads(as_json.stdout)["goals"][0]["lift"]["control_entered"] == 50
    assert both.exit_code == 1 and "give no journey" in both.output
    assert neither.exit_code == 1 and "--global for all marketing" in neither.output


async def test_simulate_applies_the_global_holdout_with_the_installations_key(
    time_env, tmp_path: Path
) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/unused.db",
        journeys_dir=tmp_path / "journeys",
        templates_dir=tmp_path / "templates",
        JOURNEYMAN_SECRET_KEY=KEY.decode(),
        JOURNEYMAN_GLOBAL_HOLDOUT="50%",
    )
    holdout = GlobalHoldout.from_settings(settings)
    member = next(f"c{n}" for n in range(100) if holdout.holds(f"c{n}"))
    journey = write_journey(
        tmp_path, PROMO, {"offer/email.html": "{% block subject %}Hi{% endblock %}<p>Hi</p>"}
    )
    sim = await run(
        time_env,
        settings,
        journey,
        [{"at": "0s", "event": "signed_up"}],
        {"id": member, "email": "ana@example.com"},
    )
    skipped = next(e for e in sim.entries if e.step == "offer")
    assert (skipped.action, skipped.detail) == ("skipped", "global holdout")
