"""The one builder of the adviser's input: what the model sees for one market at the close of one bar.

The live analysis stage and the AI backtest (``src.backtesting.ai_strategy``) both call
``build_market_context``; given the same candles and the same market-wide inputs they build the same
``MarketContext``, so the same prompt bytes and the same prompt hash.

- ``candles``: the complete candles of the trading timeframe the cycle read, oldest first; the last one is
  the bar decided (its open time is the decision's key, ``candle_at``).
- The decision is taken at that bar's close: ``timestamp = candle_at + bar``.
- Indicators (``get_latest_indicators``) and the rule signals (``SignalAnalyzer``) come from those candles
  here, never from the caller, so both worlds compute them the same way.
- Market-wide inputs the candles do not carry (the orderbook summary, fear & greed, the quick filter's
  result, the position) are passed in. A backtest that cannot know one passes None (the model is told the
  value is unavailable); a replayed decision is matched by its key (symbol, candle), not by its prompt.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from src.ai.models import MarketContext
from src.exceptions import DataError
from src.trading.indicators import get_latest_indicators
from src.trading.signal_analyzer import SignalAnalyzer

_ANALYZER = SignalAnalyzer()


def decided_candle(candles: pd.DataFrame) -> datetime | None:
    """The open time (UTC) of the bar a cycle over ``candles`` decides: the newest candle, or None."""
    if candles.empty:
        return None
    return pd.Timestamp(candles.index[-1]).to_pydatetime()


def build_market_context(
    symbol: str,
    candles: pd.DataFrame,
    *,
    bar_seconds: int,
    price: float | None,
    strategy_last: dict[str, Any],
    orderbook_summary: dict[str, Any] | None = None,
    position: dict[str, Any] | None = None,
    fear_greed: dict[str, Any] | None = None,
    quick_filter: dict[str, Any] | None = None,
    signal_analyzer: SignalAnalyzer | None = None,
) -> MarketContext:
    """The adviser's snapshot of ``symbol`` at the close of the newest candle of ``candles``.

    ``price`` is the last traded price (the close of that bar in a backtest and in replay; None uses the
    close); ``strategy_last`` the candidate strategy's conclusions for that bar (``StrategySignals.latest``).
    """
    candle_at = decided_candle(candles)
    if candle_at is None:
        raise DataError(f"no candles of {symbol}: the adviser has no bar to decide", symbol=symbol)
    if bar_seconds <= 0:
        raise DataError(f"bar_seconds must be positive, got {bar_seconds}", symbol=symbol)
    analyzer = signal_analyzer or _ANALYZER
    indicators = get_latest_indicators(candles)
    signals = analyzer.summary(analyzer.analyze_signals(indicators))
    return MarketContext(
        symbol=symbol,
        timestamp=candle_at + timedelta(seconds=bar_seconds),
        price=float(price) if price is not None else float(indicators.get("close", candles["close"].iloc[-1])),
        indicators=indicators,
        signals={**signals, "strategy": strategy_last},
        orderbook=orderbook_summary,
        position=position,
        fear_greed=fear_greed,
        quick_filter=quick_filter,
        candle_at=candle_at,
    )
