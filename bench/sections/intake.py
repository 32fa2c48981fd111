"""2. Intake: events through the whole API against a bare endpoint of the same framework.

Four servers, one at a time, each under the same fixed load from `bench.loadgen` in a
process of its own (keep-alive connections, closed loop, fixed concurrency):

- the generator's ceiling: a bare asyncio server answering without parsing anything;
- the baseline: FastAPI + uvicorn with the API's server settings, parsing the body;
- Journeyman: `journeyman api` as operators run it (SQLite file database, dispatcher
  running): write key, validation, de-duplication by messageId, storage, hand-off;
  twice, each on a fresh database, with two kinds of events (spread over 1,000
  customers):
  - `bench_page_viewed`, which no journey hears, as most of a shop's events (page and
    product views): stored already handed over, the dispatcher never reads them;
  - `bench_replied`, which the benchmark journey's `wait_for` hears: the dispatcher
    hands each over (reads it, leases its customer, looks up the customer's running
    runs, of which there are none, and marks it), without a Temporal call: section 3
    times the way into Temporal.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.core import (
    PYTHON,
    Context,
    Process,
    Sampler,
    Table,
    Target,
    clean_env,
    free_port,
    mib,
    wait_for_port,
)
from bench.workload import write_project
from journeyman.platform.binaries import find_binary
from journeyman.storage.db import Database
from journeyman.storage.models import Event

NAME = "intake"
TITLE = "Intake: the full API vs a bare FastAPI endpoint"
WRITE_KEY = "wk_bench"
CONCURRENCY = 16
UNHEARD = "bench_page_viewed"  # no journey hears it
HEARD = "bench_replied"  # bench_overhead's `listen` step waits for it


async def run(ctx: Context) -> list[Table]:
    root = ctx.folder(NAME)
    project = write_project(root)
    duration, warmup = ctx.seconds(3, 15), ctx.seconds(1, 2)
    results: dict[str, dict[str, Any]] = {}

    async def measure(
        name: str, command: list[str], env: dict[str, str] | None = None, event: str = UNHEARD
    ) -> None:
        port = free_port()
        server = ctx.spawn(name, [*command, "--port", str(port)], env=env)
        try:
            await wait_for_port(port, server)
            ctx.log(f"{name}: {CONCURRENCY} connections for {warmup:g}+{duration:g} s")
            results[name] = await load(ctx, server, port, name, duration, warmup, event)
        finally:
            ctx.stop(server)

    await measure("ceiling", [PYTHON, "-m", "bench.loadgen", "serve"])
    await measure("bare", [PYTHON, "-m", "bench.bare"])
    journeyman = find_binary("journeyman")
    assert journeyman is not None, "the journeyman script is not installed: run `make bench`"
    counts: dict[str, tuple[int, int]] = {}
    for name, event in (("journeyman", UNHEARD), ("journeyman-heard", HEARD)):
        url = f"sqlite:///{root}/{name}.db"
        env = clean_env(
            DATABASE_URL=url,
            JOURNEYMAN_WRITE_KEYS=WRITE_KEY,
            JOURNEYMAN_ADMIN_TOKEN="bench-admin",
            JOURNEYMAN_SECRET_KEY="bench-secret",
            # No journey enters on these events: the API never calls Temporal (lazy client).
            TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
            JOURNEYS_DIR=str(project.journeys_dir),
            TEMPLATES_DIR=str(project.templates_dir),
        )
        await measure(name, [journeyman, "api", "--host", "127.0.0.1"], env, event)
        counts[name] = await asyncio.to_thread(_events, url)
    ours, heard = results["journeyman"], results["journeyman-heard"]
    bare, ceiling = results["bare"], results["ceiling"]
    table = Table(
        f"{CONCURRENCY} keep-alive connections, closed loop, {duration:g} s",
        ours="Journeyman API",
        baseline="bare FastAPI",
    )
    table.add("events/s", ours["rate"], bare["rate"], target=Target(">=", 0.3))
    table.add("latency p50", ours["p50_ms"], bare["p50_ms"], "ms", digits=2)
    table.add("latency p99", ours["p99_ms"], bare["p99_ms"], "ms", digits=2)
    table.add("server CPU per event", ours["cpu_ms"], bare["cpu_ms"], "ms", digits=2)
    table.add("server peak RSS", ours["rss_mib"], bare["rss_mib"], "MiB")
    table.add("errors", ours["errors"], bare["errors"])
    table.add("events/s, events a journey hears", heard["rate"], bare["rate"])
    table.add(
        "latency p50, events a journey hears", heard["p50_ms"], bare["p50_ms"], "ms", digits=2
    )
    table.add(
        "latency p99, events a journey hears", heard["p99_ms"], bare["p99_ms"], "ms", digits=2
    )
    table.add(
        "server CPU per event, events a journey hears", heard["cpu_ms"], bare["cpu_ms"], "ms",
        digits=2,
    )  # fmt: skip
    table.add("errors, events a journey hears", heard["errors"], bare["errors"])
    stored, dispatched = counts["journeyman"]
    heard_stored, heard_dispatched = counts["journeyman-heard"]
    table.notes += [
        f"the generator alone (against a bare asyncio server) drives {ceiling['rate']:,.0f} "
        f"requests/s at p50 {ceiling['p50_ms']:.2f} ms: the figures above are the servers', "
        "not the generator's; on 2 cores the generator and the server share the CPU",
        f"`{UNHEARD}`, which no journey hears: Journeyman stored {stored:,} events, "
        f"{dispatched:,} of them handed over as they were stored",
        f"`{HEARD}`, which a journey's `wait_for` hears: Journeyman stored {heard_stored:,} "
        f"events; the dispatcher had handed over {heard_dispatched:,} of them when the API "
        "stopped",
    ]
    ctx.settings["intake load"] = (
        f"`bench.loadgen`: {CONCURRENCY} keep-alive connections, closed loop, "
        f"{warmup:g} s warm-up then {duration:g} s, one `track` event (~330 bytes) a request"
    )
    ctx.settings["API"] = (
        "`journeyman api` (uvicorn, one process, h11, log level warning), SQLite file "
        "database, dispatcher in the process"
    )
    return [table]


async def load(
    ctx: Context,
    server: Process,
    port: int,
    name: str,
    duration: float,
    warmup: float,
    event: str = UNHEARD,
) -> dict[str, Any]:
    out = ctx.workdir / f"load-{name}.json"
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
        "--concurrency",
        str(CONCURRENCY),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--prefix",
        f"{name}-",
        "--event",
        event,
    ]
    sampler = Sampler({"server": server.pid}).start()
    generator = ctx.spawn(f"loadgen-{name}", command)
    await asyncio.sleep(warmup)
    sampler.mark()
    async with ctx.profiling(f"intake-{name}", server.pid):
        code = await asyncio.to_thread(generator.popen.wait, warmup + duration + 60)
    stats = sampler.stop()["server"]
    ctx.stop(generator)
    if code != 0:
        raise RuntimeError(f"the load generator failed ({code}):\n{generator.tail()}")
    result: dict[str, Any] = json.loads(Path(out).read_text())
    # CPU from about the end of the warm-up, over the requests measured after it.
    result["cpu_ms"] = 1000 * stats.cpu_seconds / max(result["requests"], 1)
    result["rss_mib"] = mib(stats.peak_rss)
    return result


def _events(url: str) -> tuple[int, int]:
    db = Database(url)
    try:
        with db.session() as session:
            stored = session.scalar(select(func.count()).select_from(Event)) or 0
            dispatched = (
                session.scalar(
                    select(func.count()).select_from(Event).where(Event.dispatched_at.is_not(None))
                )
                or 0
            )
        return stored, dispatched
    finally:
        db.dispose()
