"""The candle factory of the tests: deterministic candles in our DataFrame shape (the fake Upbit server serves
them, replay sources and backtests read them)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

_SPANS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "10m": timedelta(minutes=10),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(minutes=60),
    "4h": timedelta(minutes=240),
    "1d": timedelta(days=1),
    "1w": timedelta(weeks=1),
    "1M": timedelta(days=31),
}


def make_candles(
    start: datetime,
    count: int,
    timeframe: str = "1h",
    *,
    start_price: float = 50_000_000.0,
    step_pct: float = 0.2,
    volume: float = 10.0,
    skip: Iterable[int] = (),
    seed: int | None = None,
) -> pd.DataFrame:
    """Deterministic candles in our DataFrame shape: a gentle zig-zag (or a seeded random walk).

    ``skip`` lists bar positions to leave out (gaps, as Upbit emits no candle without trades).
    """
    span = _SPANS[timeframe]
    rng = np.random.default_rng(seed) if seed is not None else None
    skipped = set(skip)
    rows, index, close = [], [], start_price
    for position in range(count):
        move = (rng.normal(0, step_pct) if rng is not None else (step_pct if position % 3 else -step_pct)) / 100
        open_price, close = close, close * (1 + move)
        if position in skipped:
            continue
        high, low = max(open_price, close) * 1.001, min(open_price, close) * 0.999
        rows.append((open_price, high, low, close, volume, volume * close))
        index.append(start + position * span)
    frame = pd.DataFrame(rows, columns=["open", "high", "low", "close", "volume", "value"], dtype=float)
    frame.index = pd.DatetimeIndex(index, tz=UTC, name="timestamp") if index else pd.DatetimeIndex([], tz=UTC)
    frame.index.name = "timestamp"
    return frame
