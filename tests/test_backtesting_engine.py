"""Engine semantics: volatility breakout against the spec's formula, fills, stops/targets, ticks, min order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.backtesting.portfolio import PortfolioConfig
from src.strategy.bundled import VolatilityBreakoutStrategy
from src.strategy.contract import StrategySignals

ROOT = Path(__file__).resolve().parents[1]
EXACT = PortfolioConfig(initial_capital=1_000_000.0, fee_rate=0.0005, slippage_pct=0.0, use_tick_sizes=False)


def frame(rows: list[tuple[float, float, float, float]], start: str = "2023-01-01", freq: str = "1h") -> pd.DataFrame:
    index = pd.date_range(start, periods=len(rows), freq=freq, tz="UTC", name="timestamp")
    df = pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index, dtype=float)
    df["volume"] = 1.0
    df["value"] = np.nan
    return df


def reference_volatility_breakout(
    df: pd.DataFrame, k: float, fee: float, capital: float, trend_filter: bool = False
) -> tuple[list[tuple[int, float, int, float]], float, np.ndarray]:
    """The spec's algorithm written plainly, bar by bar, as an independent oracle."""
    o, h, lo, c = (df[col].to_numpy() for col in ("open", "high", "low", "close"))
    n = len(o)
    cash, units, entry = capital, 0.0, None
    trades, equity = [], np.empty(n)
    for t in range(n):
        if units:
            cash = units * o[t] * (1 - fee)
            trades.append((entry[0], entry[1], t, o[t]))
            units = 0.0
        if 1 <= t <= n - 2:
            target = o[t] + k * (h[t - 1] - lo[t - 1])
            trend_ok = not trend_filter or (t >= 5 and o[t] > np.mean(c[t - 5 : t]))
            if h[t] >= target and trend_ok:
                price = max(target, o[t])
                units = cash / (price * (1 + fee))
                cash = 0.0
                entry = (t, price)
        equity[t] = cash + units * c[t]
    return trades, cash, equity


@pytest.mark.parametrize("trend_filter", [False, True])
def test_volatility_breakout_matches_the_spec_formula_on_real_daily_candles(trend_filter: bool) -> None:
    # Given real KRW-BTC daily candles and the exact-fill configuration (no slippage, no ticks)
    df = load_candle_csv(ROOT / "backtest_data" / "daily" / "KRW-BTC_1d.csv")
    # When the engine runs the volatility breakout
    result = Backtester(EXACT).run(df, VolatilityBreakoutStrategy(k=0.5, trend_filter=trend_filter))
    # Then trades, equity at every close and the final cash equal the plain reference
    trades, final_cash, equity = reference_volatility_breakout(df, 0.5, 0.0005, 1_000_000.0, trend_filter)
    got = list(
        zip(
            result.trades.entry_bar,
            result.trades.entry_price,
            result.trades.exit_bar,
            result.trades.exit_price,
            strict=True,
        )
    )
    assert len(got) == len(trades) > 100
    for (eb, ep, xb, xp), (reb, rep, rxb, rxp) in zip(got, trades, strict=True):
        assert (eb, xb) == (reb, rxb)
        assert ep == pytest.approx(rep, rel=1e-12)
        assert xp == pytest.approx(rxp, rel=1e-12)
    assert result.metrics["final_equity"] == pytest.approx(final_cash, rel=1e-9)
    np.testing.assert_allclose(result.equity.to_numpy(), equity, rtol=1e-9)


