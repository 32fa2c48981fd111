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

Server CPU is the sum over the API processes; PostgreSQL's own CPU is reported apart.
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
    Process,
    Sampler,
    Table,
    Target,
    clean_env,
    free_port,
    mib,
    wait_for_port,
)
from bench.sections.intake import CONCURRENCY, HEARD, UNHEARD, WRITE_KEY
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
        return clean_env(
            DATABASE_URL=url,
            JOURNEYMAN_WRITE_KEYS=WRITE_KEY,
            JOURNEYMAN_ADMIN_TOKEN="bench-admin",
            JOURNEYMAN_SECRET_KEY="bench-secret",
            TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
            JOURNEYS_DIR=str(project.journeys_dir),
            TEMPLATES_DIR=str(project.templates_dir),
        )

    async def measure(
        name: str, commands: list[list[str]], envs: list[Any], event: str = UNHEARD
    ) -> dict[str, Any]:
        servers: list[tuple[Process, int]] = []
        try:
            for index, (command, environment) in enumerate(zip(commands, envs, strict=True)):
                port = free_port()
                process = ctx.spawn(
                    f"{name}-{index}", [*command, "--port", str(port)], env=environment
                )
                # One after the other: the first migrates the fresh database.
                await wait_for_port(port, process)
                servers.append((process, port))
            ctx.log(f"{name}: {CONCURRENCY} connections over {len(servers)} process(es)")
            pids = _postgres_pids(server)
            return await _load(ctx, servers, name, duration, warmup, pids, event)
        finally:
            for process, _port in servers:
                ctx.stop(process)

    bare = await measure("bare", [[PYTHON, "-m", "bench.bare"]], [None])
    command = [journeyman, "api", "--host", "127.0.0.1"]
    with _database(server) as one_url:
        one = await measure("journeyman-1", [command], [env(one_url)])
        one_stored = await asyncio.to_thread(_stored, one_url)
    with _database(server) as two_url:
        two = await measure("journeyman-2", [command, command], [env(two_url), env(two_url)])
        two_stored = await asyncio.to_thread(_stored, two_url)
    with _database(server) as heard_url:
        heard = await measure("journeyman-heard", [command], [env(heard_url)], HEARD)
        heard_stored = await asyncio.to_thread(_stored, heard_url)

    table = Table(
        f"{CONCURRENCY} keep-alive connections in all, closed loop, {duration:g} s",
        ours="Journeyman API, PostgreSQL",
        baseline="bare FastAPI",
    )
    table.add("events/s, one API process", one["rate"], bare["rate"], target=Target(">=", 0.3))
    table.add("events/s, two API processes", two["rate"], bare["rate"])
    table.add("latency p50, one process", one["p50_ms"], bare["p50_ms"], "ms", digits=2)
    table.add("latency p99, one process", one["p99_ms"], bare["p99_ms"], "ms", digits=2)
    table.add("latency p50, two processes", two["p50_ms"], bare["p50_ms"], "ms", digits=2)
    table.add("latency p99, two processes", two["p99_ms"], bare["p99_ms"], "ms", digits=2)
    table.add("API CPU per event, one process", one["cpu_ms"], bare["cpu_ms"], "ms", digits=2)
    table.add("API CPU per event, two processes", two["cpu_ms"], bare["cpu_ms"], "ms", digits=2)
    table.add("errors", one["errors"] + two["errors"], bare["errors"])
    table.add("events/s, one process, events a journey hears", heard["rate"], bare["rate"])
    table.add(
        "API CPU per event, one process, events a journey hears", heard["cpu_ms"],
        bare["cpu_ms"], "ms", digits=2,
    )  # fmt: skip
    table.add(
        "latency p99, one process, events a journey hears", heard["p99_ms"], bare["p99_ms"],
        "ms", digits=2,
    )  # fmt: skip
    table.add("errors, events a journey hears", heard["errors"], bare["errors"])
    table.notes += [
        f"`{UNHEARD}`, which no journey hears, except in the rows that say `{HEARD}` "
        "(a journey's `wait_for` hears it: the dispatcher hands each over); "
        f"{heard_stored[0]:,} of those stored, {heard_stored[1]:,} handed over when the "
        "API stopped",
    ]
    scaling = Table("The second API process", ours="two processes", baseline="one process")
    scaling.add("events/s", two["rate"], one["rate"], target=Target(">=", 1.2))
    scaling.add("API CPU per event", two["cpu_ms"], one["cpu_ms"], "ms", digits=2)
    scaling.add("PostgreSQL CPU per event", two["pg_cpu_ms"], one["pg_cpu_ms"], "ms", digits=2)
    scaling.notes += [
        f"stored: {one_stored[0]:,} events with one process ({one_stored[1]:,} handed over), "
        f"{two_stored[0]:,} with two ({two_stored[1]:,} handed over)",
        "two processes: two generators of 8 connections each, one per process; latency is "
        "the worse of the two generators' percentiles",
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
    duration: float,
    warmup: float,
    postgres: list[int],
    event: str = UNHEARD,
) -> dict[str, Any]:
    per = CONCURRENCY // len(servers)
    pids = {f"api{i}": process.pid for i, (process, _port) in enumerate(servers)}
    pids.update({f"pg{pid}": pid for pid in postgres})
    sampler = Sampler(pids).start()
    generators = []
    outs = []
    for index, (_process, port) in enumerate(servers):
        out = ctx.workdir / f"load-{NAME}-{name}-{index}.json"
        outs.append(out)
        command = [
            PYTHON, "-m", "bench.loadgen", "load", "--port", str(port), "--out", str(out),
            "--write-key", WRITE_KEY, "--concurrency", str(per), "--duration", str(duration),
            "--warmup", str(warmup), "--prefix", f"{name}-{index}-", "--event", event,
        ]  # fmt: skip
        generators.append(ctx.spawn(f"loadgen-{name}-{index}", command))
    await asyncio.sleep(warmup)
    sampler.mark()
    async with ctx.profiling(f"{NAME}-{name}", servers[0][0].pid):
        codes = [await asyncio.to_thread(g.popen.wait, warmup + duration + 60) for g in generators]
    stats = sampler.stop()
    for generator in generators:
        ctx.stop(generator)
    if any(codes):
        raise RuntimeError(f"a load generator failed ({codes}):\n{generators[0].tail()}")
    results = [json.loads(Path(out).read_text()) for out in outs]
    requests = sum(r["requests"] for r in results) or 1
    api_cpu = sum(s.cpu_seconds for n, s in stats.items() if n.startswith("api"))
    pg_cpu = sum(s.cpu_seconds for n, s in stats.items() if n.startswith("pg"))
    return {
        "rate": sum(r["rate"] for r in results),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "requests": requests,
        "cpu_ms": 1000 * api_cpu / requests,
        "pg_cpu_ms": 1000 * pg_cpu / requests,
        "rss_mib": max(mib(s.peak_rss) for n, s in stats.items() if n.startswith("api")),
    }


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
