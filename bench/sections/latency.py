"""3. Event to message: from the API's 200 to the message in the outbox.

The whole product as operators run it — `journeyman api` and `journeyman worker` on one
SQLite file database, the dev server on its own file — and a journey with no wait
(`bench_signup`: entry, then send). First saturation: a burst of events (300; `--quick`
150) as fast as 16 connections post them, and the rate at which messages come out of
the other end (events / time from the first 200 to the last message). Then a fixed rate
at half of that, paced by the generator: the latency of each event, from its 200 to its outbox
row's `created_at`, split at the dispatcher's hand-off (`events.dispatched_at`).

The baseline is Temporal's share alone: the hand-written one-send workflow started by a
client, as a burst of as many (16 clients starting one after another) for its saturation,
then at the same rate as ours, timed from the start call's answer to the outbox row.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.core import (
    PYTHON,
    BenchError,
    Context,
    DevServer,
    Process,
    Table,
    clean_env,
    free_port,
    percentile,
    wait_for_file,
    wait_for_port,
)
from bench.handwritten import SEND_WORKFLOW, HandWrittenInput
from bench.workload import Project, prepare_database, trigger, write_project
from journeyman.dsl import Plan
from journeyman.platform.binaries import find_binary
from journeyman.storage.db import Database
from journeyman.storage.models import Event, OutboxMessage

NAME = "latency"
TITLE = "Event to message: API 200 to the outbox, at half of saturation"
WRITE_KEY = "wk_bench"
CONCURRENCY = 16


async def run(ctx: Context) -> list[Table]:
    root = ctx.folder(NAME)
    project = write_project(root)
    plan = project.plan("bench_signup")
    # The burst measures saturation over some 40 s a side at the 2026-12-07 AMD EPYC
    # host's 7 events/s (400 took 60 s a side there); the paced load keeps its 20 s.
    burst, duration = ctx.size(150, 300), ctx.seconds(8, 20)
    url = f"sqlite:///{root}/journeyman.db"
    # Customers with an email for every event the runs can send: each event has its own.
    most = int(duration * 400)
    people = [
        f"{p}u{i}"
        for p, n in (("s-", burst), ("r-", most), ("b-", burst), ("h-", most))
        for i in range(n)
    ]
    db = prepare_database(url, project, people)
    journeyman = find_binary("journeyman")
    if journeyman is None:
        raise BenchError("the journeyman script is not installed: run `make bench`")
    async with ctx.dev_server(f"{NAME}-temporal") as server:
        env = clean_env(
            DATABASE_URL=url,
            TEMPORAL_ADDRESS=server.address,
            JOURNEYMAN_TASK_QUEUE="bench-latency",
            JOURNEYMAN_WRITE_KEYS=WRITE_KEY,
            JOURNEYMAN_ADMIN_TOKEN="bench-admin",
            JOURNEYMAN_SECRET_KEY="bench-secret",
            JOURNEYS_DIR=str(project.journeys_dir),
            TEMPLATES_DIR=str(project.templates_dir),
        )
        worker = ctx.spawn("latency-worker", [journeyman, "worker"], env=env)
        port = free_port()
        api = ctx.spawn("latency-api", [journeyman, "api", "--port", str(port)], env=env)
        await wait_for_port(port, api)
        await _until_logged(worker, "polling")

        ctx.log(f"saturation: a burst of {burst:,} events")
        async with (
            ctx.profiling("latency-api", api.pid),
            ctx.profiling("latency-worker", worker.pid),
        ):
            sent = await _load(
                ctx, port, "s-", ["--count", str(burst), "--concurrency", str(CONCURRENCY)]
            )
            first_ok = min(at for _, at in sent["answered"])
            arrived = await _outbox(
                db, "s-u", burst, within=max(60.0, burst / 5), check=worker.check
            )
        saturation = burst / (max(arrived.values()) - first_ok)
        rate = saturation / 2

        ctx.log(f"half of saturation: {rate:.1f} events/s for {duration:g} s")
        paced = await _load(
            ctx,
            port,
            "r-",
            [
                "--rate",
                f"{rate:.3f}",
                "--duration",
                str(duration),
                "--warmup",
                "0",
                "--concurrency",
                str(CONCURRENCY),
            ],
        )
        answered = {user: at for user, at in paced["answered"]}
        arrived = await _outbox(db, "r-u", len(answered), within=120, check=worker.check)
        dispatched = await asyncio.to_thread(_dispatched, db, "r-")
        ours = _latencies(answered, arrived)
        to_dispatch = [dispatched[u] - answered[u] for u in answered if u in dispatched]
        ctx.stop(api)
        ctx.stop(worker)

        ctx.log(
            f"baseline: a burst of {burst:,} hand-written sends, then {rate:.1f}/s "
            f"for {duration:g} s"
        )
        base, base_saturation = await _baseline(
            ctx, server, project, plan, url, rate, duration, burst, db
        )

    db.dispose()
    table = Table(
        f"{rate:.1f} events/s for {duration:g} s (half of saturation, {saturation:.1f}/s)",
        ours="Journeyman: API 200 → outbox",
        baseline="Temporal alone: start → outbox",
    )
    table.add("latency p50", 1000 * percentile(ours, 50), 1000 * percentile(base, 50), "ms")
    table.add("latency p99", 1000 * percentile(ours, 99), 1000 * percentile(base, 99), "ms")
    table.add("latency max", 1000 * max(ours), 1000 * max(base), "ms")
    table.add("messages", len(ours), len(base))
    table.add(
        "of which 200 → hand-off p50",
        1000 * percentile(to_dispatch, 50),
        None,
        "ms",
    )
    table.add("of which 200 → hand-off p99", 1000 * percentile(to_dispatch, 99), None, "ms")
    table.add("saturation (events → messages)", saturation, base_saturation, "/s")
    table.notes += [
        "hand-off: the dispatcher's `dispatched_at`, after the run was started "
        "(the trigger in its start input) and recorded",
        f"saturation: {burst:,} events posted by {CONCURRENCY} connections as fast as the "
        "API answers, over the time from the first 200 to the last outbox row; "
        f"Temporal alone: {burst:,} hand-written sends started by {CONCURRENCY} concurrent "
        "clients, over the time from the first start's answer to the last outbox row",
    ]
    ctx.settings["event to message"] = (
        "`journeyman api` + `journeyman worker` (defaults) on one SQLite file, "
        "a journey of one send; generator paced at half of the measured saturation"
    )
    return [table]


async def _load(ctx: Context, port: int, prefix: str, extra: list[str]) -> dict[str, Any]:
    out = ctx.workdir / f"load-{NAME}-{prefix}json"
    command = [
        PYTHON,
        "-m",
        "bench.loadgen",
        "load",
        "--port",
        str(port),
        "--out",
        str(out),
        "--write-key",
        WRITE_KEY,
        "--event",
        "bench_signed_up",
        "--users",
        "0",
        "--prefix",
        prefix,
        *extra,
    ]
    generator = ctx.spawn(f"loadgen-{NAME}-{prefix.strip('-')}", command)
    code = await asyncio.to_thread(generator.popen.wait)
    ctx.stop(generator)
    if code != 0:
        raise BenchError(f"the load generator failed ({code}):\n{generator.tail()}")
    result: dict[str, Any] = json.loads(Path(out).read_text())
    if result["errors"]:
        raise BenchError(f"the API refused {result['errors']} events")
    return result


async def _until_logged(process: Process, text: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while text not in process.tail(100_000):
        process.check()
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name} did not log {text!r} in {within:g} s")
        await asyncio.sleep(0.1)


async def _outbox(
    db: Database, prefix: str, expected: int, within: float, check: Any
) -> dict[str, float]:
    """customer -> when its message reached the outbox, once `expected` are there."""
    deadline = time.monotonic() + within
    while True:
        arrived = await asyncio.to_thread(_outbox_rows, db, prefix)
        if len(arrived) >= expected:
            return arrived
        check()
        if time.monotonic() > deadline:
            raise BenchError(
                f"{len(arrived)} of {expected} messages in the outbox after {within:g} s"
            )
        await asyncio.sleep(0.25)


def _outbox_rows(db: Database, prefix: str) -> dict[str, float]:
    with db.session() as session:
        rows = session.execute(
            select(OutboxMessage.customer_id, OutboxMessage.created_at).where(
                OutboxMessage.customer_id.startswith(prefix)
            )
        ).all()
    return {customer: _epoch(at) for customer, at in rows}


def _dispatched(db: Database, prefix: str) -> dict[str, float]:
    with db.session() as session:
        rows = session.execute(
            select(Event.customer_id, Event.dispatched_at).where(
                Event.message_id.startswith(prefix), Event.dispatched_at.is_not(None)
            )
        ).all()
    return {customer: _epoch(at) for customer, at in rows if at is not None}


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _latencies(answered: dict[str, float], arrived: dict[str, float]) -> list[float]:
    return [arrived[user] - at for user, at in answered.items() if user in arrived]


async def _baseline(
    ctx: Context,
    server: DevServer,
    project: Project,
    plan: Plan,
    url: str,
    rate: float,
    duration: float,
    burst: int,
    db: Database,
) -> tuple[list[float], float]:
    """Temporal's share: latencies at `rate`, and the saturation of a burst."""
    task_queue = "bench-latency-hand"
    ready = ctx.workdir / "latency-hand.ready"
    worker = ctx.spawn(
        "latency-hand-worker",
        [PYTHON, "-m", "bench.worker", "handwritten", "--ready", str(ready)],
        env=clean_env(
            TEMPORAL_ADDRESS=server.address,
            DATABASE_URL=url,
            JOURNEYMAN_TASK_QUEUE=task_queue,
            JOURNEYMAN_SECRET_KEY="bench-secret",
            JOURNEYS_DIR=str(project.journeys_dir),
            TEMPLATES_DIR=str(project.templates_dir),
        ),
    )
    await wait_for_file(ready, worker)
    client = await server.client()
    count = int(rate * duration)
    answered: dict[str, float] = {}

    async def start(customer: str) -> None:
        await client.start_workflow(
            SEND_WORKFLOW,
            HandWrittenInput(
                journey_id=plan.journey.id,
                version=plan.version,
                customer_id=customer,
                trigger=trigger("bench_signed_up", customer),
                wait=timedelta(0),
            ),
            id=f"hand/{customer}",
            task_queue=task_queue,
        )
        answered[customer] = time.time()

    # The burst, as the API's: CONCURRENCY clients starting one after another.
    queue = [f"b-u{i}" for i in range(burst)]

    async def starter() -> None:
        while queue:
            await start(queue.pop(0))

    await asyncio.gather(*(starter() for _ in range(CONCURRENCY)))
    first = min(answered.values())
    arrived = await _outbox(db, "b-u", burst, within=max(60.0, burst / 5), check=worker.check)
    saturation = burst / (max(arrived.values()) - first)

    answered.clear()

    async def paced(seq: int, due: float) -> None:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        await start(f"h-u{seq}")

    began = time.monotonic()
    await asyncio.gather(*(paced(i, began + i / rate) for i in range(count)))
    arrived = await _outbox(db, "h-u", count, within=120, check=worker.check)
    ctx.stop(worker)
    return _latencies(answered, arrived), saturation