def test_volatility_breakout_hand_computed() -> None:
    # Given 4 bars; range of bar 0 is 10, k = 0.5 -> target[1] = 100 + 5 = 105, high 110 -> buy at 105
    df = frame([(100, 110, 100, 105), (100, 110, 95, 108), (112, 120, 111, 115), (115, 116, 114, 115)])
    result = Backtester(PortfolioConfig(1_000_000.0, 0.001, 0.0, use_tick_sizes=False)).run(
        df, VolatilityBreakoutStrategy(k=0.5)
    )
    trades = result.trades
    # Then bar 1 buys at 105; bar 2 opens at 112 -> sells at 112; target[2] = 112 + 0.5*15 = 119.5 <= 120,
    # buys at 119.5; bar 3 (the last) sells at its open 115 and never re-enters
    assert list(trades.entry_price) == [105.0, 119.5]
    assert list(trades.exit_price) == [112.0, 115.0]
    units1 = 1_000_000 / (105 * 1.001)
    cash1 = units1 * 112 * 0.999
    units2 = cash1 / (119.5 * 1.001)
    cash2 = units2 * 115 * 0.999
    assert result.metrics["final_equity"] == pytest.approx(cash2)
    assert result.equity.iloc[1] == pytest.approx(units1 * 108)
    assert result.equity.iloc[0] == 1_000_000.0
    assert result.metrics["fees_paid"] == pytest.approx(
        units1 * 105 * 0.001 + units1 * 112 * 0.001 + units2 * 119.5 * 0.001 + units2 * 115 * 0.001
    )


def signals_for(
    df: pd.DataFrame,
    entries: dict[int, float],
    stop: float = np.nan,
    target: float = np.nan,
    exits: tuple[int, ...] = (),
) -> StrategySignals:
    signals = StrategySignals.empty(df.index)
    for bar, level in entries.items():
        signals.entry_stop[bar] = level
        signals.stop_distance[bar] = stop
        signals.target_distance[bar] = target
    for bar in exits:
        signals.exit_at_open[bar] = True
    return signals


def run(df: pd.DataFrame, signals: StrategySignals, config: PortfolioConfig = EXACT):
    return Backtester(config).run_signals(df, signals, "test", {})


def test_stop_hit_intrabar_fills_at_the_stop() -> None:
    # Given a market entry at bar 1's open (100) with stop 10 below and target 20 above
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (101, 103, 89, 95), (95, 96, 94, 95)])
    result = run(df, signals_for(df, {1: 0.0}, stop=10, target=20))
    # Then bar 2's low 89 touches the stop at 90: sold at 90
    trade = result.trades.iloc[0]
    assert (trade.entry_bar, trade.entry_price, trade.exit_bar, trade.exit_price, trade.exit_reason) == (
        1,
        100.0,
        2,
        90.0,
        "stop",
    )


def test_target_hit_intrabar_fills_at_the_target() -> None:
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (101, 125, 100, 110), (110, 111, 109, 110)])
    trade = run(df, signals_for(df, {1: 0.0}, stop=10, target=20)).trades.iloc[0]
    assert (trade.exit_bar, trade.exit_price, trade.exit_reason) == (2, 120.0, "target")


def test_stop_and_target_in_one_bar_assumes_the_stop_first() -> None:
    # Given a bar whose range covers both the stop (90) and the target (120)
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (101, 125, 85, 110), (110, 111, 109, 110)])
    trade = run(df, signals_for(df, {1: 0.0}, stop=10, target=20)).trades.iloc[0]
    # Then the pessimistic rule applies: the stop
    assert (trade.exit_price, trade.exit_reason) == (90.0, "stop")


def test_gap_through_the_stop_fills_at_the_open() -> None:
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (85, 86, 80, 84), (84, 85, 83, 84)])
    trade = run(df, signals_for(df, {1: 0.0}, stop=10, target=20)).trades.iloc[0]
    assert (trade.exit_bar, trade.exit_price, trade.exit_reason) == (2, 85.0, "stop")


def test_gap_over_the_target_fills_at_the_open() -> None:
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (130, 131, 128, 129), (129, 130, 128, 129)])
    trade = run(df, signals_for(df, {1: 0.0}, stop=10, target=20)).trades.iloc[0]
    assert (trade.exit_bar, trade.exit_price, trade.exit_reason) == (2, 130.0, "target")


def test_stop_is_checked_on_the_entry_bar_and_blocks_reentry_that_bar() -> None:
    # Given an entry at bar 1's open whose own bar falls through the stop
    df = frame([(100, 101, 99, 100), (100, 101, 88, 92), (92, 93, 91, 92), (92, 93, 91, 92)])
    result = run(df, signals_for(df, {1: 0.0, 2: 0.0}, stop=10, target=20))
    first, second = result.trades.iloc[0], result.trades.iloc[1]
    assert (first.entry_bar, first.exit_bar, first.exit_price, first.exit_reason) == (1, 1, 90.0, "stop")
    # Then the next entry comes in bar 2 and is closed at the last close
    assert (second.entry_bar, second.exit_bar, second.exit_price, second.exit_reason) == (2, 3, 92.0, "end")


