"""Pytest fixture for the fake OpenAI server.

Use it with ``pytest_plugins = ["tests.fakes.openai_fixtures"]`` in a test module (or in the root
``conftest.py``). The server runs in its own thread, so the fixture serves sync and async tests alike.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI; key ``fake.api_key``, SDK base URL ``fake.base_url`` (ends in ``/v1``)."""
    with FakeOpenAI() as fake:
        yield fake
