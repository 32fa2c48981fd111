"""How fast a process learns of a new release: a poll against PostgreSQL LISTEN/NOTIFY.

    python -m bench.release_follow [--server postgresql+psycopg://postgres@127.0.0.1:5432]

On a database of its own, publishes releases at random moments and measures, for each,
the time from the publishing commit to (a) a LISTEN connection receiving the NOTIFY
sent in that transaction and (b) a `releases.Follower`-style poll of `max(releases.id)`
every `journeyman.operations.releases.POLL_SECONDS` seeing it; and the cost of one poll query.
docs/journeys.md ("How processes follow a release") keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid

import psycopg
from sqlalchemy import text

from bench.core import scratch_postgres
from journeyman.operations import releases
from journeyman.storage.db import Database
from journeyman.storage.models import Release

CHANNEL = "journeyman_releases"


def _measure(server: str, rounds: int) -> dict[str, list[float]]:
    with scratch_postgres(server) as (db, name):
        return asyncio.run(_rounds(db, server, name, rounds))


async def _rounds(db: Database, server: str, name: str, rounds: int) -> dict[str, list[float]]:
    dsn = f"{server}/{name}".replace("postgresql+psycopg://", "postgresql://")
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listener.execute(f"LISTEN {CHANNEL}")
    notify: list[float] = []
    poll: list[float] = []
    query: list[float] = []
    seen = releases.latest_id(db)
    for _ in range(rounds):
        # Publish at a random moment of the poll's cycle, as a deploy would.
        await asyncio.sleep(random.uniform(0, releases.POLL_SECONDS))
        committed = _publish(db)
        async for _note in listener.notifies(timeout=5, stop_after=1):
            notify.append(time.perf_counter() - committed)
        # The poll: the next tick of a 1 s cycle that started at a random phase.
        phase = random.uniform(0, releases.POLL_SECONDS)
        await asyncio.sleep(phase)
        started = time.perf_counter()
        newest = releases.latest_id(db)
        query.append(time.perf_counter() - started)
        assert newest > seen
        seen = newest
        poll.append(time.perf_counter() - committed)
    await listener.close()
    return {"notify": notify, "poll": poll, "query": query}


def _publish(db: Database) -> float:
    with db.session() as session:
        session.add(Release(journey_id="bench", version=uuid.uuid4().hex[:12], by="bench"))
        session.execute(text(f"NOTIFY {CHANNEL}"))
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432")
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    figures = _measure(args.server, args.rounds)
    for what, values in figures.items():
        ms = sorted(v * 1000 for v in values)
        p95 = ms[int(len(ms) * 0.95) - 1]
        print(
            f"{what:>7}: median {statistics.median(ms):8.2f} ms  p95 {p95:8.2f} ms  "
            f"max {ms[-1]:8.2f} ms  ({len(ms)} releases)"
        )


if __name__ == "__main__":
    main()
