"""2. Intake: events through the whole API against a bare endpoint of the same framework.

Four servers, each under the same fixed load from `bench.loadgen` in a process of its
own (keep-alive connections, closed loop, fixed concurrency):

- the generator's ceiling: a bare asyncio server answering without parsing anything;
- the baseline: FastAPI + uvicorn with the API's server settings, parsing the body;
- Journeyman: `journeyman api` as operators run it (SQLite file database, dispatcher
  running): write key, validation, de-duplication by messageId, storage, hand-off;
  twice, each on a fresh database, with two kinds of events (spread over 1,000
  customers):
  - `bench_page_viewed`, which no journey hears, as many of a shop's events (page
    views, searches): stored already handed over, the dispatcher never reads them;
  - `bench_replied`, which the benchmark journey's `wait_for` hears: the dispatcher
    hands each over (reads it, leases its customer, looks up the customer's running
    runs, of which there are none, and marks it), without a Temporal call: section 3
    times the way into Temporal.

The generator's ceiling is measured first, alone. The other three run side by side, each
idle but for its own load, and each side's load comes in windows taken in turn
(`bench.core.alternate`: bare, Journeyman, Journeyman-heard, then the other way round),
so that the host's changing speed weighs on each side alike.
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
    Measure,
    Process,
    Sampler,
    Table,
    Target,
    Window,
    alternate,
    clean_env,
    free_port,
    wait_for_port,
)
from bench.workload import Project, write_project
from journeyman.platform.binaries import find_binary
from journeyman.storage.db import Database
from journeyman.storage.models import Event

NAME = "intake"
TITLE = "Intake: the full API vs a bare FastAPI endpoint"
WRITE_KEY = "wk_bench"
CONCURRENCY = 16
UNHEARD = "bench_page_viewed"  # no journey hears it
HEARD = "bench_replied"  # bench_overhead's `listen` step waits for it
# Each side's measured seconds come in this many windows, the sides taken in turn.
WINDOWS = 4
WINDOWS_QUICK = 2
REWARM = 1.0  # seconds of warm-up of a side's later windows (new connections)
FIRST_STEP = 10_000_000  # message numbers of one window of load, at most


async def run(ctx: Context) -> list[Table]:
    root = ctx.folder(NAME)
    project = write_project(root)
    duration, warmup = ctx.seconds(3, 15), ctx.seconds(1, 2)
    windows = WINDOWS_QUICK if ctx.quick else WINDOWS
    journeyman = find_binary("journeyman")
    assert journeyman is not None, "the journeyman script is not installed: run `make bench`"
    servers: dict[str, tuple[Process, int]] = {}

    async def start(name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        port = free_port()
        servers[name] = (ctx.spawn(name, [*command, "--port", str(port)], env=env), port)
        await wait_for_port(port, servers[name][0])

    def side(name: str, event: str = UNHEARD) -> Measure:
        async def measure(number: int, seconds: float, warm: float) -> Window:
            process, port = servers[name]
            ctx.log(
                f"{name}: window {number + 1}, {CONCURRENCY} connections, {warm:g}+{seconds:g} s"
            )
            return await load(ctx, process, port, name, number, seconds, warm, event)

        return measure

    try:
        await start("ceiling", [PYTHON, "-m", "bench.loadgen", "serve"])
        ceiling = (await alternate({"ceiling": side("ceiling")}, 1, duration, warmup, 0))["ceiling"]
        ctx.stop(servers.pop("ceiling")[0])
        await start("bare", [PYTHON, "-m", "bench.bare"])
        urls = {}
        for name in ("journeyman", "journeyman-heard"):
            urls[name] = f"sqlite:///{root}/{name}.db"
            await start(
                name, [journeyman, "api", "--host", "127.0.0.1"], api_env(urls[name], project)
            )
        sides = {
            "bare": side("bare"),
            "journeyman": side("journeyman"),
            "journeyman-heard": side("journeyman-heard", HEARD),
        }
        results = await alternate(sides, windows, duration, warmup, REWARM)
    finally:
        for process, _port in servers.values():
            ctx.stop(process)
    counts = {name: await asyncio.to_thread(_events, url) for name, url in urls.items()}
    ours, heard, bare = results["journeyman"], results["journeyman-heard"], results["bare"]
    table = Table(
        f"{CONCURRENCY} keep-alive connections, closed loop, {duration:g} s a side "
        f"in {windows} windows",
        ours="Journeyman API",
        baseline="bare FastAPI",
    )
    table.add("events/s", ours.rate, bare.rate, target=Target(">=", 0.3))
    table.add("latency p50", ours.p50_ms, bare.p50_ms, "ms", digits=2)
    table.add("latency p99", ours.p99_ms, bare.p99_ms, "ms", digits=2)
    table.add("server CPU per event", ours.cpu_ms("server"), bare.cpu_ms("server"), "ms", digits=2)
    table.add("server peak RSS", ours.rss_mib("server"), bare.rss_mib("server"), "MiB")
    table.add("errors", ours.errors, bare.errors)
    table.add("events/s, events a journey hears", heard.rate, bare.rate)
    table.add("latency p50, events a journey hears", heard.p50_ms, bare.p50_ms, "ms", digits=2)
    table.add("latency p99, events a journey hears", heard.p99_ms, bare.p99_ms, "ms", digits=2)
    table.add(
        "server CPU per event, events a journey hears", heard.cpu_ms("server"),
        bare.cpu_ms("server"), "ms", digits=2,
    )  # fmt: skip
    table.add("errors, events a journey hears", heard.errors, bare.errors)
    stored, dispatched = counts["journeyman"]
    heard_stored, heard_dispatched = counts["journeyman-heard"]
    table.notes += [
        f"the three servers run side by side, idle but for their own load: each side's "
        f"{duration:g} s are {windows} windows taken in turn, the order reversed every "
        "other round (bare, Journeyman, Journeyman with events a journey hears, then "
        "back), so that the host's speed, which moves by a quarter from one minute to "
        "the next, weighs on every side alike",
        f"the generator alone (against a bare asyncio server) drives {ceiling.rate:,.0f} "
        f"requests/s at p50 {ceiling.p50_ms:.2f} ms: the figures above are the servers', "
        "not the generator's; on 2 cores the generator and the server share the CPU",
        f"`{UNHEARD}`, which no journey hears: Journeyman stored {stored:,} events, "
        f"{dispatched:,} of them handed over as they were stored",
        f"`{HEARD}`, which a journey's `wait_for` hears: Journeyman stored {heard_stored:,} "
        f"events; the dispatcher had handed over {heard_dispatched:,} of them when the API "
        "stopped",
    ]
    ctx.settings["intake load"] = (
        f"`bench.loadgen`: {CONCURRENCY} keep-alive connections, closed loop, "
        f"{warmup:g} s warm-up, then {duration:g} s a side in {windows} windows "
        f"({REWARM:g} s warm-up each after the first), one `track` event (~330 bytes) a request"
    )
    ctx.settings["API"] = (
        "`journeyman api` (uvicorn, one process, h11, log level warning), SQLite file "
        "database, dispatcher in the process"
    )
    return [table]


def api_env(url: str, project: Project) -> dict[str, str]:
    """The environment of a `journeyman api` of the intake sections, on `url`."""
    return clean_env(
        DATABASE_URL=url,
        JOURNEYMAN_WRITE_KEYS=WRITE_KEY,
        JOURNEYMAN_ADMIN_TOKEN="bench-admin",
        JOURNEYMAN_SECRET_KEY="bench-secret",
        # No journey enters on these events: the API never calls Temporal (lazy client).
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        JOURNEYS_DIR=str(project.journeys_dir),
        TEMPLATES_DIR=str(project.templates_dir),
    )


async def load(
    ctx: Context,
    server: Process,
    port: int,
    name: str,
    number: int,
    duration: float,
    warmup: float,
    event: str = UNHEARD,
) -> Window:
    """One window of load on `server`: its messages numbered after the earlier
    windows', over the same 1,000 customers."""
    out = ctx.workdir / f"load-{name}-{number}.json"
    command = [
        PYTHON, "-m", "bench.loadgen", "load", "--port", str(port), "--out", str(out),
        "--write-key", WRITE_KEY, "--concurrency", str(CONCURRENCY),
        "--duration", str(duration), "--warmup", str(warmup), "--prefix", f"{name}-",
        "--event", event, "--first", str(number * FIRST_STEP),
    ]  # fmt: skip
    sampler = Sampler({"server": server.pid}).start()
    generator = ctx.spawn(f"loadgen-{name}-{number}", command)
    await asyncio.sleep(warmup)
    sampler.mark()
    async with ctx.profiling(f"intake-{name}-{number}", server.pid):
        code = await asyncio.to_thread(generator.popen.wait, warmup + duration + 60)
    stats = sampler.stop()["server"]
    ctx.stop(generator)
    if code != 0:
        raise RuntimeError(f"the load generator failed ({code}):\n{generator.tail()}")
    result: dict[str, Any] = json.loads(Path(out).read_text())
    # CPU from about the end of the warm-up, over the requests measured after it.
    return Window(
        requests=result["requests"],
        elapsed=result["elapsed"],
        errors=result["errors"],
        latencies_ms=result["latencies_ms"],
        cpu_seconds={"server": stats.cpu_seconds},
        peak_rss={"server": stats.peak_rss},
    )


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
