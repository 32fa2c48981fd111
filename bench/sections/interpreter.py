"""1. Interpreter overhead: the YAML journey against the same steps written by hand.

N customers go through send → wait 1s → wait_for (timeout 1s) → branch → send, once
as `bench_overhead.yaml` compiled by `journeyman.dsl` and run by the interpreter, once
as `bench.handwritten.HandWrittenJourney`, each on a fresh worker process with
`build_worker`'s options and a fresh dev server with the same settings. Each side runs
four times, in the order A B B A B A A B (`--quick` and `--large`: A B B A), and its runs
are taken together, so drift over the section (the side measured second was 8 to 15%
slower, whichever it was) and the host's slower minutes weigh on both sides alike. The
runs are started as fast as 64 concurrent clients manage; throughput
is N over the time from the first start to the last close (from visibility). A sample
of histories gives events, payload bytes and workflow task latencies.

`make bench` runs 200 journeys a run (800 a side); `--large` adds 10,000 a run.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client

from bench.core import (
    PYTHON,
    Context,
    DevServer,
    Sampler,
    Table,
    Target,
    clean_env,
    mib,
    percentile,
    wait_for_file,
)
from bench.handwritten import OVERHEAD_WORKFLOW
from bench.workload import (
    HistoryStats,
    Project,
    RunRecorder,
    customer_ids,
    handwritten_starts,
    history_stats,
    journey_starts,
    makespan,
    prepare_database,
    start_many,
    wait_closed,
    write_project,
)
from journeyman.dsl import Plan

NAME = "interpreter"
TITLE = "Interpreter overhead: YAML journey vs hand-written workflow"
KINDS = {"journeyman": "Journeyman (YAML)", "handwritten": "hand-written"}
HISTORY_SAMPLE = 200


@dataclass
class Measured:
    kind: str
    n: int
    closed: int
    failed: int
    seconds: float  # first start to last close
    start_rate: float
    history: HistoryStats
    worker_peak_rss: int
    worker_cpu: float
    server_cpu: float
    runs: int = 1  # how many runs `joined` took together

    @property
    def throughput(self) -> float:
        return self.closed / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def joined(cls, runs: list[Measured]) -> Measured:
        """Several runs of one side as one: journeys and seconds added (throughput is all
        the journeys over all the time), histories pooled, CPU added, RSS the peak."""
        history = HistoryStats()
        for run in runs:
            h = run.history
            history.runs += h.runs
            history.events.update(h.events)
            history.payload_bytes += h.payload_bytes
            history.history_bytes += h.history_bytes
            history.markers.update(h.markers)
            history.activities.update(h.activities)
            history.upserts.update(h.upserts)
            history.wft_latency += h.wft_latency
            history.wft_run_time += h.wft_run_time
        return cls(
            kind=runs[0].kind,
            n=sum(r.n for r in runs),
            closed=sum(r.closed for r in runs),
            failed=sum(r.failed for r in runs),
            seconds=sum(r.seconds for r in runs),
            start_rate=sum(r.start_rate for r in runs) / len(runs),
            history=history,
            worker_peak_rss=max(r.worker_peak_rss for r in runs),
            worker_cpu=sum(r.worker_cpu for r in runs),
            server_cpu=sum(r.server_cpu for r in runs),
            runs=len(runs),
        )


async def run(ctx: Context) -> list[Table]:
    # 10,000 of each takes some 25 minutes on 2 cores (about 0.1 s of CPU per hand-written
    # journey and 0.2 s per interpreted one, server and worker together): `--large` only.
    # 1,000 of each took 568 s on the 2026-12-07 AMD EPYC host, most of make bench's 15
    # minutes; 400 a side still run about 2 minutes each.
    sizes = [ctx.size(100, 200), *([10000] if ctx.large else [])]
    root = ctx.folder(NAME)
    project = write_project(root)
    plan = project.plan("bench_overhead")
    tables = []
    for index, n in enumerate(sizes):
        # Each side several times, each time on a dev server and a worker of its own
        # started fresh, and each side's runs taken together. Measured 2026-12-07 with
        # the same code: whichever side ran second lost 8 to 15% of its throughput (0.79x
        # and 0.84x with the hand-written side first, 0.92x and 0.99x with Journeyman
        # first). A B B A gives both sides the same share of a steady drift; but the
        # host's speed also moves in bumps of a minute or two (2026-12-08, one make
        # bench: the same 400 interpreted journeys took 80 s in one run and 54 s in the
        # next), which A B B A with runs of a minute puts on one side. So `make bench`
        # takes 4 runs of 200 a side in the order A B B A B A A B (each side as often
        # early as late, against a steady drift and a curved one), and the table's notes
        # give every run's throughput. `--quick` and `--large`: A B B A.
        first, second = ("handwritten", "journeyman")[:: 1 if index % 2 == 0 else -1]
        order = [first, second, second, first]
        if not ctx.quick and n <= 1000:
            order += [second, first, first, second]
        runs: dict[str, list[Measured]] = {kind: [] for kind in KINDS}
        for round_, kind in enumerate(order):
            async with ctx.dev_server(f"{NAME}-{kind}-{n}-{round_}-temporal") as server:
                client = await server.client()
                count = order.count(kind)
                ctx.log(f"{KINDS[kind]}: {n:,} journeys (run {len(runs[kind]) + 1} of {count})")
                runs[kind].append(
                    await measure(ctx, server, client, project, plan, kind, n, round_)
                )
        ours, base = Measured.joined(runs["journeyman"]), Measured.joined(runs["handwritten"])
        tables.append(_table(n, ours, base, order, runs))
    tables.append(_breakdown(ours, base))
    ctx.settings["worker (both variants)"] = (
        "a process of its own; `build_worker` options: 32 activity threads, "
        "1,000 cached workflows, `ActivityLogContext` interceptor, the SDK's sandbox with "
        "each side's workflow module passed through, no payload encryption, payloads of "
        "512 bytes and more compressed (the product's default)"
    )
    return tables


async def measure(
    ctx: Context,
    server: DevServer,
    client: Client,
    project: Project,
    plan: Plan,
    kind: str,
    n: int,
    round_: int,
) -> Measured:
    root = ctx.folder(NAME)
    task_queue = f"bench-{kind}-{n}-{round_}"
    url = f"sqlite:///{root}/{kind}-{n}-{round_}.db"
    customers = customer_ids(f"{kind[0]}{n}-", n)
    db = prepare_database(url, project, customers)
    ready = root / f"{task_queue}.ready"
    worker = ctx.spawn(
        f"worker-{kind}-{n}-{round_}",
        [PYTHON, "-m", "bench.worker", kind, "--ready", str(ready)],
        env=clean_env(
            TEMPORAL_ADDRESS=server.address,
            DATABASE_URL=url,
            JOURNEYMAN_TASK_QUEUE=task_queue,
            JOURNEYMAN_SECRET_KEY="bench-secret",
            JOURNEYS_DIR=str(project.journeys_dir),
            TEMPLATES_DIR=str(project.templates_dir),
        ),
    )
    try:
        await wait_for_file(ready, worker)
        sampler = Sampler({"worker": worker.pid, "server": server.process.pid}).start()
        async with ctx.profiling(f"worker-{kind}-{n}-{round_}", worker.pid):
            if kind == "journeyman":
                async with RunRecorder(db) as recorder:
                    starts = journey_starts(
                        client, plan, customers, task_queue, recorder, "bench_started"
                    )
                    started = await start_many(starts)
            else:
                starts = handwritten_starts(
                    client, OVERHEAD_WORKFLOW, plan, customers, task_queue, timedelta(seconds=1)
                )
                started = await start_many(starts)
            await wait_closed(
                client, task_queue, n, within=max(300.0, float(n)), check=worker.check
            )
        stats = sampler.stop()
        closed, seconds, failed = await makespan(client, task_queue)
        sample = random.Random(n).sample(started.workflow_ids, min(HISTORY_SAMPLE, n))
        history = await history_stats(client, sample)
    finally:
        ctx.stop(worker)
        db.dispose()
    return Measured(
        kind=kind,
        n=n,
        closed=closed,
        failed=failed,
        seconds=seconds,
        start_rate=started.rate,
        history=history,
        worker_peak_rss=stats["worker"].peak_rss,
        worker_cpu=stats["worker"].cpu_seconds,
        server_cpu=stats["server"].cpu_seconds,
    )


def _table(
    n: int, ours: Measured, base: Measured, order: list[str], runs: dict[str, list[Measured]]
) -> Table:
    """`n` journeys a run; `ours` and `base` each hold `runs` runs taken together."""
    table = Table(
        f"{n:,} journeys a run, {ours.runs} runs a side",
        ours=KINDS["journeyman"],
        baseline=KINDS["handwritten"],
    )
    table.add("completed journeys/s", ours.throughput, base.throughput, target=Target(">=", 0.95))
    table.add(
        "first start to last close, a run", ours.seconds / ours.runs, base.seconds / base.runs, "s"
    )
    table.add("starts/s (64 concurrent clients)", ours.start_rate, base.start_rate)
    oh, bh = ours.history, base.history
    for label, q in (("p50", 50), ("p99", 99)):
        table.add(
            f"workflow task scheduled→completed {label}",
            1000 * percentile(oh.wft_latency, q),
            1000 * percentile(bh.wft_latency, q),
            "ms",
        )
    for label, q in (("p50", 50), ("p99", 99)):
        table.add(
            f"workflow task started→completed {label}",
            1000 * percentile(oh.wft_run_time, q),
            1000 * percentile(bh.wft_run_time, q),
            "ms",
        )
    table.add(
        "history events per journey",
        oh.events_per_run,
        bh.events_per_run,
        target=Target("<=", 1.1),
    )
    table.add(
        "workflow tasks per journey",
        oh.per_run(oh.events["WORKFLOW_TASK_COMPLETED"]),
        bh.per_run(bh.events["WORKFLOW_TASK_COMPLETED"]),
    )
    table.add(
        "payload bytes per journey",
        oh.per_run(oh.payload_bytes),
        bh.per_run(bh.payload_bytes),
        digits=0,
    )
    table.add(
        "history bytes per journey",
        oh.per_run(oh.history_bytes),
        bh.per_run(bh.history_bytes),
        digits=0,
    )
    table.add("worker peak RSS", mib(ours.worker_peak_rss), mib(base.worker_peak_rss), "MiB")
    table.add(
        "worker CPU per journey",
        1000 * ours.worker_cpu / ours.n,
        1000 * base.worker_cpu / base.n,
        "ms",
        digits=2,
    )
    table.add(
        "server CPU per journey",
        1000 * ours.server_cpu / ours.n,
        1000 * base.server_cpu / base.n,
        "ms",
        digits=2,
    )
    table.notes.append(
        f"runs in order {' then '.join(KINDS[k] for k in order)}; histories of "
        f"{oh.runs} and {bh.runs} runs sampled; "
        f"not completed: {ours.failed} and {base.failed}"
    )
    each = iter(runs["journeyman"]), iter(runs["handwritten"])
    rates = [
        f"{'J' if kind == 'journeyman' else 'H'} {next(each[kind != 'journeyman']).throughput:.1f}"
        for kind in order
    ]
    table.notes.append(
        "completed journeys/s of each run in that order (J: Journeyman, H: hand-written): "
        + ", ".join(rates)
    )
    return table


def _breakdown(ours: Measured, base: Measured) -> Table:
    """Per journey, every event type whose count differs, and what the interpreter adds."""
    oh, bh = ours.history, base.history
    table = Table(
        f"History events per journey by type ({ours.n // ours.runs:,} journeys a run)",
        ours=KINDS["journeyman"],
        baseline=KINDS["handwritten"],
    )
    for name in sorted(set(oh.events) | set(bh.events)):
        o, b = oh.per_run(oh.events[name]), bh.per_run(bh.events[name])
        if abs(o - b) > 1e-9:
            table.add(name, o, b, digits=2)
    extra = Counter(oh.markers)
    extra.subtract(bh.markers)
    for name, count in sorted(extra.items()):
        if count:
            table.notes.append(f"marker {name}: {count / oh.runs:+.2f} per journey")
    upserts = ", ".join(f"{k}: {v / oh.runs:g}" for k, v in sorted(oh.upserts.items()))
    if upserts:
        table.notes.append(f"search attribute upserts per journey: {upserts}")
    activities = Counter(oh.activities)
    activities.subtract(bh.activities)
    for name, count in sorted(activities.items()):
        if count:
            table.notes.append(f"activity {name}: {count / oh.runs:+.2f} per journey")
    return table
