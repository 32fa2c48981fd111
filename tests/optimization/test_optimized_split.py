"""`split.optimize`: Thompson sampling on the conversions each case got, drawn with the
run's deterministic randomness; stats per case; an operator stops a case."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from activities.optimize import OptimizeActivities
from journeyman.cli import app
from journeyman.events.routing import Catalog
from journeyman.insight.stats import journey_stats
from journeyman.optimization.holdout import GlobalHoldout
from journeyman.optimization.optimize import (
    CaseCounts,
    SplitCountsInput,
    probability_best,
    thompson_choice,
)
from journeyman.optimization.splits import (
    SplitError,
    case_of,
    count_cases,
    split_lines,
    split_reports,
    stop_case,
)
from journeyman.settings import get_settings
from journeyman.storage.db import Database
from journeyman.storage.models import (
    Customer,
    Event,
    JourneyRun,
    JourneyVersion,
    OperatorAction,
    SplitStop,
    StepLog,
)
from tests.harness import Harness

NOW = datetime(2036, 6, 10, 12, 0, tzinfo=UTC)

OFFERS = """
id: offers
name: Offers
entry:
  event: lapsed
goal:
  event: order_placed
steps:
  - id: choose
    split:
      - {weight: 50, goto: offer_a}
      - {weight: 50, goto: offer_b}
    optimize: {event: order_placed, within: 7d}
  - id: offer_a
    update_profile: {set: {offer: a}}
    goto: done
  - id: offer_b
    update_profile: {set: {offer: b}}
  - id: done
    end: true
