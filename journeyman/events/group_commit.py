"""Group commit: calls made at the same time by threads of this process, committed together.

Contract:
- `GroupCommit.run(db, item)` returns `alone(db, item)`'s answer (or raises its error)
  as if the call had run alone, once what it wrote is committed. `LoopGroup.run` does
  the same for a coroutine, with one trip to a thread for all the calls its event loop
  made while the previous trip was under way (not one each).
- A call queues, then waits for one of the group's writers (one on SQLite, which has
  one; a few on PostgreSQL, whose round trips then overlap); the thread that gets it
  runs every call queued by then (up to `at_most`) through `together(db, items)`, which stores them
  in one transaction, each item as it would be alone and in queue order, and answers for
  each; every call then has its answer before the writer is let go. If `together`
  fails (a unique-key conflict with another process, a bad item, a deadlock), nothing
  of it is committed and each call runs `alone`, so one call's failure is its own.

Why: each transaction pays its connection, its reads and its commit (a disk flush).
SQLite has one writer: left to its busy handler, concurrent transactions sleep between
tries while the lock sits free. PostgreSQL writes concurrently, but a commit and every
statement is a round trip: a group of sixteen calls pays for one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from journeyman.storage.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Calls committed in one transaction, at most.
GROUP_AT_MOST = 64


@dataclass
class _Call(Generic[T, R]):
    item: T
    result: R | None = None
    error: BaseException | None = None
    done: bool = False


class GroupCommit(Generic[T, R]):
    """The group of one database in this process (`group_of`)."""

    def __init__(
        self,
        together: Callable[[Database, list[T]], list[R]],
        alone: Callable[[Database, T], R],
        writers: int = 1,
        at_most: int = GROUP_AT_MOST,
    ) -> None:
        self.together = together
        self.alone = alone
        self.writers = writers
        self.at_most = at_most
        self.queue_lock = threading.Lock()
        self.queue: list[_Call[T, R]] = []
        # Signalled when a group's calls are done (`_Call.done`, set under queue_lock):
        # one condition for all calls, not an Event each (a lock and a condition made
        # per call cost about 1% of the API's CPU under intake load, issue 19).
        self.finished = threading.Condition(self.queue_lock)
        self.slots = threading.Semaphore(writers)
        self._threads: ThreadPoolExecutor | None = None

    @property
    def threads(self) -> ThreadPoolExecutor:
        """One thread per writer, for `LoopGroup`: its lots do not wait for a thread
        of the event loop's pool, which everything else shares."""
        with self.queue_lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.writers, "group-commit")
            return self._threads

    @contextmanager
    def held(self) -> Iterator[None]:
        """Every writer's slot (tests: the calls made meanwhile queue)."""
        for _ in range(self.writers):
            self.slots.acquire()
        try:
            yield
        finally:
            for _ in range(self.writers):
                self.slots.release()

    def run(self, db: Database, item: T) -> R:
        ((result, error),) = self.run_all(db, [item])
        if error is not None:
            raise error
        assert result is not None
        return result

    def run_all(self, db: Database, items: list[T]) -> list[tuple[R | None, BaseException | None]]:
        """`run` of each of `items`, answered (or failed) each on its own, in order."""
        calls: list[_Call[T, R]] = [_Call(item) for item in items]
        with self.queue_lock:
            self.queue.extend(calls)
        for call in calls:
            while not call.done:
                with self.slots:
                    with self.queue_lock:
                        group = self.queue[: self.at_most]
                        del self.queue[: self.at_most]
                    if group:
                        self._store(db, group)
                        continue
                with self.queue_lock:  # another writer has it
                    while not call.done:
                        self.finished.wait()
        return [(call.result, call.error) for call in calls]

    def _store(self, db: Database, group: list[_Call[T, R]]) -> None:
        try:
            if len(group) > 1:
                try:
                    results = self.together(db, [call.item for call in group])
                except Exception as exc:  # each alone, below
                    log.debug("group of %d failed (%s): one by one", len(group), exc)
                else:
                    for call, result in zip(group, results, strict=True):
                        call.result = result
                    return
            for call in group:
                try:
                    call.result = self.alone(db, call.item)
                except Exception as exc:
                    call.error = exc
        finally:
            with self.queue_lock:
                for call in group:
                    if call.result is None and call.error is None:  # interrupted
                        call.error = RuntimeError("interrupted before commit")
                    call.done = True
                self.finished.notify_all()


# One group per Database object and kind of call (an in-memory URL names a different
# database each time); weakly, so a disposed database takes its groups along.
_GROUPS: weakref.WeakKeyDictionary[Database, dict[object, GroupCommit]] = (  # type: ignore[type-arg]
    weakref.WeakKeyDictionary()
)
_GROUPS_LOCK = threading.Lock()


def group_of(
    db: Database,
    together: Callable[[Database, list[T]], list[R]],
    alone: Callable[[Database, T], R],
    writers: int = 1,
) -> GroupCommit[T, R]:
    """The group of `db` for calls stored by `together` and `alone` (module functions:
    they key the group), with `writers` groups stored at once at most."""
    with _GROUPS_LOCK:
        groups = _GROUPS.setdefault(db, {})
        group = groups.get(together)
        if group is None:
            group = groups[together] = GroupCommit(together, alone, writers)
        return group


class LoopGroup(Generic[T, R]):
    """The calls of the coroutines of one event loop, handed to a `GroupCommit` in lots:
    while one lot is stored in a thread, the next gathers."""

    def __init__(self, group: GroupCommit[T, R]) -> None:
        self.group = group
        self.waiting: list[tuple[T, asyncio.Future[R]]] = []
        self.draining = 0  # `_drain` tasks running: at most one per writer
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, db: Database, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self.waiting.append((item, future))
        if self.draining < self.group.writers:
            self.draining += 1
            task = loop.create_task(self._drain(db))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return await future

    async def _drain(self, db: Database) -> None:
        try:
            while self.waiting:
                await self._store(db)
        finally:
            # In the step that found nothing waiting: a call queued after it starts
            # another drain.
            self.draining -= 1

    async def _store(self, db: Database) -> None:
        """One lot, in a writer's thread; each caller gets its answer or its error."""
        lot = self.waiting[: self.group.at_most]
        del self.waiting[: self.group.at_most]
        try:
            items = [item for item, _future in lot]
            outcomes = await asyncio.get_running_loop().run_in_executor(
                self.group.threads, self.group.run_all, db, items
            )
        except BaseException as exc:  # cancelled (the server stopping), or a bug
            for _item, future in lot:
                if not future.done():
                    future.set_exception(RuntimeError(f"interrupted before commit: {exc!r}"))
            raise
        for (_item, future), (result, error) in zip(lot, outcomes, strict=True):
            if future.done():  # its request was cancelled
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]


# By event loop, weakly: a loop that is gone takes its lots along.
_LOOP_GROUPS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, LoopGroup]] = (  # type: ignore[type-arg]
    weakref.WeakKeyDictionary()
)


def loop_group_of(group: GroupCommit[T, R]) -> LoopGroup[T, R]:
    """The running event loop's front of `group` (call it from the loop)."""
    lots = _LOOP_GROUPS.setdefault(asyncio.get_running_loop(), {})
    front = lots.get(id(group))
    if front is None or front.group is not group:
        front = lots[id(group)] = LoopGroup(group)
    return front