def test_buy_stop_not_reached_does_not_fill_and_last_bar_never_enters() -> None:
    df = frame([(100, 101, 99, 100), (100, 104, 99, 103), (103, 110, 102, 109)])
    result = run(df, signals_for(df, {1: 105.0, 2: 0.0}))
    assert result.trades.empty
    assert result.metrics["final_equity"] == EXACT.initial_capital


def test_exit_at_open_sells_at_the_open() -> None:
    df = frame([(100, 101, 99, 100), (100, 102, 98, 101), (104, 106, 103, 105), (105, 106, 104, 105)])
    trade = run(df, signals_for(df, {1: 0.0}, exits=(2,))).trades.iloc[0]
    assert (trade.exit_bar, trade.exit_price, trade.exit_reason) == (2, 104.0, "signal")


def test_slippage_and_tick_rounding_move_fills_against_the_trader() -> None:
    # Given BTC-like prices in 2023 (tick 1,000 KRW above 2,000,000) and 0.05 % slippage
    df = frame(
        [
            (30_000_000, 30_100_000, 29_900_000, 30_000_000),
            (30_000_500, 30_200_000, 29_950_000, 30_100_000),
            (30_100_000, 30_300_000, 30_000_000, 30_200_000),
            (30_200_000, 30_300_000, 30_100_000, 30_250_000),
        ]
    )
    config = PortfolioConfig(10_000_000.0, 0.0005, slippage_pct=0.05, use_tick_sizes=True)
    trade = run(df, signals_for(df, {1: 0.0}, exits=(3,)), config).trades.iloc[0]
    # Then the buy is 30,000,500 * 1.0005 = 30,015,500.25 rounded UP to 30,016,000, and the sell
    # 30,200,000 * 0.9995 = 30,184,900 rounded DOWN to 30,184,000
    assert trade.entry_price == 30_016_000.0
    assert trade.exit_price == 30_184_000.0


def test_tick_table_follows_the_bar_date() -> None:
    # Given an open of 1,234,400 KRW: the tick is 500 before 2025-07-31 and 1,000 from then on
    rows = [(1_234_400, 1_240_000, 1_230_000, 1_234_400)] * 3
    config = PortfolioConfig(10_000_000.0, 0.0, 0.0, use_tick_sizes=True)
    old_df, new_df = frame(rows, "2024-06-01"), frame(rows, "2025-08-01")
    old = run(old_df, signals_for(old_df, {1: 0.0}), config).trades.iloc[0]
    new = run(new_df, signals_for(new_df, {1: 0.0}), config).trades.iloc[0]
    # Then buys round up and sells (at the last close) round down on the grid of that date
    assert (old.entry_price, old.exit_price) == (1_234_500.0, 1_234_000.0)
    assert (new.entry_price, new.exit_price) == (1_235_000.0, 1_234_000.0)


def test_entries_below_the_minimum_order_are_skipped() -> None:
    df = frame([(100, 101, 99, 100)] * 4)
    config = PortfolioConfig(initial_capital=4_999.0, fee_rate=0.0005, use_tick_sizes=False)
    result = run(df, signals_for(df, {1: 0.0, 2: 0.0}), config)
    assert result.trades.empty
    assert result.portfolio.skipped_entries == 2


def test_position_fraction_keeps_the_rest_in_cash() -> None:
    df = frame([(100, 101, 99, 100), (100, 101, 99, 100), (110, 111, 109, 110)])
    config = PortfolioConfig(1_000_000.0, 0.0, 0.0, position_fraction=0.25, use_tick_sizes=False)
    result = run(df, signals_for(df, {1: 0.0}), config)
    # 250,000 KRW buys 2,500 units at 100, worth 275,000 at the end; 750,000 stayed in cash
    assert result.metrics["final_equity"] == pytest.approx(1_025_000.0)
    assert result.trades.iloc[0].exit_reason == "end"
