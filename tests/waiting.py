"""Waiting on a condition, the one way the suite synchronizes with anything it does not drive.

A test never sleeps to let something happen and never measures a wall-clock margin: it
polls the condition itself. The deadline only fails the test (saying what did not happen
and, with `detail`, what things looked like then); it never decides a pass, so a slow
machine makes a test slower, not red.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Long enough for a loaded 2-core CI host; a condition that holds returns at once.
DEFAULT_WITHIN = 30.0


async def eventually(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    what: str,
    within: float = DEFAULT_WITHIN,
    every: float = 0.05,
    detail: Callable[[], str] = str,
) -> T:
    """Poll `check` (sync or async) until it returns something truthy, and return that;
    fail saying `what` did not happen within `within` s, with `detail()` as it is then."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s\n{detail()}")
        await asyncio.sleep(every)


def eventually_sync(
    check: Callable[[], T],
    *,
    what: str,
    within: float = DEFAULT_WITHIN,
    every: float = 0.02,
    detail: Callable[[], str] = str,
) -> T:
    """`eventually` for code with no event loop (threads, subprocesses)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s\n{detail()}")
        time.sleep(every)
