"""Pytest fixture for the fake OpenAI server.

Register it once in a conftest (``pytest_plugins = ["tests.fakes.openai_fixtures"]``) or import
``fake_openai`` into a test module. The server runs in its own thread, so the fixture serves sync
and async tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake
