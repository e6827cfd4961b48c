"""Performance metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from src.backtesting.performance import PerformanceAnalyzer, bar_seconds, drawdown


def equity_series(values: list[float], freq: str = "1D") -> pd.Series:
    index = pd.date_range("2023-01-01", periods=len(values), freq=freq, tz="UTC", name="timestamp")
    return pd.Series(values, index=index, dtype=float)


def trades_frame(rows: list[tuple[float, float, float, int]]) -> pd.DataFrame:
    """(pnl, pnl_pct, fees, holding hours) per trade."""
    start = pd.Timestamp("2023-01-01", tz="UTC")
    entries = [start + pd.Timedelta(days=i) for i in range(len(rows))]
    return pd.DataFrame(
        {
            "pnl": [r[0] for r in rows],
            "pnl_pct": [r[1] for r in rows],
            "fees": [r[2] for r in rows],
            "entry_time": entries,
            "exit_time": [e + pd.Timedelta(hours=r[3]) for e, r in zip(entries, rows, strict=True)],
        }
    )


def test_return_drawdown_and_risk_ratios_by_hand() -> None:
    # Given daily equity 100 -> 110 -> 99 -> 121 from a capital of 100
    equity = equity_series([100.0, 110.0, 99.0, 121.0])
    close = pd.Series([10.0, 11.0, 9.0, 12.0], index=equity.index)
    m = PerformanceAnalyzer().analyze(equity, trades_frame([]), np.array([0, 1, 1, 0], bool), close, 100.0)
    # Then the per-bar returns are 0, +10 %, -10 %, +22.2 %
    returns = np.array([0.0, 0.1, -0.1, 121 / 99 - 1])
    assert m["total_return_pct"] == pytest.approx(21.0)
    assert m["buy_and_hold_return_pct"] == pytest.approx(20.0)
    assert m["max_drawdown_pct"] == pytest.approx(-10.0)
    assert m["max_drawdown_duration_bars"] == 2  # from the peak at bar 1 until back above it at bar 3
    assert m["max_drawdown_duration_hours"] == pytest.approx(48.0)
    sharpe = returns.mean() / returns.std(ddof=1) * math.sqrt(365)
    sortino = returns.mean() / math.sqrt(np.mean(np.minimum(returns, 0) ** 2)) * math.sqrt(365)
    assert m["sharpe"] == pytest.approx(sharpe)
    assert m["sortino"] == pytest.approx(sortino)
    assert m["volatility_pct"] == pytest.approx(100 * returns.std(ddof=1) * math.sqrt(365))
    # 4 daily bars = 4 days of calendar time
    cagr = 1.21 ** (365 / 4) - 1
    assert m["cagr_pct"] == pytest.approx(100 * cagr)
    assert m["calmar"] == pytest.approx(cagr / 0.10)
    assert m["exposure_pct"] == pytest.approx(50.0)
    assert m["bars_per_year"] == 365
    assert m["timeframe"] == "1d"


def test_hourly_bars_annualise_with_8760_bars_per_year() -> None:
    equity = equity_series([100.0, 101.0, 100.5, 102.0], freq="1h")
    m = PerformanceAnalyzer().analyze(equity, trades_frame([]), np.zeros(4, bool), equity, 100.0)
    assert m["bars_per_year"] == 8760
    assert m["timeframe"] == "1h"


def test_drawdown_from_the_starting_capital_counts() -> None:
    # Given equity that never regains its starting capital
    equity = equity_series([95.0, 90.0, 97.0])
    m = PerformanceAnalyzer().analyze(equity, trades_frame([]), np.zeros(3, bool), equity, 100.0)
    assert m["max_drawdown_pct"] == pytest.approx(-10.0)
    assert m["max_drawdown_duration_bars"] == 3


def test_drawdown_duration_of_an_unrecovered_fall_runs_to_the_end() -> None:
    values = np.array([100.0, 120.0, 110.0, 100.0, 115.0])
    index = pd.date_range("2023-01-01", periods=5, freq="1h", tz="UTC")
    dd = drawdown(values, index)
    assert dd.max_drawdown_pct == pytest.approx(100 * (100 / 120 - 1))
    assert dd.max_duration_bars == 3
    assert dd.max_duration_hours == pytest.approx(3.0)


def test_trade_statistics_by_hand() -> None:
    # Given five trades: +200, -100, -50, -50, +100 KRW
    trades = trades_frame(
        [(200, 2.0, 1, 4), (-100, -1.0, 1, 2), (-50, -0.5, 1, 10), (-50, -0.5, 1, 1), (100, 1.0, 1, 3)]
    )
    m = PerformanceAnalyzer().trade_metrics(trades)
    assert m["trades"] == 5
    assert m["win_rate_pct"] == pytest.approx(40.0)
    assert m["profit_factor"] == pytest.approx(300 / 200)
    assert m["expectancy_krw"] == pytest.approx(20.0)
    assert m["expectancy_pct"] == pytest.approx(0.2)
    assert m["avg_win_pct"] == pytest.approx(1.5)
    assert m["avg_loss_pct"] == pytest.approx(-2.0 / 3)
    assert m["max_consecutive_losses"] == 3
    assert m["avg_holding_hours"] == pytest.approx(4.0)
    assert m["max_holding_hours"] == pytest.approx(10.0)
    assert m["fees_paid"] == pytest.approx(5.0)


def test_no_trades_gives_undefined_ratios_not_zero() -> None:
    m = PerformanceAnalyzer().trade_metrics(trades_frame([]))
    assert m["trades"] == 0
    assert m["win_rate_pct"] is None
    assert m["profit_factor"] is None


def test_only_winners_has_infinite_profit_factor() -> None:
    m = PerformanceAnalyzer().trade_metrics(trades_frame([(10, 1.0, 0, 1)]))
    assert math.isinf(m["profit_factor"])


def test_bar_length_ignores_gaps() -> None:
    index = pd.DatetimeIndex(["2023-01-01 00:00", "2023-01-01 01:00", "2023-01-01 02:00", "2023-01-05 00:00"], tz="UTC")
    assert bar_seconds(index) == 3600.0
