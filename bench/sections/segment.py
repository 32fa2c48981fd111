"""5. Segment tick: checking a segment over 100,000 stored profiles.

N customers (100,000; `--quick` 10,000) in a SQLite file database, each with a `tier`
trait (one in seven `gold`) and two `order_placed` events at random times in the past
400 days: 200,000 events. The segment is a win-back's:

    last('order_placed') and last('order_placed').at < now - days(365)
    and profile.tier == 'gold'

which about one customer in a thousand matches, so the check's time is the evaluation
of everyone, not the entering of a few.

1. **The tick as it runs**: an `Audience` run (what a schedule starts) on a dev server,
   executed by the product's worker in its own process (`bench.worker journeyman`):
   time from start to result, customers evaluated per second, the worker's peak memory
   and CPU. The baseline is the database alone answering the same question in one SQL
   statement (latest order per customer, the tier from the JSON traits): what no
   evaluator of ours can beat.
2. **Why history is read per page**: the segment evaluated in this process over the
   same profiles with `PageHistory` (one query per page of 500 for `last()`) against
   the per-customer history functions the journey activities use (one query per
   customer and call), on the first 10,000 customers.
3. **On PostgreSQL, at a retailer's size**: 1,000,000 profiles (`--quick` 20,000) and
   their 2,000,000 orders loaded with `COPY` into a fresh database on
   `JOURNEYMAN_BENCH_POSTGRES` (default the suite's server), and the tick's evaluation
   (`pages`, as the tick activity walks them: the SQL prefilter of
   journeyman/audiences/pushdown.py, then the segment in Python on the rows it keeps,
   and the entry rules) over all of them, in this process, against PostgreSQL
   answering the question alone in one statement, and against today's evaluator
   (every profile in Python) on the first 20,000 (`--quick` 5,000). The same segment:
   about one customer in a thousand matches, so nothing here is about starting runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, text
from sqlalchemy.exc import OperationalError

from bench.core import (
    PYTHON,
    Context,
    ProcessStats,
    Sampler,
    Table,
    Target,
    clean_env,
    mib,
    wait_for_file,
)
from bench.sections.intake_postgres import DEFAULT_SERVER
from journeyman.audiences import schedules
from journeyman.audiences.segments import pages
from journeyman.contracts import AudienceTickResult
from journeyman.customers.clock import zone
from journeyman.customers.profiles import clock_names, history_functions
from journeyman.dsl.compiler import Compiled, compile_file
from journeyman.dsl.evaluate import evaluate
from journeyman.dsl.plan import Plan
from journeyman.events.routing import Catalog
from journeyman.storage import migrate
from journeyman.storage.db import Database
from journeyman.storage.models import Customer, Event

NAME = "segment"
TITLE = "Segment tick over stored profiles"
SEGMENT = (
    "last('order_placed') and last('order_placed').at < now - days(365) and profile.tier == 'gold'"
)
JOURNEY = f"""\
id: bench_lapsed
name: Bench lapsed gold customers
entry:
  segment: "{SEGMENT}"
  every: 1d
steps:
  - {{id: done, end: true}}
"""
# The same question for SQLite alone: customers whose latest order is older than a year
# and whose traits say gold.
SQL = """
SELECT count(*) FROM customers AS c
JOIN (SELECT customer_id, max(timestamp) AS latest FROM events
      WHERE name = 'order_placed' AND timestamp <= :now GROUP BY customer_id) AS o
  ON o.customer_id = c.id
WHERE c.merged_into IS NULL AND o.latest < :cutoff
  AND json_extract(c.traits, '$.tier') = 'gold'
