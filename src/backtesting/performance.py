"""Performance metrics of a backtest, from the equity curve (marked at every close) and the closed trades.

Annualisation: crypto trades around the clock, so a year has ``365 * 86400 / bar_seconds`` bars
(8,760 for 1h bars, 365 for daily bars). Sharpe, Sortino and volatility use per-bar simple returns of
the equity curve with a zero risk-free rate; CAGR uses the calendar time from the first bar's open to
the last bar's close; Calmar = CAGR / |max drawdown|.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.backtesting.engine import TradeArrays
from src.domain.timeframes import Timeframe

SECONDS_PER_YEAR = 365 * 86400


def bar_seconds(index: pd.DatetimeIndex) -> float:
    """The bar length: the median spacing between consecutive timestamps (occasional gaps don't skew it)."""
    if len(index) < 2:
        return 86400.0
    return float(np.median(np.diff(index.as_unit("ns").asi8))) / 1e9


def timeframe_label(seconds: float) -> str:
    timeframe = Timeframe.from_seconds(seconds)
    return timeframe.value if timeframe is not None else f"{seconds:g}s"


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _max_consecutive(flags: np.ndarray) -> int:
    """Length of the longest run of True."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return int((ends - starts).max()) if len(starts) else 0


@dataclass(frozen=True, slots=True)
class Drawdown:
    max_drawdown_pct: float
    max_duration_bars: int
    max_duration_hours: float


def drawdown(equity: np.ndarray, index: pd.DatetimeIndex | np.ndarray) -> Drawdown:
    """Deepest fall from a running peak (percent, <= 0) and the longest time spent below a peak.

    ``index`` gives each value's time (a DatetimeIndex, or int64 nanoseconds).
    """
    if len(equity) == 0:
        return Drawdown(0.0, 0, 0.0)
    peak = np.maximum.accumulate(equity)
    depth = equity / peak - 1.0
    under = np.concatenate(([0], (depth < 0).astype(np.int8), [0]))
    edges = np.diff(under)
    first_below = np.nonzero(edges == 1)[0]  # index of the first bar under water
    recovered = np.nonzero(edges == -1)[0]  # index of the bar back at the peak (len(equity) if never)
    if len(first_below) == 0:
        return Drawdown(0.0, 0, 0.0)
    peak_bar = first_below - 1
    end_bar = np.minimum(recovered, len(equity) - 1)
    lengths = end_bar - peak_bar
    longest = int(np.argmax(lengths))
    stamps = index.as_unit("ns").asi8 if isinstance(index, pd.DatetimeIndex) else np.asarray(index, dtype=np.int64)
    seconds = (stamps[end_bar[longest]] - stamps[peak_bar[longest]]) / 1e9
    longest_bars, longest_seconds = int(lengths[longest]), float(seconds)
    return Drawdown(100.0 * float(depth.min()), longest_bars, longest_seconds / 3600.0)


class PerformanceAnalyzer:
    """Computes the report's metrics; every value is a plain float/int (None where undefined)."""

    def analyze(
        self,
        equity: pd.Series,
        trades: pd.DataFrame | TradeArrays,
        in_market: np.ndarray,
        close: pd.Series,
        initial_capital: float,
    ) -> dict[str, Any]:
        index = equity.index
        values = equity.to_numpy(dtype=np.float64)
        step = bar_seconds(index)
        per_year = SECONDS_PER_YEAR / step
        final = float(values[-1]) if len(values) else initial_capital
        total_return = final / initial_capital - 1.0
        years = ((index[-1] - index[0]).total_seconds() + step) / SECONDS_PER_YEAR if len(index) else 0.0
        cagr = (final / initial_capital) ** (1.0 / years) - 1.0 if years > 0 and final > 0 else float("nan")

        returns = np.diff(np.concatenate(([initial_capital], values))) / np.concatenate(
            ([initial_capital], values[:-1])
        )
        std = float(np.std(returns, ddof=1)) if len(returns) > 1 else float("nan")
        mean = float(np.mean(returns)) if len(returns) else float("nan")
        downside = float(np.sqrt(np.mean(np.minimum(returns, 0.0) ** 2))) if len(returns) else float("nan")
        sharpe = mean / std * math.sqrt(per_year) if std and std > 0 else float("nan")
        sortino = mean / downside * math.sqrt(per_year) if downside and downside > 0 else float("nan")
        stamps = index.as_unit("ns").asi8
        dd = drawdown(np.concatenate(([initial_capital], values)), np.concatenate((stamps[:1], stamps)))
        calmar = cagr / abs(dd.max_drawdown_pct / 100.0) if dd.max_drawdown_pct < 0 else float("nan")
        closes = close.to_numpy(dtype=np.float64)
        buy_hold = closes[-1] / closes[0] - 1.0 if len(closes) else float("nan")

        metrics: dict[str, Any] = {
            "timeframe": timeframe_label(step),
            "bars": len(values),
            "bars_per_year": per_year,
            "start": index[0].isoformat() if len(index) else None,
            "end": index[-1].isoformat() if len(index) else None,
            "initial_capital": initial_capital,
            "final_equity": final,
            "total_return_pct": 100.0 * total_return,
            "cagr_pct": _finite(100.0 * cagr),
            "buy_and_hold_return_pct": _finite(100.0 * buy_hold),
            "max_drawdown_pct": dd.max_drawdown_pct,
            "max_drawdown_duration_bars": dd.max_duration_bars,
            "max_drawdown_duration_hours": dd.max_duration_hours,
            "volatility_pct": _finite(100.0 * std * math.sqrt(per_year)),
            "sharpe": _finite(sharpe),
            "sortino": _finite(sortino),
            "calmar": _finite(calmar),
            "exposure_pct": 100.0 * float(np.mean(in_market)) if len(in_market) else 0.0,
        }
        metrics.update(self.trade_metrics(trades))
        return metrics

    def trade_metrics(self, trades: pd.DataFrame | TradeArrays) -> dict[str, Any]:
        arrays = trades if isinstance(trades, TradeArrays) else _trade_arrays(trades)
        count = len(arrays.pnl)
        if count == 0:
            return {
                "trades": 0,
                "win_rate_pct": None,
                "profit_factor": None,
                "expectancy_pct": None,
                "expectancy_krw": None,
                "avg_win_pct": None,
                "avg_loss_pct": None,
                "avg_holding_hours": None,
                "max_holding_hours": None,
                "max_consecutive_losses": 0,
                "fees_paid": 0.0,
            }
        pnl, pnl_pct, holding = arrays.pnl, arrays.pnl_pct, arrays.holding_hours
        wins, losses = pnl > 0, pnl <= 0
        gross_win, gross_loss = float(pnl[wins].sum()), float(-pnl[losses].sum())
        profit_factor = gross_win / gross_loss if gross_loss > 0 else float("inf") if gross_win > 0 else float("nan")
        return {
            "trades": count,
            "win_rate_pct": 100.0 * float(wins.mean()),
            "profit_factor": profit_factor if not math.isnan(profit_factor) else None,
            "expectancy_pct": float(pnl_pct.mean()),
            "expectancy_krw": float(pnl.mean()),
            "avg_win_pct": float(pnl_pct[wins].mean()) if wins.any() else None,
            "avg_loss_pct": float(pnl_pct[losses].mean()) if losses.any() else None,
            "avg_holding_hours": float(holding.mean()),
            "max_holding_hours": float(holding.max()),
            "max_consecutive_losses": _max_consecutive(losses),
            "fees_paid": float(arrays.fees.sum()),
        }


def _trade_arrays(trades: pd.DataFrame) -> TradeArrays:
    if trades.empty:
        empty = np.empty(0)
        return TradeArrays(empty, empty, empty, empty)
    held = (trades["exit_time"] - trades["entry_time"]).dt.total_seconds().to_numpy(dtype=np.float64) / 3600.0
    return TradeArrays(
        trades["pnl"].to_numpy(dtype=np.float64),
        trades["pnl_pct"].to_numpy(dtype=np.float64),
        trades["fees"].to_numpy(dtype=np.float64),
        held,
    )
