"""Pytest fixture for the fake Telegram Bot API (registered in the root ``conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.telegram_server import FakeTelegram


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A started FakeTelegram; token ``fake.token``, base URL ``fake.base_url``."""
    with FakeTelegram() as fake:
        yield fake
