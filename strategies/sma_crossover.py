"""A worked example of a user strategy: buy when a fast simple moving average crosses above a slow one.

Copy this file, rename the class and ``name``, and change ``space`` and ``generate_signals``; see
``strategies/README.md``. Trade it with ``TRADING_STRATEGY=sma_crossover`` (the bot, replay, paper and live),
or ``python backtest.py --strategy sma_crossover``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.exceptions import ConfigurationError
from src.strategy import EXIT_PARAMS, Param, ParameterSpace, Strategy, StrategySignals, require_ohlc


class SmaCrossoverStrategy(Strategy):
    """Entry at the close of the bar where SMA(fast) crosses above SMA(slow); signal exit at the close of the bar
    where it crosses back below. Exits by default: a 3 % stop below the entry fill and a 72-hour time-out."""

    name = "sma_crossover"
    description = "SMA(fast) crosses above SMA(slow): buy; crosses below: sell; 3 % stop, 72 h time-out"
    space = ParameterSpace(
        (
            Param("fast", int, 10, 2, 200, doc="bars in the fast moving average"),
            Param("slow", int, 30, 3, 500, doc="bars in the slow moving average (more than fast)"),
        )
    ) + EXIT_PARAMS.with_defaults(stop_loss_pct=3.0, max_hold_hours=72.0)

    def __init__(self, **params: object) -> None:
        super().__init__(**params)  # validates every parameter against ``space``; self.params holds them all
        self.fast = int(self.params["fast"])
        self.slow = int(self.params["slow"])
        if self.fast >= self.slow:
            raise ConfigurationError(f"strategy {self.name}: fast ({self.fast}) must be less than slow ({self.slow})")

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        _, _, _, close = require_ohlc(df)
        # Rolling means use bars <= t only: the value at t is known at bar t's close (no look-ahead).
        fast = pd.Series(close).rolling(self.fast).mean().to_numpy()
        slow = pd.Series(close).rolling(self.slow).mean().to_numpy()
        above = fast > slow  # False while either mean is NaN (warm-up)
        before = np.concatenate(([False], above[:-1]))  # above[t-1]
        ready = ~np.isnan(slow) & ~np.isnan(np.concatenate(([np.nan], slow[:-1])))
        entry = ready & above & ~before
        exit = ready & ~above & before
        return self.signals(df, entry, exit, {"sma_fast": fast, "sma_slow": slow})
