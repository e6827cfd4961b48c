"""FearGreedClient against the fake alternative.me server."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from src.config.settings import load_settings
from src.data.fear_greed import FearGreed, FearGreedClient
from src.exceptions import MarketDataUnavailable
from tests.fakes.fear_greed_server import FakeFearGreed, FearGreedFault

DAY = datetime(2025, 1, 2, tzinfo=UTC)


async def test_latest_parses_string_values_into_a_reading(fake_fear_greed: FakeFearGreed) -> None:
    # Given the service's newest value "47" for 2025-01-02 (strings on the wire)
    fake_fear_greed.set_values([47, 33], newest_day=DAY)
    # When the client asks for the latest value
    async with FearGreedClient(fake_fear_greed.url, timeout=1) as client:
        reading = await client.latest()
    # Then it is typed, and the request asked for one JSON entry
    assert reading == FearGreed(value=47, classification="Neutral", timestamp=DAY)
    assert dict(fake_fear_greed.requests[-1].query) == {"limit": "1", "format": "json"}


async def test_history_is_newest_first(fake_fear_greed: FakeFearGreed) -> None:
    fake_fear_greed.set_values([80, 50, 10], newest_day=DAY)
    async with FearGreedClient(fake_fear_greed.url, timeout=1) as client:
        readings = await client.history(3)
    assert [r.value for r in readings] == [80, 50, 10]
    assert [r.classification for r in readings] == ["Extreme Greed", "Neutral", "Extreme Fear"]
    assert readings[0].timestamp > readings[1].timestamp


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (FearGreedFault("error", message="Rate limited"), "Rate limited"),
        (FearGreedFault("status", status=503), "HTTP 503"),
        (FearGreedFault("malformed"), "not JSON"),
        (FearGreedFault("slow", seconds=1.0), "ReadTimeout"),
    ],
)
async def test_every_failure_is_market_data_unavailable(
    fake_fear_greed: FakeFearGreed, fault: FearGreedFault, reason: str
) -> None:
    fake_fear_greed.inject(fault)
    async with FearGreedClient(fake_fear_greed.url, timeout=0.2) as client:
        with pytest.raises(MarketDataUnavailable, match=reason):
            await client.latest()


async def test_unreachable_service_is_unavailable() -> None:
    async with FearGreedClient("http://127.0.0.1:9/fng/", timeout=0.5) as client:
        with pytest.raises(MarketDataUnavailable, match="ConnectError"):
            await client.latest()


async def test_url_and_timeout_come_from_settings(
    monkeypatch: pytest.MonkeyPatch, fake_fear_greed: FakeFearGreed
) -> None:
    monkeypatch.setenv("FEAR_GREED_URL", fake_fear_greed.url)
    monkeypatch.setenv("FEAR_GREED_TIMEOUT_SECONDS", "0.2")
    fake_fear_greed.inject(FearGreedFault("slow", seconds=1.0))
    async with FearGreedClient.from_settings(load_settings(env_file=None)) as client:
        with pytest.raises(MarketDataUnavailable):
            await client.latest()
        assert (await client.latest()).value == 47
