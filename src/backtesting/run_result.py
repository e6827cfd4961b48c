"""A backtest's result as plain JSON data: what ``GET /api/v1/backtests/{id}`` answers and what the HTML
report inlines, so that one chart renderer (``backend/app/dashboard/charts.js``) draws both."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from src.backtesting.backtester import json_safe

if TYPE_CHECKING:
    from src.backtesting.backtester import BacktestResult


def _iso(index: Any) -> list[str]:
    return [stamp.isoformat() for stamp in index]


def result_payload(result: BacktestResult) -> dict[str, Any]:
    """``metrics`` (with ``initial_capital``, ``strategy`` and ``parameters``), ``trades`` (round trips with exit
    reasons), ``equity`` (``[[iso, value], ...]``, one point per bar traded) and ``candles`` (``[[iso, open, high,
    low, close], ...]``). Times are the bars' open times in UTC; missing bars stay missing (gaps show)."""
    candles = result.candles
    times = _iso(candles.index)
    prices = candles[["open", "high", "low", "close"]].to_numpy(dtype=np.float64).tolist()
    equity = result.equity
    metrics = {
        **result.metrics,
        "initial_capital": float(result.config.initial_capital),
        "strategy": result.strategy,
        "parameters": result.parameters,
        "gates": result.gates(),
    }
    return json_safe(
        {
            "metrics": metrics,
            "trades": result.trade_records(),
            "equity": [[stamp, value] for stamp, value in zip(_iso(equity.index), equity.tolist(), strict=True)],
            "candles": [[stamp, *bar] for stamp, bar in zip(times, prices, strict=True)],
        }
    )