"""
PER_CUSTOMER = 10_000


async def run(ctx: Context) -> list[Table]:
    n = ctx.size(10_000, 100_000)
    root = ctx.folder(NAME)
    compiled = _project(root)
    plan = compiled.plan
    url = f"sqlite:///{root}/profiles.db"
    now = datetime.now(UTC)
    ctx.log(f"storing {n:,} profiles and {2 * n:,} events")
    db = _profiles(url, compiled, n, now)
    try:
        ctx.log("the database alone: one SQL statement")
        sql_seconds, sql_matched = _sql(db, now)
        ctx.log(f"a segment tick over {n:,} profiles on a dev server and worker")
        tick, tick_seconds, worker = await _tick(ctx, root, url, plan)
        checked = min(n, PER_CUSTOMER)
        ctx.log(f"evaluation in this process: per page and per customer, {checked:,} profiles")
        paged = _evaluate(db, plan, now, checked, paged=True)
        single = _evaluate(db, plan, now, checked, paged=False)
    finally:
        db.dispose()
    if tick.matched != sql_matched:
        raise RuntimeError(f"the tick matched {tick.matched}, SQL {sql_matched}: not the same")

    ticking = Table(
        f"A segment tick over {n:,} profiles ({tick.matched:,} match)",
        ours="Journeyman tick",
        baseline="SQLite alone (one query)",
    )
    ticking.add("customers evaluated per second", n / tick_seconds, n / sql_seconds, digits=0)
    ticking.add("time", tick_seconds, sql_seconds, "s", digits=2)
    ticking.add("customers entered", tick.entered)
    ticking.add("worker peak RSS", mib(worker.peak_rss), unit="MiB")
    ticking.add("worker CPU per 1,000 customers", 1000 * worker.cpu_seconds / n, unit="s", digits=3)
    ticking.notes.append(
        "the tick: an Audience run started as a schedule starts it, one heartbeating "
        "activity walking the customers in windows of 50,000 ids, reading those the SQL "
        "prefilter keeps, evaluating the segment on them with the customer's profile, "
        "history and clock, deciding entries, entering the matching customers (starting "
        "their runs) and recording progress per page; the baseline counts the same "
        "customers in one SQL statement and evaluates nothing"
    )
    batching = Table(
        f"Evaluating the segment over {checked:,} profiles, in this process",
        ours="history per page",
        baseline="history per customer",
    )
    batching.add(
        "customers evaluated per second",
        checked / paged,
        checked / single,
        target=Target(">=", 1.0),
        digits=0,
    )
    batching.add("time", paged, single, "s", digits=2)
    return [ticking, batching, *await asyncio.to_thread(_postgres, ctx, plan, now)]


# -- on PostgreSQL, at a retailer's size --------------------------------------------------

POSTGRES_SQL = """
SELECT count(*) FROM customers AS c
JOIN (SELECT customer_id, max(timestamp) AS latest FROM events
      WHERE name = 'order_placed' AND timestamp <= :now GROUP BY customer_id) AS o
  ON o.customer_id = c.id
