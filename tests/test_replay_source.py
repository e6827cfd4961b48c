"""ReplayMarketSource: history at a simulated clock, no look-ahead, a synthetic book that quotes the fill model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from src.api.interfaces import MarketDataSource, OrderRequest
from src.api.paper_account import InMemoryPaperAccountStore
from src.api.paper_exchange import PaperExchange
from src.backtesting.data_provider import load_candle_csv
from src.config.settings import load_settings
from src.data.replay import ReplayMarketSource
from src.domain.fills import fill_price
from src.domain.market_rules import krw_tick_size
from src.domain.orders import OrderType, Side
from src.exceptions import DataError
from tests.support.candles import make_candles

BTC = "KRW-BTC"
T0 = datetime(2023, 3, 1, tzinfo=UTC)
SHARED_BTC_1H = Path(__file__).resolve().parents[2] / "shared" / "data" / "KRW-BTC_1h.csv"


@pytest.fixture
def replay() -> ReplayMarketSource:
    hourly = make_candles(T0, 48, "1h", start_price=30_000_000, volume=20)
    daily = make_candles(T0, 2, "1d", start_price=30_000_000, volume=500)
    return ReplayMarketSource({BTC: {"1h": hourly, "1d": daily}}, start=T0 + timedelta(hours=10, minutes=30))


async def test_only_complete_candles_are_visible(replay: ReplayMarketSource) -> None:
    # Given the clock at 10:30, the 10:00 hourly candle is still forming (it closes at 11:00)
    frame = await replay.get_candles(BTC, "1h", count=200)
    assert frame.index[-1] == pd.Timestamp(T0 + timedelta(hours=9))
    assert (await replay.get_candles(BTC, "1d")).empty  # the first day closes at midnight
    # When the clock reaches 11:00 exactly, the 10:00 candle is complete and visible
    replay.advance_to(T0 + timedelta(hours=11))
    assert (await replay.get_candles(BTC, "1h")).index[-1] == pd.Timestamp(T0 + timedelta(hours=10))


async def test_candles_keep_upbit_shape_count_and_exclusive_to(replay: ReplayMarketSource) -> None:
    frame = await replay.get_candles(BTC, "1h", count=3, to=T0 + timedelta(hours=5))
    assert list(frame.index) == [pd.Timestamp(T0 + timedelta(hours=h)) for h in (2, 3, 4)]
    assert list(frame.columns) == ["open", "high", "low", "close", "volume", "value"]
    assert str(frame.index.tz) == "UTC"
    with pytest.raises(ValueError, match="count"):
        await replay.get_candles(BTC, "1h", count=201)


async def test_ticker_is_the_last_complete_close_at_the_clock(replay: ReplayMarketSource) -> None:
    [ticker] = await replay.get_tickers([BTC])
    visible = replay.visible(BTC, "1h")
    assert ticker.trade_price == Decimal(str(visible["close"].iloc[-1]))
    assert ticker.timestamp == replay.now()


async def test_synthetic_orderbook_follows_the_documented_model(replay: ReplayMarketSource) -> None:
    [book] = await replay.get_orderbooks([BTC])
    close = Decimal(str(replay.visible(BTC, "1h")["close"].iloc[-1]))
    tick = krw_tick_size(close, replay.now())
    # best ask and bid: the fill model's buy and sell prices (default slippage 0.05 %), one tick between levels
    assert book.best_ask == fill_price(close, Side.BUY, Decimal("0.05"), replay.now())
    assert book.best_bid == fill_price(close, Side.SELL, Decimal("0.05"), replay.now())
    assert book.best_bid % tick == 0
    assert book.best_ask % tick == 0
    assert book.asks[1].price - book.asks[0].price == tick
    assert len(book.asks) == len(book.bids) == 15
    # depth: 10 % of the bar's 20 BTC over 15 levels, or 1,000,000 KRW per level if that is more; the first
    # level at least 100,000,000 KRW
    expected = max(Decimal("0.1") * 20 / 15, Decimal("1000000") / close).quantize(Decimal("0.00000001"), "ROUND_DOWN")
    assert book.asks[1].size == book.bids[1].size == expected
    first = max(expected, (Decimal("100000000") / close).quantize(Decimal("0.00000001"), "ROUND_DOWN"))
    assert book.asks[0].size == book.bids[0].size == first
    assert book.timestamp == replay.now()


@pytest.mark.parametrize("slippage", ["0", "0.05", "0.3"])
async def test_the_replay_exchange_fills_the_bots_orders_at_the_fill_model_price(slippage: str) -> None:
    """Given the replay source built from the settings (BACKTEST_SLIPPAGE_PCT) and the paper exchange over it, when
    the bot's default buy (20 % of the starting KRW) and then a sell of everything are sent, then each fills whole
    at ``fill_price`` of the last close: the price the backtest charges."""
    settings = load_settings(env_file=None).model_copy(deep=True)
    settings.backtest.slippage_pct = Decimal(slippage)
    candles = make_candles(T0, 48, "1h", start_price=30_000_000, volume=0.01)  # a thin bar: depth from the minimums
    source = ReplayMarketSource.from_settings(settings, {BTC: {"1h": candles}}, start=T0 + timedelta(hours=30))
    paper = PaperExchange.from_settings(settings, source, InMemoryPaperAccountStore(), clock=source.now)
    close = Decimal(str(source.visible(BTC, "1h")["close"].iloc[-1]))
    size = settings.trading.paper_starting_krw * settings.risk.position_fraction_pct / 100

    bought = await paper.place_order(OrderRequest(BTC, Side.BUY, OrderType.MARKET_BUY, "b", krw_total=size))
    volume = sum(t.volume for t in bought.trades)
    sold = await paper.place_order(OrderRequest(BTC, Side.SELL, OrderType.MARKET_SELL, "s", volume=volume))

    now = source.now()
    assert {t.price for t in bought.trades} == {fill_price(close, Side.BUY, Decimal(slippage), now)}
    assert {t.price for t in sold.trades} == {fill_price(close, Side.SELL, Decimal(slippage), now)}


def test_clock_only_moves_forward_and_needs_utc(replay: ReplayMarketSource) -> None:
    with pytest.raises(ValueError, match="forward"):
        replay.advance_to(T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        replay.advance_to(datetime(2030, 1, 1))


async def test_unknown_symbol_and_timeframe_are_named(replay: ReplayMarketSource) -> None:
    with pytest.raises(DataError, match="KRW-ETH"):
        await replay.get_tickers(["KRW-ETH"])
    with pytest.raises(DataError, match="loaded: 1h, 1d"):
        await replay.get_candles(BTC, "5m")


def test_default_start_is_the_first_complete_candle() -> None:
    source = ReplayMarketSource({BTC: {"1h": make_candles(T0, 5, "1h")}})
    assert source.now() == T0 + timedelta(hours=1)
    assert len(source.visible(BTC, "1h")) == 1


def test_it_is_a_market_data_source(replay: ReplayMarketSource) -> None:
    assert isinstance(replay, MarketDataSource)


@pytest.mark.skipif(not SHARED_BTC_1H.exists(), reason="shared candle data not present")
async def test_real_history_across_the_one_year_hole() -> None:
    # Given real KRW-BTC hourly candles, which have no rows from 2021-04-27 to 2022-04-30
    history = load_candle_csv(SHARED_BTC_1H)
    replay = ReplayMarketSource({BTC: {"1h": history}}, start=datetime(2021, 6, 1, tzinfo=UTC))
    # Then the ticker is the last close before the hole, and candles end at the hole
    [ticker] = await replay.get_tickers([BTC])
    last_before_hole = history.loc[:"2021-04-26 23:00:00+00:00"].iloc[-1]
    assert ticker.trade_price == Decimal(str(last_before_hole["close"]))
    frame = await replay.get_candles(BTC, "1h", count=200)
    assert frame.index[-1] == pd.Timestamp("2021-04-26 23:00:00+00:00")
    assert len(frame) == 200
