"""No look-ahead: changing candles after bar t never changes any decision at or before t, for every strategy."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.ai.service import AIDecision, MarketContext
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.backtesting.engine import EngineConfig
from src.domain.decisions import Decision, DecisionSource
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import Strategy

ROOT = Path(__file__).resolve().parents[1]


class RsiAdviser:
    """A deterministic stand-in for the AI service: buys when RSI < 65 (a function of its context only)."""

    available = True

    def __init__(self) -> None:
        self.calls = 0

    async def decide(self, context: MarketContext) -> AIDecision:
        self.calls += 1
        buy = context.indicators.get("rsi_14", 100.0) < 65.0
        return AIDecision(
            decision=Decision.BUY if buy else Decision.HOLD,
            confidence=Decimal("80"),
            reason="rsi rule",
            source=DecisionSource.AI,
            model="fake",
            prompt_hash=f"{context.symbol}-{context.timestamp.isoformat()}",
        )


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    df = load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv")
    return df.loc["2022-05-01":"2022-08-31"]


def perturb_after(df: pd.DataFrame, t: int, seed: int) -> pd.DataFrame:
    """Replace every candle after bar t with different (still valid) random candles."""
    rng = np.random.default_rng(seed)
    changed = df.copy()
    n = len(df) - t - 1
    base = df["close"].iloc[t] * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    spread = base * rng.uniform(0.001, 0.03, n)
    changed.iloc[t + 1 :, changed.columns.get_loc("open")] = base
    changed.iloc[t + 1 :, changed.columns.get_loc("high")] = base + spread
    changed.iloc[t + 1 :, changed.columns.get_loc("low")] = base - spread
    changed.iloc[t + 1 :, changed.columns.get_loc("close")] = base + rng.uniform(-1, 1, n) * spread
    changed.iloc[t + 1 :, changed.columns.get_loc("volume")] = rng.uniform(0, 500, n)
    return changed


def make_strategies() -> dict[str, Strategy]:
    return {
        "volatility_breakout": VolatilityBreakoutStrategy(k=0.5),
        "volatility_breakout_trend": VolatilityBreakoutStrategy(k=0.3, trend_filter=True),
        "rule_donchian": RuleBasedBreakoutStrategy(),
        "rule_range": RuleBasedBreakoutStrategy(breakout_mode="range", squeeze_mode="bb", use_obv=False),
        "ai": AITradingStrategy(RsiAdviser(), "KRW-BTC"),
    }


ARRAYS = ("entry", "exit", "atr")


@pytest.mark.parametrize("name", list(make_strategies()))
@pytest.mark.parametrize("t", [300, 1200, 2500])
def test_future_candles_never_change_past_decisions(candles: pd.DataFrame, name: str, t: int) -> None:
    # Given the same strategy run on the real candles and on candles changed after bar t
    original = make_strategies()[name].generate_signals(candles)
    changed_df = perturb_after(candles, t, seed=t)
    changed = make_strategies()[name].generate_signals(changed_df)
    # Then every instruction and conclusion for bars 0..t is identical
    for array in ARRAYS:
        np.testing.assert_array_equal(
            getattr(original, array)[: t + 1], getattr(changed, array)[: t + 1], err_msg=array
        )
    # And the engine's trades opened at or before t, and the equity up to t-1, are identical
    # (the bot's rules, the quick filter gate included: its window only looks back)
    config = EngineConfig(quick_filter_tier="lenient", quick_filter_lookback_days=10)
    policy = make_strategies()[name].exit_policy
    a = Backtester(config).run_signals(candles, original, name, {}, policy)
    b = Backtester(config).run_signals(changed_df, changed, name, {}, policy)
    entries_a = a.trades[a.trades.entry_bar <= t][["entry_bar", "entry_price"]].reset_index(drop=True)
    entries_b = b.trades[b.trades.entry_bar <= t][["entry_bar", "entry_price"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(entries_a, entries_b)
    exits_a = a.trades[a.trades.exit_bar <= t][["exit_bar", "exit_price"]].reset_index(drop=True)
    exits_b = b.trades[b.trades.exit_bar <= t][["exit_bar", "exit_price"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(exits_a, exits_b)
    np.testing.assert_array_equal(a.equity.to_numpy()[:t], b.equity.to_numpy()[:t])


def test_strategies_trade_on_this_window(candles: pd.DataFrame) -> None:
    # Guard: the look-ahead test is only meaningful if each strategy actually trades here
    for name, strategy in make_strategies().items():
        result = Backtester(EngineConfig(quick_filter_tier="lenient", quick_filter_lookback_days=10)).run(
            candles, strategy
        )
        assert result.metrics["trades"] > 0, name