WHERE c.merged_into IS NULL AND o.latest < :cutoff AND c.traits ->> 'tier' = 'gold'
"""
# Customers/s over 1,000,000 profiles on PostgreSQL that issue 19 asks of a tick.
GOAL = 100_000


def _postgres(ctx: Context, plan: Plan, now: datetime) -> list[Table]:
    n = ctx.size(20_000, 1_000_000)
    in_python = ctx.size(5_000, 20_000)
    server = os.environ.get("JOURNEYMAN_BENCH_POSTGRES", DEFAULT_SERVER)
    with _postgres_database(server) as db:
        if db is None:
            ctx.log(f"no PostgreSQL at {server}: the PostgreSQL part is left out")
            return []
        migrate.upgrade(db)
        ctx.log(f"PostgreSQL: loading {n:,} profiles and {2 * n:,} events with COPY")
        _copy_profiles(db, n, now)
        ctx.log("PostgreSQL alone: one SQL statement")
        began = time.perf_counter()
        with db.engine.connect() as connection:
            sql_matched = connection.execute(
                text(POSTGRES_SQL), {"now": now, "cutoff": now - timedelta(days=365)}
            ).scalar_one()
        sql_seconds = time.perf_counter() - began
        ctx.log(f"the tick's evaluation over {n:,} profiles, SQL prefilter then Python")
        ours, matched, evaluated = _walk(db, plan, now, n, narrow=True)
        ctx.log(f"today's evaluator, every profile in Python, on the first {in_python:,}")
        python, _, python_evaluated = _walk(db, plan, now, in_python, narrow=False)
    if (matched, evaluated) != (sql_matched, n):
        raise RuntimeError(f"the tick matched {matched} of {evaluated}, SQL {sql_matched} of {n}")
    table = Table(
        f"A segment tick's evaluation over {n:,} profiles on PostgreSQL ({matched:,} match)",
        ours="SQL prefilter + Python",
        baseline="PostgreSQL alone (one query)",
    )
    table.add("customers evaluated per second", n / ours, n / sql_seconds, digits=0)
    table.add("time", ours, sql_seconds, "s", digits=2)
    table.notes.append(
        "ours: `pages()` as the tick activity walks them, in this process (no Temporal, "
        "nobody entered): each page counts a window of 50,000 customer ids and reads "
        "only the profiles the SQL prefilter keeps (those that may match or fail), on "
        "which the segment is evaluated in Python, then the entry rules; one customer in "
        "a thousand matches, so starting runs plays no part; the baseline counts the same "
        "customers in one statement and evaluates nothing"
    )
    against = Table(
        f"The same evaluation against today's and against the goal ({n:,} profiles)",
        ours="SQL prefilter + Python",
        baseline=f"every profile in Python (first {in_python:,})",
    )
    against.add(
        "customers evaluated per second",
        n / ours,
        python_evaluated / python,
        target=Target(">=", 10.0),
        digits=0,
    )
    goal = against.add("customers evaluated per second, goal", n / ours, GOAL, digits=0)
    goal.target = Target(">=", 1.0)
    return [table, against]


def _walk(
    db: Database, plan: Plan, now: datetime, n: int, *, narrow: bool
) -> tuple[float, int, int]:
    """Seconds to evaluate (and decide entries for) at least the first `n` customers,
    with how many matched and were evaluated."""
    matched = evaluated = 0
    began = time.perf_counter()
    for page in pages(db, plan, now, tick_id="bench/postgres", narrow=narrow):
        matched += page.matched
        evaluated += page.evaluated
        if evaluated >= n:
            break
    return time.perf_counter() - began, matched, evaluated


@contextlib.contextmanager
def _postgres_database(server: str) -> Iterator[Database | None]:
    """A fresh database on `server`, dropped afterwards; None when none answers."""
    name = f"jm_bench_segment_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError:
        admin.dispose()
        yield None
        return
    db = Database(f"{server}/{name}")
    try:
        yield db
    finally:
        db.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _copy_profiles(db: Database, n: int, now: datetime) -> None:
    """`n` customers as in `_profiles` (one in seven gold, two orders each), by COPY."""
    rng = random.Random(7)
    stamp = now.isoformat()
    customers, events = io.StringIO(), io.StringIO()
    for i in range(n):
        c = f"c{i:07d}"
        tier = "gold" if rng.random() < 1 / 7 else "standard"
        zone_name = rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"])
        customers.write(
            f'{c}\t{c}@example.com\t{zone_name}\t[]\t{{"tier": "{tier}"}}\t{stamp}\t{stamp}\n'
        )
        for k in range(2):
            at = now - timedelta(minutes=rng.randrange(1, 400 * 24 * 60))
            events.write(
                f"order-{c}-{k}\ttrack\t{c}\torder_placed\t"
                f'{{"total": 42.5}}\t{at.isoformat()}\t{stamp}\t{stamp}\t0\n'
            )
    customer_columns = "id, email, timezone, push_tokens, traits, created_at, updated_at"
    event_columns = (
        "message_id, type, customer_id, name, properties, timestamp, received_at,"
        " dispatched_at, attempts"
    )
    connection = db.engine.raw_connection()
    try:
        cursor: Any = connection.cursor()
        # Secondary indexes are built once after the load, not row by row during it.
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('customers', 'events')"
            " AND indexname LIKE 'ix_%'"
        )
        indexes = cursor.fetchall()
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        for table, columns, data in (
            ("customers", customer_columns, customers),
            ("events", event_columns, events),
        ):
            with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                copy.write(data.getvalue())
        for _, definition in indexes:
            cursor.execute(definition)
        connection.commit()
    finally:
        connection.close()
    # As autovacuum leaves tables at rest: statistics, and index-only scans.
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as vacuum:
        vacuum.execute(text("VACUUM ANALYZE customers"))
        vacuum.execute(text("VACUUM ANALYZE events"))


def _project(root: Path) -> Compiled:
    journeys, templates = root / "journeys", root / "templates"
    journeys.mkdir(parents=True, exist_ok=True)
    templates.mkdir(exist_ok=True)
    (journeys / "bench_lapsed.yaml").write_text(JOURNEY)
    return compile_file(journeys / "bench_lapsed.yaml", templates)


def _profiles(url: str, compiled: Compiled, n: int, now: datetime) -> Database:
    """A migrated database with the journey registered, `n` customers and their orders."""
    db = Database(url)
    migrate.upgrade(db)
    Catalog([compiled]).register(db)
    rng = random.Random(7)
    for start in range(0, n, 10_000):
        ids = [f"c{i:07d}" for i in range(start, min(n, start + 10_000))]
        customers = [
            {
                "id": c,
                "email": f"{c}@example.com",
                "timezone": rng.choice(["Europe/Paris", "America/New_York", "Asia/Tokyo"]),
                "traits": {"tier": "gold" if rng.random() < 1 / 7 else "standard"},
                "push_tokens": [],
            }
            for c in ids
        ]
        events = [
            {
                "message_id": f"order-{c}-{k}",
                "type": "track",
                "customer_id": c,
                "name": "order_placed",
                "properties": {"total": 42.5},
                "timestamp": now - timedelta(minutes=rng.randrange(1, 400 * 24 * 60)),
                "dispatched_at": now,
                "attempts": 0,
            }
            for c in ids
            for k in range(2)
        ]
        with db.session() as session:
            session.execute(insert(Customer), customers)
            session.execute(insert(Event), events)
    return db


def _sql(db: Database, now: datetime) -> tuple[float, int]:
    began = time.perf_counter()
    with db.engine.connect() as connection:
        matched = connection.execute(
            text(SQL),
            {"now": _sqlite_time(now), "cutoff": _sqlite_time(now - timedelta(days=365))},
        ).scalar_one()
    return time.perf_counter() - began, int(matched)


def _sqlite_time(moment: datetime) -> str:
    """As `UTCDateTime` stores it on SQLite, so that text comparison orders it."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


