"""DataCollector over the real UpbitClient and FearGreedClient, pointed at the fakes; and flash crashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pandas as pd
import pytest

from src.api.upbit_client import UpbitClient
from src.config.settings import load_settings
from src.data.collector import DataCollector, detect_flash_crash
from src.data.fear_greed import FearGreedClient
from src.data.replay import ReplayMarketSource
from src.exceptions import ExchangeUnavailable
from src.strategy.contract import history_bars
from tests.fakes.fear_greed_server import FakeFearGreed, FearGreedFault
from tests.fakes.upbit_server import FakeUpbit
from tests.support.candles import make_candles

BTC, ETH = "KRW-BTC", "KRW-ETH"
START = datetime(2024, 5, 1, tzinfo=UTC)


def crash_frame(closes: list[float]) -> pd.DataFrame:
    index = pd.DatetimeIndex([START + timedelta(minutes=5 * i) for i in range(len(closes))], name="timestamp")
    return pd.DataFrame(
        {
            "open": closes,
            "high": [c * 1.001 for c in closes],
            "low": [c * 0.999 for c in closes],
            "close": closes,
            "volume": 1.0,
            "value": float("nan"),
        },
        index=index,
    )


@pytest.fixture
async def market(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitClient]:
    btc = make_candles(START, 60, "1h", start_price=90_000_000, seed=1)
    fake_upbit.set_candles(BTC, "1h", btc)
    eth = btc * 0.05  # ETH moving exactly with BTC
    fake_upbit.set_candles(ETH, "1h", eth)
    fake_upbit.set_candles(ETH, "1d", make_candles(START - timedelta(days=10), 10, "1d", start_price=4_000_000))
    fake_upbit.set_orderbook(ETH, asks=[(4_501_000, "2")], bids=[(4_500_000, "3")])
    async with UpbitClient(fake_upbit.base_url, timeout=1.0, backoff_seconds=0.01) as client:
        yield client


async def test_collect_gathers_every_part_for_an_altcoin(
    market: UpbitClient, fake_upbit: FakeUpbit, fake_fear_greed: FakeFearGreed
) -> None:
    # Given Upbit and alternative.me (both fakes)
    async with FearGreedClient(fake_fear_greed.url, timeout=1) as fear_greed:
        collector = DataCollector(market, fear_greed)
        # When a snapshot of ETH is collected on 1h and 1d
        snapshot = await collector.collect(ETH, ["1h", "1d"])
    # Then each part is there, typed
    assert set(snapshot.candles) == {"1h", "1d"}
    assert len(snapshot.candles["1h"]) == 60
    assert snapshot.candles["1h"].index.is_monotonic_increasing
    assert snapshot.price == Decimal(str(snapshot.candles["1h"]["close"].iloc[-1]))
    assert snapshot.orderbook is not None
    assert snapshot.orderbook.best_bid == Decimal("4500000")
    assert snapshot.orderbook_payload()["bid_ask_ratio"] == pytest.approx(1.5)
    assert snapshot.fear_greed is not None
    assert snapshot.fear_greed.value == 47
    assert snapshot.fear_greed_payload()["classification"] == "Neutral"
    assert snapshot.btc_correlation == pytest.approx(1.0)
    assert snapshot.flash_crash is False
    assert snapshot.errors == {}
    # And BTC candles of the primary timeframe were fetched for the correlation
    btc_requests = [r for r in fake_upbit.requests_to("/v1/candles/minutes/60") if r.params["market"] == [BTC]]
    assert len(btc_requests) == 1


@pytest.mark.parametrize(
    "fault", [FearGreedFault("slow", seconds=1.0), FearGreedFault("error", message="down"), FearGreedFault("status")]
)
async def test_missing_fear_and_greed_is_recorded_not_raised(
    market: UpbitClient, fake_fear_greed: FakeFearGreed, fault: FearGreedFault
) -> None:
    fake_fear_greed.inject(fault)
    async with FearGreedClient(fake_fear_greed.url, timeout=0.2) as fear_greed:
        snapshot = await DataCollector(market, fear_greed).collect(ETH, ["1h"])
    assert snapshot.fear_greed is None
    assert snapshot.fear_greed_error
    assert snapshot.fear_greed_payload() == {"available": False, "error": snapshot.fear_greed_error}
    assert len(snapshot.candles["1h"]) == 60


async def test_btc_has_no_correlation_and_no_fear_greed_without_a_client(market: UpbitClient) -> None:
    snapshot = await DataCollector(market).collect(BTC, ["1h"])
    assert snapshot.btc_correlation is None
    assert snapshot.fear_greed is None
    assert snapshot.fear_greed_payload() is None


async def test_btc_candles_failing_leaves_correlation_unavailable(fake_upbit: FakeUpbit) -> None:
    # Given an exchange that lists ETH but not BTC
    fake_upbit.set_candles(ETH, "1h", make_candles(START, 40, "1h", seed=3))
    fake_upbit.set_orderbook(ETH, asks=[(4_501_000, "2")], bids=[(4_500_000, "3")])
    async with UpbitClient(fake_upbit.base_url) as client:
        snapshot = await DataCollector(client).collect(ETH, ["1h"])
    assert snapshot.btc_correlation is None
    assert "btc_correlation" in snapshot.errors


async def test_exchange_failure_for_the_symbol_itself_propagates(market: UpbitClient, fake_upbit: FakeUpbit) -> None:
    fake_upbit.inject_server_error(503, times=3, path="/v1/ticker")
    with pytest.raises(ExchangeUnavailable):
        await DataCollector(market).collect(ETH, ["1h"])


async def test_flash_crash_flag_uses_the_configured_threshold(
    monkeypatch: pytest.MonkeyPatch, fake_upbit: FakeUpbit
) -> None:
    # Given 5-minute candles whose last close is 6 % under the recent high, and FLASH_CRASH_PCT=5
    monkeypatch.setenv("FLASH_CRASH_PCT", "5")
    fake_upbit.set_candles(BTC, "5m", crash_frame([100.0, 100.0, 100.0, 99.0, 94.0]))
    fake_upbit.set_candles(BTC, "1h", make_candles(START, 5, "1h"))
    fake_upbit.set_ticker(BTC, "94")
    async with UpbitClient(fake_upbit.base_url) as client:
        collector = DataCollector.from_settings(load_settings(env_file=None), client)
        snapshot = await collector.collect(BTC, ["1h", "5m"])
    # Then the finest timeframe raises the flag
    assert snapshot.flash_crash is True


@pytest.mark.parametrize(
    ("closes", "threshold", "expected"),
    [
        ([100, 100, 100, 99, 94], 5, True),
        ([100, 100, 100, 99, 96], 5, False),
        ([100, 80, 85, 90, 95], 5, False),  # the crash is older than the window
        ([100, 95.1], 5, False),  # high 100.1 -> 95.1 is 4.995 %
        ([100, 95.0], 5, True),  # fewer candles than the window: 5.09 %
        ([100], 5, False),
    ],
)
def test_detect_flash_crash(closes: list[float], threshold: float, expected: bool) -> None:
    assert detect_flash_crash(crash_frame([float(c) for c in closes]), Decimal(str(threshold))) is expected


def test_detect_flash_crash_on_empty_and_bad_window() -> None:
    assert detect_flash_crash(crash_frame([]), 5) is False
    with pytest.raises(ValueError, match="window"):
        detect_flash_crash(crash_frame([1.0]), 5, window=0)


async def test_collect_over_the_replay_source_needs_no_network() -> None:
    hourly = make_candles(START, 72, "1h", start_price=90_000_000, seed=5)
    replay = ReplayMarketSource({BTC: {"1h": hourly}, ETH: {"1h": hourly * 0.05}})
    replay.advance_to(START + timedelta(hours=60))
    snapshot = await DataCollector(replay).collect(ETH, ["1h"])
    assert snapshot.timestamp == START + timedelta(hours=60)
    assert snapshot.candles["1h"].index[-1] == pd.Timestamp(START + timedelta(hours=59))
    assert snapshot.btc_correlation == pytest.approx(1.0)


async def test_more_candles_than_one_request_are_paged_backwards(fake_upbit: FakeUpbit) -> None:
    # Given 730 hourly candles on the exchange (more than 3 pages of 200)
    candles = make_candles(datetime(2024, 1, 1, tzinfo=UTC), 730, "1h")
    fake_upbit.set_candles(BTC, "1h", candles)
    async with UpbitClient(fake_upbit.base_url) as client:
        collector = DataCollector(client, candle_count=720)
        # When the collector needs 720 of them
        frame = await collector.candles(BTC, "1h", 720)
    # Then it pages with `to` and returns exactly the newest 720, oldest first, without duplicates
    assert len(frame) == 720
    assert frame.index.is_monotonic_increasing
    assert frame.index[0] == candles.index[10]
    assert frame.index[-1] == candles.index[-1]
    pages = fake_upbit.requests_to("/v1/candles/minutes/60")
    assert [request.params["count"] for request in pages] == [["200"], ["200"], ["200"], ["120"]]


async def test_paging_stops_when_the_exchange_has_no_older_candles(fake_upbit: FakeUpbit) -> None:
    fake_upbit.set_candles(BTC, "1h", make_candles(datetime(2024, 1, 1, tzinfo=UTC), 250, "1h"))
    async with UpbitClient(fake_upbit.base_url) as client:
        frame = await DataCollector(client).candles(BTC, "1h", 720)
    assert len(frame) == 250
    assert len(fake_upbit.requests_to("/v1/candles/minutes/60")) == 2


async def test_a_cycle_reads_history_bars_candles_paged_from_upbit(
    fake_upbit: FakeUpbit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given QUICK_FILTER_LOOKBACK_DAYS=10 on 1 h candles (history_bars = 240 + 250 warm-up = 490) and 1,000 candles
    on the exchange, when the collector built from the settings collects KRW-ETH, then the cycle's frame holds the
    newest 490 candles, read in pages of 200 (200, 200, 90), and the BTC correlation costs one page."""
    monkeypatch.setenv("QUICK_FILTER_LOOKBACK_DAYS", "10")
    settings = load_settings(env_file=None)
    candles = make_candles(datetime(2024, 1, 1, tzinfo=UTC), 1000, "1h", start_price=4_000_000)
    fake_upbit.set_candles(ETH, "1h", candles)
    fake_upbit.set_candles(BTC, "1h", candles * 20)
    async with UpbitClient(fake_upbit.base_url) as client:
        collector = DataCollector.from_settings(settings, client)
        snapshot = await collector.collect(ETH, ["1h"])

    assert collector.candle_count == history_bars(10, 3600) == 490
    frame = snapshot.candles["1h"]
    assert len(frame) == 490
    assert frame.index[-1] == candles.index[-1]
    pages = fake_upbit.requests_to("/v1/candles/minutes/60")
    assert sorted(request.params["count"][0] for request in pages) == ["200", "200", "200", "90"]


async def test_the_candle_still_forming_is_left_out(fake_upbit: FakeUpbit) -> None:
    """Given 100 hourly candles on Upbit, the newest opened at 03:00 and still forming at 03:20 (Upbit serves it),
    when the collector with the bot's clock reads them at 03:20, then the newest candle it returns is the complete
    02:00 one: it asks with Upbit's exclusive `to` at 03:00, so the strategy decides on complete bars only, as the
    backtest and replay do."""
    candles = make_candles(datetime(2024, 1, 1, tzinfo=UTC), 100, "1h")
    forming = candles.index[-1].to_pydatetime()
    fake_upbit.set_candles(BTC, "1h", candles)
    async with UpbitClient(fake_upbit.base_url) as client:
        collector = DataCollector(client, candle_count=50, clock=lambda: forming + timedelta(minutes=20))
        frame = await collector.candles(BTC, "1h", 50)
    assert frame.index[-1] == candles.index[-2]
    assert len(frame) == 50
    sent = fake_upbit.requests_to("/v1/candles/minutes/60")[0].params["to"]
    assert sent == [forming.strftime("%Y-%m-%dT%H:%M:%SZ")]
