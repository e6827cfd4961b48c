"""Pytest fixtures for the exchange and market-data fakes.

Use from any conftest: ``pytest_plugins = ["tests.fakes.fixtures"]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from tests.fakes.fear_greed_server import FakeFearGreed
from tests.fakes.upbit_server import FakeUpbit


@pytest_asyncio.fixture
async def fake_upbit() -> AsyncIterator[FakeUpbit]:
    """A started, empty FakeUpbit (keys ``fake.access_key``/``fake.secret_key``); script it in the test."""
    async with FakeUpbit() as fake:
        yield fake


@pytest.fixture
def fake_upbit_sync() -> Iterator[FakeUpbit]:
    """The same fake for synchronous tests (e.g. ones that start the scheduler as a subprocess)."""
    with FakeUpbit() as fake:
        yield fake


@pytest_asyncio.fixture
async def fake_fear_greed() -> AsyncIterator[FakeFearGreed]:
    """A started FakeFearGreed serving [47, 33, 25] (newest first); the client URL is ``fake.url``."""
    async with FakeFearGreed() as fake:
        yield fake
