"""Live market data for one trading cycle: candles, orderbook, ticker, fear & greed, BTC correlation.

The same collector runs over an ``UpbitClient``, a ``PaperExchange`` or a ``ReplayMarketSource``.
Exchange failures for the symbol itself propagate (no trading on missing data); the advisory parts
(fear & greed, BTC correlation) are recorded as unavailable and never stop a collection.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pandas as pd

from src.ai.market_correlation import btc_correlation
from src.api.interfaces import MAX_CANDLES_PER_REQUEST, Orderbook, Ticker
from src.domain.timeframes import Timeframe
from src.exceptions import DataError, ExchangeError, MarketDataUnavailable
from src.strategy.contract import history_bars
from src.utils.logger import get_logger

if TYPE_CHECKING:
    from src.api.interfaces import MarketDataSource
    from src.config.settings import Settings
    from src.data.fear_greed import FearGreed, FearGreedClient

log = get_logger(__name__)

BTC_SYMBOL = "KRW-BTC"


def detect_flash_crash(df: pd.DataFrame, threshold_pct: Decimal | float, window: int = 3) -> bool:
    """True when the latest close is ``threshold_pct`` % or more below the highest high of the last
    ``window`` candles (the latest included). Fewer candles than that use what is there."""
    if window < 1:
        raise ValueError("window must be at least 1")
    if df.empty:
        return False
    recent = df.tail(window)
    peak = float(recent["high"].max())
    last_close = float(df["close"].iloc[-1])
    if not peak > 0 or math.isnan(last_close):
        return False
    return (peak - last_close) / peak * 100 >= float(threshold_pct)


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    symbol: str
    timestamp: datetime  # the ticker's time (the simulated clock in replay)
    candles: dict[str, pd.DataFrame]  # timeframe -> oldest-first frame
    ticker: Ticker
    orderbook: Orderbook | None
    fear_greed: FearGreed | None
    fear_greed_error: str | None  # why the index is missing (None when present or not configured)
    btc_correlation: float | None  # None for BTC itself or when not computable
    flash_crash: bool
    errors: dict[str, str] = field(default_factory=dict)  # advisory parts that failed, by name

    @property
    def price(self) -> Decimal:
        return self.ticker.trade_price

    def fear_greed_payload(self) -> dict[str, Any] | None:
        """For ``MarketContext.fear_greed``: the reading, or why it is unavailable."""
        if self.fear_greed is not None:
            return self.fear_greed.to_dict()
        if self.fear_greed_error is not None:
            return {"available": False, "error": self.fear_greed_error}
        return None

    def orderbook_payload(self) -> dict[str, Any] | None:
        """For ``MarketContext.orderbook``: best prices, spread and visible depth."""
        book = self.orderbook
        if book is None or book.best_ask is None or book.best_bid is None:
            return None
        mid = (book.best_ask + book.best_bid) / 2
        return {
            "best_bid": float(book.best_bid),
            "best_ask": float(book.best_ask),
            "spread_pct": float((book.best_ask - book.best_bid) / mid * 100),
            "total_bid_size": float(book.total_bid_size),
            "total_ask_size": float(book.total_ask_size),
            "bid_ask_ratio": float(book.total_bid_size / book.total_ask_size) if book.total_ask_size else None,
        }


class DataCollector:
    def __init__(
        self,
        exchange: MarketDataSource,
        fear_greed: FearGreedClient | None = None,
        *,
        flash_crash_pct: Decimal = Decimal("5"),
        flash_crash_window: int = 3,
        candle_count: int = 200,
        correlation_window: int = 30,
        btc_symbol: str = BTC_SYMBOL,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._exchange = exchange
        self._fear_greed = fear_greed
        self._flash_crash_pct = flash_crash_pct
        self._flash_crash_window = flash_crash_window
        self._candle_count = candle_count
        self._correlation_window = correlation_window
        self._btc_symbol = btc_symbol
        self._clock = clock

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        exchange: MarketDataSource,
        fear_greed: FearGreedClient | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> DataCollector:
        """Candles per cycle: ``history_bars`` of the quick filter's lookback on the trading timeframe (the
        filter's window plus the strategy's warm-up), the same history the backtest loads before ``--start``."""
        timeframe = Timeframe.from_minutes(settings.trading.candle_interval_minutes)
        return cls(
            exchange,
            fear_greed,
            flash_crash_pct=settings.risk.flash_crash_pct,
            candle_count=history_bars(settings.backtest.quick_filter_lookback_days, timeframe.seconds),
            clock=clock,
        )

    @property
    def candle_count(self) -> int:
        return self._candle_count

    async def candles(self, symbol: str, timeframe: str, count: int) -> pd.DataFrame:
        """The newest ``count`` complete candles, oldest first, paging backwards 200 at a time (Upbit's maximum).

        With a clock, the candle still forming is left out (Upbit's ``to`` is exclusive: open time < the current
        bar's start), so the strategy decides on complete bars only, as in replay and in the backtest."""
        pages: list[pd.DataFrame] = []
        remaining, to = count, self._complete_before(timeframe)
        while remaining > 0:
            page = await self._exchange.get_candles(symbol, timeframe, min(remaining, MAX_CANDLES_PER_REQUEST), to)
            if page.empty:
                break
            pages.append(page)
            remaining -= len(page)
            to = page.index[0].to_pydatetime()
            if len(page) < MAX_CANDLES_PER_REQUEST:
                break
        if len(pages) == 1:
            return pages[0]
        if not pages:
            return await self._exchange.get_candles(symbol, timeframe, 1, self._complete_before(timeframe))
        merged = pd.concat(reversed(pages))
        return merged[~merged.index.duplicated(keep="last")].sort_index()

    def _complete_before(self, timeframe: str) -> datetime | None:
        """The start of the bar forming at the clock (candles open before it are complete); None without a clock."""
        if self._clock is None:
            return None
        seconds = Timeframe(timeframe).seconds
        now = self._clock().timestamp()
        return datetime.fromtimestamp(now // seconds * seconds, UTC)

    async def collect(self, symbol: str, timeframes: list[str]) -> MarketSnapshot:
        """Everything one cycle needs for ``symbol``; ``timeframes[0]`` is the primary one."""
        if not timeframes:
            raise ValueError("expected at least one timeframe, e.g. ['1h']")
        frames = await asyncio.gather(*(self.candles(symbol, tf, self._candle_count) for tf in timeframes))
        candles = dict(zip(timeframes, frames, strict=True))
        tickers, books = await asyncio.gather(
            self._exchange.get_tickers([symbol]), self._exchange.get_orderbooks([symbol])
        )
        if not tickers:
            raise DataError(f"the exchange returned no ticker for {symbol}")
        errors: dict[str, str] = {}
        fear_greed = await self._fear_greed_reading(errors)
        correlation = await self._btc_correlation(symbol, timeframes[0], candles[timeframes[0]], errors)
        finest = min(timeframes, key=lambda tf: Timeframe(tf).seconds)
        snapshot = MarketSnapshot(
            symbol=symbol,
            timestamp=tickers[0].timestamp,
            candles=candles,
            ticker=tickers[0],
            orderbook=books[0] if books else None,
            fear_greed=fear_greed,
            fear_greed_error=errors.get("fear_greed"),
            btc_correlation=correlation,
            flash_crash=detect_flash_crash(candles[finest], self._flash_crash_pct, self._flash_crash_window),
            errors=errors,
        )
        if snapshot.flash_crash:
            log.warning("market.flash_crash", symbol=symbol, timeframe=finest, threshold_pct=str(self._flash_crash_pct))
        return snapshot

    async def _fear_greed_reading(self, errors: dict[str, str]) -> FearGreed | None:
        if self._fear_greed is None:
            return None
        try:
            return await self._fear_greed.latest()
        except MarketDataUnavailable as exc:
            errors["fear_greed"] = exc.message
            log.warning("market.fear_greed_unavailable", reason=exc.message)
            return None

    async def _btc_correlation(
        self, symbol: str, timeframe: str, alt: pd.DataFrame, errors: dict[str, str]
    ) -> float | None:
        if symbol == self._btc_symbol or alt.empty:
            return None
        try:
            # the correlation reads the last ``correlation_window`` aligned bars only: one page is enough
            count = min(self._candle_count, max(MAX_CANDLES_PER_REQUEST, self._correlation_window + 1))
            btc = await self.candles(self._btc_symbol, timeframe, count)
        except (ExchangeError, DataError) as exc:
            errors["btc_correlation"] = f"{type(exc).__name__}: {exc}"
            log.warning("market.btc_candles_unavailable", symbol=symbol, reason=str(exc))
            return None
        value = btc_correlation(alt["close"], btc["close"], self._correlation_window)
        return None if math.isnan(value) else value
