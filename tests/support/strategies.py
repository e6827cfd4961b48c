"""Strategies for tests that need a decision regardless of the market."""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.strategy.contract import Strategy, StrategySignals


class AlwaysBuy(Strategy):
    name = "always_buy"

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        signals = StrategySignals.empty(df.index)
        signals.entry = np.ones(len(df), dtype=np.bool_)
        return signals