"""


# -- the draw -------------------------------------------------------------------------


def test_the_better_case_wins_most_draws_and_the_draw_is_repeatable() -> None:
    cases = [
        CaseCounts("a", 50, takers=400, conversions=16),  # 4%
        CaseCounts("b", 50, takers=400, conversions=40),  # 10%
    ]
    rng = random.Random(7)
    chosen = [thompson_choice(cases, rng)[0] for _ in range(500)]
    assert chosen.count(1) > 450
    assert thompson_choice(cases, random.Random(3)) == thompson_choice(cases, random.Random(3))


def test_without_data_the_weights_lead() -> None:
    cases = [CaseCounts("a", 90, 0, 0), CaseCounts("b", 10, 0, 0)]
    # The prior is weak: both are tried, and equal weights would be even.
    p = probability_best(cases)
    assert 0.3 < p[0] < 0.7 and abs(sum(p) - 1) < 1e-9
    even = probability_best([CaseCounts("a", 50, 0, 0), CaseCounts("b", 50, 0, 0)])
    assert abs(even[0] - 0.5) < 0.05


def test_exposure_keeps_recent_converters_from_flattering_a_case() -> None:
    """Two cases at the same 5%: b took most of the last days' traffic, so more of its
    converters are in and few of its non-converters are decided yet. Over decided
    takers alone b looks twice as good; over the exposure they are even."""
    a = CaseCounts("a", 50, takers=1000, conversions=50, exposure=1000.0)
    b = CaseCounts("b", 50, takers=600, conversions=60, exposure=1200.0)
    flattered = CaseCounts("b", 50, takers=600, conversions=60)
    assert probability_best([a, flattered])[1] > 0.99
    assert 0.2 < probability_best([a, b])[1] < 0.8


def test_a_stopped_case_is_never_chosen() -> None:
    cases = [
        CaseCounts("a", 50, takers=100, conversions=50, stopped=True),
        CaseCounts("b", 50, takers=100, conversions=1),
    ]
    rng = random.Random(1)
    assert {thompson_choice(cases, rng)[0] for _ in range(200)} == {1}
    assert probability_best(cases) == [0.0, 1.0]


# -- the counts -----------------------------------------------------------------------


def _split_taken(
    session,
    run_id: str,
    customer: str,
    case: str,
    version: str,
    at: datetime,
    converted_at: datetime | None,
) -> None:
    """A run's split into `case` at `at` in the step log, and its customer's
    `order_placed` at `converted_at` (None: none)."""
    session.add(
        StepLog(
            run_id=run_id,
            seq=1,
            journey_id="offers",
            version=version,
            customer_id=customer,
            step_id="choose",
            action="split",
            detail={"detail": f"-> {case}", "channel": None, "template": None},
            at=at,
        )
    )
    if converted_at is not None:
        session.add(
            Event(
                message_id=f"order-{run_id}",
                type="track",
                customer_id=customer,
                name="order_placed",
                properties={},
                timestamp=converted_at,
            )
        )


def _taker(session, n: int, case: str, at: datetime, converted_after: timedelta | None) -> None:
    customer = f"{case}-{n}"
    converted_at = None if converted_after is None else at + converted_after
    _split_taken(session, f"run-{customer}", customer, case, "v1", at, converted_at)


def test_counts_take_conversions_within_the_window_and_decided_takers(db: Database) -> None:
    long_ago = NOW - timedelta(days=30)
    with db.session() as session:
        _taker(session, 1, "offer_a", long_ago, timedelta(days=2))  # converted
        _taker(session, 2, "offer_a", long_ago, timedelta(days=9))  # too late: not
        _taker(session, 3, "offer_a", long_ago, None)  # window over: not
        _taker(session, 4, "offer_a", NOW - timedelta(days=1), None)  # undecided yet
        _taker(session, 5, "offer_b", NOW - timedelta(days=1), timedelta(hours=3))  # converted
        # A run of the journey's holdout walks the split too, but is sent nothing.
        _taker(session, 6, "offer_b", long_ago, timedelta(days=1))
        session.add(
            JourneyRun(
                run_id="run-offer_b-6",
                workflow_id="offers/offer_b-6",
                journey_id="offers",
                version="v1",
                customer_id="offer_b-6",
                holdout=True,
            )
        )
    with db.session() as session:
        counts, takers, order = count_cases(
            session,
            "offers",
            "choose",
            [("offer_a", 50), ("offer_b", 50)],
            "order_placed",
            timedelta(days=7),
            NOW,
        )
    assert [(c.goto, c.takers, c.conversions) for c in counts] == [
        ("offer_a", 3, 1),
        ("offer_b", 1, 1),
    ]
    # The taker one day into their week counts for 1/7 of a taker.
    assert counts[0].exposure == pytest.approx(3 + 1 / 7)
    assert counts[1].exposure == 1.0
    assert takers == {"offer_a": 4, "offer_b": 1}
    assert order[-1] == "offer_b"


def test_case_of_reads_the_goto_of_fixed_and_optimized_split_entries() -> None:
    assert case_of({"detail": "-> offer_b"}) == "offer_b"
    assert case_of({"detail": "-> offer_b (Thompson sampling on x: ...)"}) == "offer_b"
    assert case_of({"detail": "no case"}) is None


def test_stop_case_is_recorded_audited_and_checked(db: Database, tmp_path: Path) -> None:
    from journeyman.dsl.compiler import compile_file

    root = tmp_path
    (root / "journeys").mkdir(exist_ok=True)
    path = root / "journeys" / "offers.yaml"
    path.write_text(OFFERS.strip() + "\n")
    compiled = compile_file(path, root / "templates")
    Catalog.from_dirs(root / "journeys", root / "templates").register(db)
    with pytest.raises(SplitError, match="has no case 'offer_c': cases are offer_a, offer_b"):
        stop_case(db, "offers", "choose", "offer_c", "ana", "losing")
    with pytest.raises(SplitError, match="no split step 'offer_a'"):
        stop_case(db, "offers", "offer_a", "x", "ana", "losing")
    with pytest.raises(SplitError, match="no journey"):
        stop_case(db, "nope", "choose", "offer_a", "ana", "losing")
    stop_case(db, "offers", "choose", "offer_a", "ana", "losing")
    stop_case(db, "offers", "choose", "offer_a", "ana", "losing")  # again: no error
    with db.session() as session:
        assert session.scalars(select(SplitStop.goto)).all() == ["offer_a"]
        assert session.scalars(select(OperatorAction.action)).all() == ["split_stop"]
        with_takers = NOW - timedelta(days=20)
        for n in range(40):
            _taker(session, n, "offer_b", with_takers, timedelta(days=1) if n < 8 else None)
    with db.session() as session:
        (report,) = split_reports(session, "offers", compiled.plan.model_dump(mode="json"), NOW)
        stats = journey_stats(session, "offers")
    a, b = report.cases
    assert (a.stopped, a.probability_best, a.takers) == (True, 0.0, 0)
    assert (b.takers, b.conversions, b.rate, b.share, b.probability_best) == (40, 8, 0.2, 1.0, 1.0)
    assert b.interval is not None and b.interval.low < 0.2 < b.interval.high
    assert [c.takers for c in stats.splits[0].cases] == [0, 40]
    text = "\n".join(split_lines([report]))
    assert "offer_a (stopped)" in text and "20.0% (10.5% to 34.8%)" in text


# -- in the interpreter ---------------------------------------------------------------


async def test_runs_go_to_the_case_that_converts(harness: Harness) -> None:
    """With 60 takers of each case recorded and b converting 10 times as often, the
    next customers mostly take b; each run's choice is logged with the counts."""
    await harness.journey(OFFERS)
    long_ago = (await harness.now()) - timedelta(days=30)
    with harness.db.session() as session:
        for n in range(60):
            _taker(session, n, "offer_a", long_ago, timedelta(days=1) if n < 2 else None)
            _taker(session, n, "offer_b", long_ago, timedelta(days=1) if n < 20 else None)
    chosen = []
    for n in range(6):
        customer = harness.customer(f"new-{n}")
        route = await harness.event("lapsed", customer)
        result = await harness.result(route.entered[0])
        split = next(p for p in result.path if p.action == "split")
        assert "Thompson sampling on order_placed: offer_a 2/60, offer_b 20/60" in split.detail
        chosen.append(case_of({"detail": split.detail}))
    assert chosen.count("offer_b") >= 5


