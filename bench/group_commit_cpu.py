"""CPU of one group commit of intake, by group size (issue 19).

    .venv/bin/python -m bench.group_commit_cpu [--groups 400] [--sizes 1,3,6] [--profile 6]

Stores `--groups` groups of each size (each call one `track`, as `bench.loadgen` sends,
for customers already known) with `journeyman.events.intake._accept_group` on a fresh
database of the PostgreSQL at `JOURNEYMAN_BENCH_POSTGRES` (default the suite's), or on
SQLite with `--sqlite`, and prints this process's CPU per transaction and per event.
`--profile SIZE` prints a cProfile of the groups of that size instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
import uuid
from datetime import UTC, datetime

from bench.core import scratch_postgres
from journeyman.events import intake
from journeyman.storage.db import Database

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
USERS = 1000


def _message(seq: int) -> intake.Incoming:
    return intake.Incoming(
        type="track",
        message_id=f"m{seq}-{uuid.uuid4().hex[:8]}",
        timestamp=datetime(2026, 5, 4, 10, tzinfo=UTC),
        user_id=f"u{seq % USERS}",
        name="Cart Updated",
        properties={
            "cart_id": f"cart-{seq}",
            "cart_total": 64.5,
            "items": [{"name": "Linen shirt", "price": 64.5, "quantity": 1}],
        },
        context={"library": {"name": "bench", "version": "1"}},
    )


def _run(db: Database, sizes: list[int], groups: int, profile: int | None) -> None:
    seq = 0

    def group(size: int) -> list[list[intake.Incoming]]:
        nonlocal seq
        seq += size
        return [[_message(seq - i)] for i in range(size)]

    # Known customers, warm caches (compiled statements, prepared ones).
    for start in range(0, USERS, 50):
        intake._accept_group(db, [[_message(s)] for s in range(start, start + 50)])
    for _ in range(50):
        intake._accept_group(db, group(3))
    for size in sizes:
        calls = [group(size) for _ in range(groups)]
        profiler = cProfile.Profile(time.process_time) if size == profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for one in calls:
            intake._accept_group(db, one)
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"groups of {size}: {1000 * cpu / groups:.3f} ms CPU per transaction, "
            f"{1000 * cpu / groups / size:.3f} ms per event "
            f"(wall {1000 * wall / groups:.3f} ms per transaction)"
        )
        if profiler:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(45)
            stats.print_callers("wait|_exec_command")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=400)
    parser.add_argument("--sizes", default="1,3,6")
    parser.add_argument("--profile", type=int)
    parser.add_argument("--sqlite", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.sqlite:
        with tempfile.TemporaryDirectory() as folder:
            db = Database(f"sqlite:///{folder}/bench.db")
            db.create_all()
            try:
                _run(db, sizes, args.groups, args.profile)
            finally:
                db.dispose()
        return
    server = os.environ.get("JOURNEYMAN_BENCH_POSTGRES", DEFAULT_SERVER)
    with scratch_postgres(server) as (db, _name):
        _run(db, sizes, args.groups, args.profile)


if __name__ == "__main__":
    main()
