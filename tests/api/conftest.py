"""Fixtures of the API tests: see tests/api/support.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.api.support import Api
from tests.harness import Harness


@pytest.fixture
async def api(harness: Harness) -> AsyncIterator[Api]:
    test_api = Api(harness)
    try:
        yield test_api
    finally:
        await test_api.close()