async def _tick(
    ctx: Context, root: Path, url: str, plan: Plan
) -> tuple[AudienceTickResult, float, ProcessStats]:
    task_queue = f"bench-segment-{uuid.uuid4().hex[:8]}"
    async with ctx.dev_server(f"{NAME}-temporal") as server:
        client = await server.client()
        ready = root / "worker.ready"
        worker = ctx.spawn(
            "segment-worker",
            [PYTHON, "-m", "bench.worker", "journeyman", "--ready", str(ready)],
            env=clean_env(
                TEMPORAL_ADDRESS=server.address,
                DATABASE_URL=url,
                JOURNEYMAN_TASK_QUEUE=task_queue,
                JOURNEYMAN_SECRET_KEY="bench-secret",
                JOURNEYS_DIR=str(root / "journeys"),
                TEMPLATES_DIR=str(root / "templates"),
            ),
        )
        try:
            await wait_for_file(ready, worker)
            sampler = Sampler({"worker": worker.pid}).start()
            began = time.monotonic()
            async with ctx.profiling("segment-worker", worker.pid):
                handle = await schedules.start_tick(
                    client,
                    plan,
                    tick_id=f"audience/bench_lapsed-{uuid.uuid4().hex[:8]}",
                    task_queue=task_queue,
                    kind="schedule",
                )
                result = await handle.result()
            seconds = time.monotonic() - began
            stats = sampler.stop()["worker"]
        finally:
            ctx.stop(worker)
    return result, seconds, stats


def _evaluate(db: Database, plan: Plan, now: datetime, n: int, *, paged: bool) -> float:
    """Seconds to evaluate the segment for the first `n` customers, with the page's
    batched history (as the tick does) or each customer's own queries."""
    segment = plan.journey.entry.segment
    assert segment is not None
    journey = {"id": plan.journey.id, "name": plan.journey.name, "version": plan.version}
    began = time.perf_counter()
    if paged:
        seen = 0
        # Every profile in Python, as before the SQL prefilter: history per page alone.
        for page in pages(db, plan, now, tick_id="bench/paged", narrow=False):
            seen += page.evaluated
            if seen >= n:
                break
        return time.perf_counter() - began
    with db.session() as session:
        customers = session.query(Customer).order_by(Customer.id).limit(n).all()
        for customer in customers:
            names = {
                "profile": customer.as_profile(),
                "now": now,
                "journey": journey,
                **history_functions(session, customer.id, now),
                **clock_names(now, zone(customer.timezone)),
            }
            evaluate(segment.tree, names)
    return time.perf_counter() - began
