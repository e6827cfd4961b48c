"""The backtest engine: signals computed once (vectorised), then the portfolio in one compiled loop.

Fill semantics live in ``src/backtesting/portfolio.py`` and are documented in docs/BACKTESTING.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.backtesting.performance import PerformanceAnalyzer
from src.backtesting.portfolio import Portfolio, PortfolioConfig
from src.config.settings import Settings
from src.exceptions import DataError
from src.strategy.contract import Strategy, StrategySignals, shifted
from src.utils.logger import get_logger

log = get_logger(__name__)


def portfolio_config_from_settings(settings: Settings) -> PortfolioConfig:
    return PortfolioConfig(
        initial_capital=float(settings.backtest.initial_capital),
        fee_rate=float(settings.trading.fee_rate),
        slippage_pct=float(settings.backtest.slippage_pct),
        min_order_krw=float(settings.trading.min_order_krw),
    )


def json_safe(value: Any) -> Any:
    """Non-finite floats become None so the output is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


@dataclass(slots=True)
class BacktestResult:
    strategy: str
    parameters: dict[str, Any]
    config: PortfolioConfig
    candles: pd.DataFrame
    signals: StrategySignals
    portfolio: Portfolio
    metrics: dict[str, Any]

    @property
    def trades(self) -> pd.DataFrame:
        return self.portfolio.trades

    @property
    def equity(self) -> pd.Series:
        return self.portfolio.equity

    def trade_records(self) -> list[dict[str, Any]]:
        trades = self.portfolio.trades
        return [
            {
                "entry_time": row.entry_time.isoformat(),
                "entry_price": float(row.entry_price),
                "exit_time": row.exit_time.isoformat(),
                "exit_price": float(row.exit_price),
                "pnl_pct": float(row.pnl_pct),
                "pnl": float(row.pnl),
                "units": float(row.units),
                "fees": float(row.fees),
                "exit_reason": row.exit_reason,
            }
            for row in trades.itertuples(index=False)
        ]

    def to_dict(self) -> dict[str, Any]:
        return json_safe(
            {
                "strategy": self.strategy,
                "parameters": self.parameters,
                "settings": {
                    "initial_capital": self.config.initial_capital,
                    "fee_rate": self.config.fee_rate,
                    "slippage_pct": self.config.slippage_pct,
                    "position_fraction": self.config.position_fraction,
                    "min_order_krw": self.config.min_order_krw,
                    "tick_sizes": self.config.use_tick_sizes,
                },
                "metrics": self.metrics,
                "final_equity": self.metrics["final_equity"],
                "skipped_entries": self.portfolio.skipped_entries,
                "trades": self.trade_records(),
            }
        )


class Backtester:
    def __init__(self, config: PortfolioConfig | None = None) -> None:
        self.config = config or PortfolioConfig()
        self.analyzer = PerformanceAnalyzer()
        self.stop_atr = np.nan
        self.target_atr = np.nan

    def run(self, df: pd.DataFrame, strategy: Strategy) -> BacktestResult:
        if len(df) < 2:
            raise DataError(f"a backtest needs at least 2 candles, got {len(df)}")
        signals = strategy.generate_signals(df)
        self.stop_atr = strategy.exit_policy.stop_atr or np.nan
        self.target_atr = strategy.exit_policy.target_atr or np.nan
        return self.run_signals(df, signals, strategy.name, strategy.parameters())

    def run_signals(
        self, df: pd.DataFrame, signals: StrategySignals, name: str, parameters: dict[str, Any]
    ) -> BacktestResult:
        # Interim (replaced by the bot-simulating engine): act on bar t's conclusions at bar t+1's open.
        policy_atr = signals.atr
        portfolio = Portfolio.simulate(
            df,
            entry_stop=np.where(shifted(signals.entry.astype(np.float64), fill=0.0) > 0, 0.0, np.nan),
            exit_at_open=shifted(signals.exit.astype(np.float64), fill=0.0) > 0,
            stop_distance=shifted(self.stop_atr * policy_atr),
            target_distance=shifted(self.target_atr * policy_atr),
            config=self.config,
        )
        metrics = self.analyzer.analyze(
            portfolio.equity, portfolio.trade_arrays(), portfolio.in_market, df["close"], self.config.initial_capital
        )
        log.debug("backtest.finished", strategy=name, bars=len(df), trades=metrics["trades"])
        return BacktestResult(name, parameters, self.config, df, signals, portfolio, metrics)
