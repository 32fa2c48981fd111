"""Fixtures of the API tests: see tests/api/support.py.

`api` is the app without a Temporal server (a client that never connects): intake and
reads need none. A test that dispatches, runs a journey or asks Temporal anything is
marked `temporal`, and gets the app over a worker on a time-skipping server of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from journeyman.storage.db import Database
from tests.api.support import Api, OfflineHarness
from tests.harness import Harness


@pytest.fixture
def temporal_harness(request: pytest.FixtureRequest) -> Harness | None:
    """The journey harness on a time-skipping server for a test marked `temporal`;
    None (no server started) for the others."""
    if request.node.get_closest_marker("temporal") is None:
        return None
    harness: Harness = request.getfixturevalue("harness")
    return harness


@pytest.fixture
async def api(
    temporal_harness: Harness | None, db: Database, tmp_path: Path, task_queue: str
) -> AsyncIterator[Api]:
    harness = temporal_harness or await OfflineHarness.create(db, tmp_path, task_queue)
    test_api = Api(harness)
    try:
        yield test_api
    finally:
        await test_api.close()
