"""Intake on PostgreSQL: one and two API processes against the bare endpoint.

Production runs on PostgreSQL, with as many API processes as it needs. The same load as
section 2 (`bench.loadgen`, 16 keep-alive connections in all, closed loop, events of
1,000 customers) against:

- the baseline: the bare FastAPI endpoint (`bench/bare.py`), one process;
- `journeyman api` on a fresh PostgreSQL database, one process (16 connections);
- two `journeyman api` processes on another fresh database, 8 connections each (two
  generators): the second process must add throughput, not contention;
- one process again on a third fresh database, with events a journey hears (section 2
  says what the two kinds of event cost: the first three runs send those no journey
  hears).

Every server runs from the start, each set of API processes on a database of its own,
idle but for its own load; each side's load comes in windows taken in turn, the order
reversed every other round (`bench.core.alternate`, as in section 2). Server CPU is the
sum over the API processes; PostgreSQL's own CPU is reported apart.
The server is `JOURNEYMAN_BENCH_POSTGRES` (default the suite's,
postgresql+psycopg://postgres@127.0.0.1:5432); without one, the section says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import create_engine, func, select, text

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
    free_port,
    wait_for_port,
)
from bench.sections.intake import (
    CONCURRENCY,
    FIRST_STEP,
    HEARD,
    REWARM,
    UNHEARD,
    WINDOWS,
    WINDOWS_QUICK,
    WRITE_KEY,
    api_env,
)
from bench.workload import write_project
from journeyman.platform.binaries import find_binary
from journeyman.storage.db import Database
from journeyman.storage.models import Event

NAME = "intake-postgres"
TITLE = "Intake on PostgreSQL: one and two API processes"
DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


async def run(ctx: Context) -> list[Table]:
    server = os.environ.get("JOURNEYMAN_BENCH_POSTGRES", DEFAULT_SERVER)
    root = ctx.folder(NAME)
    project = write_project(root)
    duration, warmup = ctx.seconds(3, 15), ctx.seconds(1, 2)
    journeyman = find_binary("journeyman")
    assert journeyman is not None, "the journeyman script is not installed: run `make bench`"

    def env(url: str) -> dict[str, str]:
        return api_env(url, project)

    servers: dict[str, list[tuple[Process, int]]] = {}

    async def start(name: str, commands: list[list[str]], envs: list[Any]) -> None:
        servers[name] = []
        for index, (command, environment) in enumerate(zip(commands, envs, strict=True)):
            port = free_port()
            process = ctx.spawn(f"{name}-{index}", [*command, "--port", str(port)], env=environment)
            # One after the other: the first migrates the fresh database.
            await wait_for_port(port, process)
            servers[name].append((process, port))

    postgres = _postgres_pids(server)

    def side(name: str, event: str = UNHEARD) -> Measure:
        async def measure(number: int, seconds: float, warm: float) -> Window:
            count = len(servers[name])
            ctx.log(
                f"{name}: window {number + 1}, {CONCURRENCY} connections over {count} "
                f"process(es), {warm:g}+{seconds:g} s"
            )
            return await _load(ctx, servers[name], name, number, seconds, warm, postgres, event)

        return measure

    command = [journeyman, "api", "--host", "127.0.0.1"]
    windows = WINDOWS_QUICK if ctx.quick else WINDOWS
    with _database(server) as one_url, _database(server) as two_url, _database(server) as heard_url:
        try:
            await start("bare", [[PYTHON, "-m", "bench.bare"]], [None])
            await start("journeyman-1", [command], [env(one_url)])
            await start("journeyman-2", [command, command], [env(two_url), env(two_url)])
            await start("journeyman-heard", [command], [env(heard_url)])
            sides = {
                "bare": side("bare"),
                "journeyman-1": side("journeyman-1"),
                "journeyman-2": side("journeyman-2"),
                "journeyman-heard": side("journeyman-heard", HEARD),
            }
            results = await alternate(sides, windows, duration, warmup, REWARM)
        finally:
            for processes in servers.values():
                for process, _port in processes:
                    ctx.stop(process)
        one_stored = await asyncio.to_thread(_stored, one_url)
        two_stored = await asyncio.to_thread(_stored, two_url)
        heard_stored = await asyncio.to_thread(_stored, heard_url)
    bare, one = results["bare"], results["journeyman-1"]
    two, heard = results["journeyman-2"], results["journeyman-heard"]

    table = Table(
        f"{CONCURRENCY} keep-alive connections in all, closed loop, {duration:g} s a side "
        f"in {windows} windows",
        ours="Journeyman API, PostgreSQL",
        baseline="bare FastAPI",
    )
    table.add("events/s, one API process", one.rate, bare.rate, target=Target(">=", 0.3))
    table.add("events/s, two API processes", two.rate, bare.rate)
    table.add("latency p50, one process", one.p50_ms, bare.p50_ms, "ms", digits=2)
    table.add("latency p99, one process", one.p99_ms, bare.p99_ms, "ms", digits=2)
    table.add("latency p50, two processes", two.p50_ms, bare.p50_ms, "ms", digits=2)
    table.add("latency p99, two processes", two.p99_ms, bare.p99_ms, "ms", digits=2)
    table.add(
        "API CPU per event, one process", one.cpu_ms("api"), bare.cpu_ms("api"), "ms", digits=2
    )
    table.add(
        "API CPU per event, two processes", two.cpu_ms("api"), bare.cpu_ms("api"), "ms", digits=2
    )
    table.add("errors", one.errors + two.errors, bare.errors)
    table.add("events/s, one process, events a journey hears", heard.rate, bare.rate)
    table.add(
        "API CPU per event, one process, events a journey hears", heard.cpu_ms("api"),
        bare.cpu_ms("api"), "ms", digits=2,
    )  # fmt: skip
    table.add(
        "latency p99, one process, events a journey hears", heard.p99_ms, bare.p99_ms,
        "ms", digits=2,
    )  # fmt: skip
    table.add("errors, events a journey hears", heard.errors, bare.errors)
    table.notes += [
        f"`{UNHEARD}`, which no journey hears, except in the rows that say `{HEARD}` "
        "(a journey's `wait_for` hears it: the dispatcher hands each over); "
        f"{heard_stored[0]:,} of those stored, {heard_stored[1]:,} handed over when the "
        "API stopped",
    ]
    scaling = Table("The second API process", ours="two processes", baseline="one process")
    scaling.add("events/s", two.rate, one.rate, target=Target(">=", 1.2))
    scaling.add("API CPU per event", two.cpu_ms("api"), one.cpu_ms("api"), "ms", digits=2)
    scaling.add("PostgreSQL CPU per event", two.cpu_ms("pg"), one.cpu_ms("pg"), "ms", digits=2)
    scaling.notes += [
        f"stored: {one_stored[0]:,} events with one process ({one_stored[1]:,} handed over), "
        f"{two_stored[0]:,} with two ({two_stored[1]:,} handed over)",
        "two processes: two generators of 8 connections each, one per process; latency "
        "percentiles over both generators' requests",
        "every server (the bare endpoint, and each set of API processes on a database of "
        "its own) runs from the start, idle but for its own load; each side's "
        f"{duration:g} s are {windows} windows taken in turn, the order reversed every "
        "other round, as in section 2",
        "on 2 cores, the generators, the API processes and PostgreSQL share the CPU",
    ]
    ctx.settings["intake on PostgreSQL"] = (
        f"`journeyman api` processes on a fresh database of the local PostgreSQL "
        f"({_version(server)}), dispatcher in each process"
    )
    return [table, scaling]


async def _load(
    ctx: Context,
    servers: list[tuple[Process, int]],
    name: str,
    number: int,
    duration: float,
    warmup: float,
    postgres: list[int],
    event: str = UNHEARD,
) -> Window:
    per = CONCURRENCY // len(servers)
    pids = {f"api{i}": process.pid for i, (process, _port) in enumerate(servers)}
    pids.update({f"pg{pid}": pid for pid in postgres})
    sampler = Sampler(pids).start()
    generators = []
    outs = []
    for index, (_process, port) in enumerate(servers):
        out = ctx.workdir / f"load-{NAME}-{name}-{index}-{number}.json"
        outs.append(out)
        command = [
            PYTHON, "-m", "bench.loadgen", "load", "--port", str(port), "--out", str(out),
            "--write-key", WRITE_KEY, "--concurrency", str(per), "--duration", str(duration),
            "--warmup", str(warmup), "--prefix", f"{name}-{index}-", "--event", event,
            "--first", str(number * FIRST_STEP),
        ]  # fmt: skip
        generators.append(ctx.spawn(f"loadgen-{name}-{index}-{number}", command))
    await asyncio.sleep(warmup)
    sampler.mark()
    async with ctx.profiling(f"{NAME}-{name}-{number}", servers[0][0].pid):
        codes = [await asyncio.to_thread(g.popen.wait, warmup + duration + 60) for g in generators]
    stats = sampler.stop()
    for generator in generators:
        ctx.stop(generator)
    if any(codes):
        raise RuntimeError(f"a load generator failed ({codes}):\n{generators[0].tail()}")
    results = [json.loads(Path(out).read_text()) for out in outs]
    return Window(
        requests=sum(r["requests"] for r in results),
        elapsed=max(r["elapsed"] for r in results),
        errors=sum(r["errors"] for r in results),
        latencies_ms=[latency for r in results for latency in r["latencies_ms"]],
        cpu_seconds={n: s.cpu_seconds for n, s in stats.items()},
        peak_rss={n: s.peak_rss for n, s in stats.items()},
    )


def _postgres_pids(server: str) -> list[int]:
    """The PostgreSQL server's main process on this machine (its backends, the API's
    pooled connections, are its children), for its CPU; none when it is elsewhere."""
    names = ("postgres", "postgresql")
    pids = []
    for process in psutil.process_iter(["name", "ppid"]):
        if process.info["name"] not in names:
            continue
        try:
            parent = psutil.Process(process.info["ppid"]).name()
        except psutil.Error:
            parent = ""
        if parent not in names:  # the server itself: its backends are its children
            pids.append(process.pid)
    return pids


class _database:
    """A fresh database on `server`, dropped after."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"jm_bench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        return f"{self.server}/{self.name}"

    def __exit__(self, *_exc: object) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def _stored(url: str) -> tuple[int, int]:
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


def _version(server: str) -> str:
    engine = create_engine(f"{server}/postgres")
    try:
        with engine.connect() as connection:
            return str(connection.scalar(text("SHOW server_version")))
    finally:
        engine.dispose()
