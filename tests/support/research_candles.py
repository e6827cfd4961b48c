"""Candles for the research tests: a seeded random walk with fat-ish tails and trends (breakouts happen)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def walk_candles(bars: int, seed: int = 7, start: str = "2024-01-01") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    drift = 0.002 * np.sin(np.arange(bars) / 60.0)
    close = 40_000_000.0 * np.exp(np.cumsum(rng.standard_t(df=4, size=bars) * 0.004 + drift))
    opens = np.concatenate(([close[0]], close[:-1])) * np.exp(rng.normal(0, 0.0005, bars))
    wick = np.abs(rng.normal(0, 0.003, (2, bars)))
    volume = rng.lognormal(3, 0.8, bars)
    return pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, close) * (1 + wick[0]),
            "low": np.minimum(opens, close) * (1 - wick[1]),
            "close": close,
            "volume": volume,
            "value": volume * close,
        },
        index=pd.date_range(start, periods=bars, freq="1h", tz="UTC", name="timestamp"),
    )