def test_journeyman_split_stop_and_stats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    db_url = f"sqlite:///{tmp_path}/journeyman.db"
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "offers.yaml").write_text(OFFERS.strip() + "\n")
    for name, value in {
        "DATABASE_URL": db_url,
        "JOURNEYS_DIR": str(tmp_path / "journeys"),
        "TEMPLATES_DIR": str(tmp_path / "templates"),
        "TEMPORAL_ADDRESS": "127.0.0.1:1",  # nothing listens: steps now unavailable
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    db = Database(db_url)
    db.create_all()
    Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates").register(db)
    with db.session() as session:
        for n in range(30):
            _taker(
                session,
                n,
                "offer_b",
                NOW - timedelta(days=3650),
                timedelta(days=1) if n < 6 else None,
            )
    db.dispose()

    def cli(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    try:
        stopped = cli("split", "stop", "offers", "choose", "offer_a", "--who", "ana", "--why", "t")
        wrong = cli("split", "stop", "offers", "choose", "offer_z", "--who", "ana", "--why", "t")
        stats = cli("stats", "offers")
    finally:
        get_settings.cache_clear()
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == (
        "stopped case offer_a of split choose in offers: new customers take the others\n"
    )
    assert wrong.exit_code == 1
    assert "has no case 'offer_z': cases are offer_a, offer_b" in wrong.output
    assert stats.exit_code == 0, stats.output
    lines = stats.stdout.splitlines()
    start = lines.index("optimized split choose (Thompson sampling on order_placed within 1w)")
    assert lines[start + 2].split() == [
        "offer_a",
        "(stopped)",
        "0",
        "0",
        "of",
        "0",
        "-",
        "0%",
        "0%",
    ]
    assert lines[start + 3].split()[:7] == ["offer_b", "30", "6", "of", "30", "20.0%", "(9.5%"]


# -- the global holdout ---------------------------------------------------------------

GLOBAL = GlobalHoldout(0.5, b"installation-key", frozenset({"orders"}))


def _customers(held: bool, n: int, prefix: str) -> list[str]:
    """`n` customer ids the global holdout holds (or does not)."""
    found = (f"{prefix}-{i}" for i in range(1000))
    return list(islice((c for c in found if GLOBAL.holds(c) == held), n))


def _took(
    session, customer: str, case: str, version: str, converted: bool, at: datetime = NOW
) -> None:
    at -= timedelta(days=30)
    converted_at = at + timedelta(days=1) if converted else None
    _split_taken(session, f"run-{customer}-{version}", customer, case, version, at, converted_at)


def _version(session, version: str, topic: str | None) -> None:
    journey: dict[str, Any] = {"id": "offers", "steps": []}
    if topic is not None:
        journey["topic"] = topic
    session.add(
        JourneyVersion(
            journey_id="offers",
            version=version,
            plan={"journey": journey},
            templates={},
            created_at=NOW - timedelta(days=60),
        )
    )


def test_the_global_holdout_is_no_taker_of_a_marketing_split(db: Database) -> None:
    """The global holdout's members walk a marketing journey's split, but every send
    to them is skipped: they never get the case's message. Counted, they would make
    each case's rate the control group's in part; the split's counts and its stats
    leave them out. A transactional version sends to them: there they count."""
    treated = _customers(False, 6, "t")
    held = _customers(True, 7, "h")
    with db.session() as session:
        _version(session, "v1", "offers")  # marketing
        _version(session, "v2", "orders")  # transactional: members get its sends
        # offer_a: 2 of 4 treated customers convert; its 4 held members all convert.
        for i, customer in enumerate(treated[:4]):
            _took(session, customer, "offer_a", "v1", converted=i < 2)
        for customer in held[:4]:
            _took(session, customer, "offer_a", "v1", converted=True)
        # offer_b: 1 of 2 treated customers converts; its 2 held members do not.
        _took(session, treated[4], "offer_b", "v1", converted=True)
        _took(session, treated[5], "offer_b", "v1", converted=False)
        _took(session, held[4], "offer_b", "v1", converted=False)
        # An anonymous id merged into a held customer is held (as its send is).
        session.add(Customer(id=held[5]))
        session.add(Customer(id="anon-1", merged_into=held[5]))
        _took(session, "anon-1", "offer_b", "v1", converted=False)
        # A held member in a transactional version got the message: a taker.
        _took(session, held[6], "offer_b", "v2", converted=True)
    cases = [("offer_a", 50.0), ("offer_b", 50.0)]
    week = timedelta(days=7)
    with db.session() as session:
        diluted, _, _ = count_cases(session, "offers", "choose", cases, "order_placed", week, NOW)
        counts, takers, order = count_cases(
            session, "offers", "choose", cases, "order_placed", week, NOW, GLOBAL
        )
        unheld, _, _ = count_cases(
            session, "offers", "choose", cases, "order_placed", week, NOW, GlobalHoldout()
        )
    assert [(c.takers, c.conversions) for c in diluted] == [(8, 6), (5, 2)]
    assert [(c.takers, c.conversions) for c in unheld] == [(8, 6), (5, 2)]
    assert [(c.takers, c.conversions, c.exposure) for c in counts] == [
        (4, 2, 4.0),
        (3, 2, 3.0),
    ]
    assert takers == {"offer_a": 4, "offer_b": 3}
    assert len(order) == 7

    # The activity the workflow asks reads the same counts, with the worker's holdout.
    inp = SplitCountsInput(
        "offers", "choose", ["offer_a", "offer_b"], [50, 50], "order_placed", 7 * 86400, NOW
    )
    answer = OptimizeActivities(db, global_holdout=GLOBAL).split_counts(inp)
    assert [(c.takers, c.conversions) for c in answer.cases] == [(4, 2), (3, 2)]
    assert [(c.takers, c.conversions) for c in OptimizeActivities(db).split_counts(inp).cases] == [
        (8, 6),
        (5, 2),
    ]

    # `journeyman stats` reports the cases as the split counts them.
    plan = {
        "journey": {
            "id": "offers",
            "topic": "offers",
            "steps": [
                {
                    "id": "choose",
                    "split": [{"weight": 50, "goto": "offer_a"}, {"weight": 50, "goto": "offer_b"}],
                    "optimize": {"event": "order_placed", "within": "7d"},
                }
            ],
        }
    }
    with db.session() as session:
        (report,) = split_reports(session, "offers", plan, NOW, GLOBAL)
    assert [(c.takers, c.conversions, c.rate) for c in report.cases] == [
        (4, 2, 0.5),
        (3, 2, pytest.approx(2 / 3)),
    ]


def test_journey_stats_leave_the_global_holdout_out_of_split_cases(
    db: Database, tmp_path: Path
) -> None:
    from journeyman.dsl.compiler import compile_file

    (tmp_path / "journeys").mkdir()
    path = tmp_path / "journeys" / "offers.yaml"
    path.write_text(OFFERS.strip().replace("name: Offers", "name: Offers\ntopic: offers") + "\n")
    compiled = compile_file(path, tmp_path / "templates")
    Catalog.from_dirs(tmp_path / "journeys", tmp_path / "templates").register(db)
    now = datetime.now(UTC)  # what `journey_stats` counts at
    version = compiled.plan.version
    with db.session() as session:
        for customer in _customers(False, 3, "t"):
            _took(session, customer, "offer_a", version, converted=True, at=now)
        for customer in _customers(True, 5, "h"):
            _took(session, customer, "offer_a", version, converted=False, at=now)
    with db.session() as session:
        plain = journey_stats(session, "offers")
        stats = journey_stats(session, "offers", global_holdout=GLOBAL)
    assert [(c.takers, c.conversions) for c in plain.splits[0].cases] == [(8, 3), (0, 0)]
    assert [(c.takers, c.conversions) for c in stats.splits[0].cases] == [(3, 3), (0, 0)]


async def test_the_worker_draws_without_the_global_holdouts_takers(harness: Harness) -> None:
    """Held members took offer_a and all converted (they would have anyway, without its
    message); counted, they would make offer_a look best. The worker's split counts
    leave them out: offer_b, which converts 10 times as often as offer_a among those
    its message reached, gets the next customers."""
    harness.settings = harness.settings.model_copy(update={"global_holdout": "50%"})
    holdout = GlobalHoldout.from_settings(harness.settings)
    catalog = await harness.journey(OFFERS.replace("name: Offers", "name: Offers\ntopic: offers"))
    version = catalog.compiled["offers"].plan.version
    now = await harness.now()
    ids = [f"c{n}" for n in range(400)]
    treated = [c for c in ids if not holdout.holds(c)]
    held = [c for c in ids if holdout.holds(c)]
    with harness.db.session() as session:
        for n, customer in enumerate(treated[:60]):
            _took(session, customer, "offer_a", version, converted=n < 2, at=now)
        for customer in held[:60]:
            _took(session, customer, "offer_a", version, converted=True, at=now)
        for n, customer in enumerate(treated[60:120]):
            _took(session, customer, "offer_b", version, converted=n < 20, at=now)
    chosen = []
    for customer in treated[120:126]:
        harness.customer(customer)
        route = await harness.event("lapsed", customer)
        result = await harness.result(route.entered[0])
        split = next(p for p in result.path if p.action == "split")
        assert "Thompson sampling on order_placed: offer_a 2/60, offer_b 20/60" in split.detail
        chosen.append(case_of({"detail": split.detail}))
    assert chosen.count("offer_b") >= 5
