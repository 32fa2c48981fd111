"""Two attempts of one send at once (a retry after a heartbeat timeout while the first
attempt still runs, on two workers) call the provider once, on SQLite and PostgreSQL.

Both attempts are held, after reading the ledger row, until the other has read it too
(or cannot, because the first holds the row): without a claim that locks or checks the
row's state, both read `pending` and both call the provider.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

import activities.journey as journey_module
from journeyman.messaging.providers import TransientFailure
from journeyman.storage.db import Database
from journeyman.wiring import journey_activities
from tests.activities.test_send import KEY, World, world  # noqa: F401

# How long an attempt that has read the row waits for the other to read it too. The
# other never comes when the row is claimed under a lock: the wait then ends, and the
# attempt goes on; it is not what the test asserts.
RENDEZVOUS_SECONDS = 3.0


@pytest.fixture
def second_worker(world: World) -> Iterator[Any]:  # noqa: F811
    """The same activities on a pool of their own: another worker process's view."""
    db = Database(world.db.url)
    try:
        yield journey_activities(db, world.settings, dict(world.providers), signing_key=KEY)
    finally:
        db.dispose()


def test_two_concurrent_attempts_of_one_send_call_the_provider_once(
    world: World,  # noqa: F811
    second_worker: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world.customer(email="ana@example.com")
    email = world.providers["email"]
    # A first attempt fails for now: the row is back at `pending`, as after a timeout.
    email.failures.append(TransientFailure("503 try later"))
    with pytest.raises(Exception, match="503"):
        world.send(channels=("email",))
    assert world.delivery().status == "pending"
    barrier = threading.Barrier(2, timeout=RENDEZVOUS_SECONDS)
    original = journey_module.expression_names

    def held(*args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return original(*args, **kwargs)

    monkeypatch.setattr(journey_module, "expression_names", held)
    other = copy.copy(world)
    other.activities = second_worker
    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda w: w.send(channels=("email",)), (world, other)))
    assert len(email.sent) == 1, [o.status for o in outcomes]
    statuses = sorted(o.status for o in outcomes)
    # One attempt sent; the other found it in flight (`unknown`, never sent twice) or
    # already sent, and reports the same row.
    assert "sent" in statuses or statuses == ["unknown", "unknown"]
    assert world.delivery().status == "sent"
    assert len({o.delivery_id for o in outcomes}) == 1
