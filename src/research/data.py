"""The candles a research run works on, as plain arrays: cheap to pickle, to slice and to share between workers.

``ResearchData`` is what a batch evaluation reads (``src.research.batch``) and what a distributed run puts in
its object store once per node: the open times (int64 nanoseconds, UTC) and one float64 array per candle
column. ``start`` is the first bar traded; the bars before it are warm-up (signals and the quick filter's window
only), as ``Backtester.run(df, strategy, start)`` treats them. ``frame()`` rebuilds the candle frame a strategy's
signal function takes, identical to the one it was made from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from src.exceptions import DataError

CANDLE_COLUMNS = ("open", "high", "low", "close", "volume", "value")


@dataclass(frozen=True, slots=True, eq=False)
class ResearchData:
    """Candle arrays of one symbol and timeframe. ``times_ns``: open times (UTC, epoch nanoseconds);
    ``columns``: open, high, low, close, volume (and value when the source had it), float64, as long as
    ``times_ns``; ``start``: the first bar traded (earlier bars are warm-up)."""

    times_ns: np.ndarray
    columns: dict[str, np.ndarray]
    start: int = 0
    symbol: str = ""
    timeframe: str = ""

    def __post_init__(self) -> None:
        n = len(self.times_ns)
        for name in ("open", "high", "low", "close", "volume"):
            if name not in self.columns:
                raise DataError(f"research data lacks the candle column {name}")
        for name, values in self.columns.items():
            if len(values) != n:
                raise DataError(f"research data column {name} has {len(values)} values for {n} candles")
        if n < 2:
            raise DataError(f"research needs at least 2 candles, got {n}")
        if not 0 <= self.start < n:
            raise DataError(f"the first bar traded ({self.start}) is outside the {n} candles")

    @classmethod
    def of(
        cls, df: pd.DataFrame, start: pd.Timestamp | None = None, symbol: str = "", timeframe: str = ""
    ) -> ResearchData:
        """From a candle frame (UTC DatetimeIndex of open times); ``start``: the first bar traded is the first
        opening at or after it (None: the first candle)."""
        index = pd.DatetimeIndex(df.index)
        columns = {
            name: np.ascontiguousarray(df[name].to_numpy(dtype=np.float64)) for name in CANDLE_COLUMNS if name in df
        }
        first = 0 if start is None else int(index.searchsorted(start, side="left"))
        if first >= len(index):
            raise DataError(f"no candle opens at or after the start {start}")
        times = np.ascontiguousarray(index.as_unit("ns").asi8.astype(np.int64))
        return cls(times, columns, first, symbol, timeframe)

    def __len__(self) -> int:
        return len(self.times_ns)

    @property
    def index(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.times_ns, unit="ns", utc=True), name="timestamp")

    @property
    def stamps(self) -> np.ndarray:
        """Open times in epoch seconds (float64), as the engine reads them."""
        return (self.times_ns // 1_000_000_000).astype(np.float64)

    @property
    def close(self) -> np.ndarray:
        return self.columns["close"]

    @property
    def traded(self) -> int:
        """How many bars are traded (from ``start`` to the last)."""
        return len(self) - self.start

    def frame(self) -> pd.DataFrame:
        """The candle frame the strategies take (all bars, warm-up included)."""
        return pd.DataFrame(dict(self.columns), index=self.index)

    def window(self, first: int, last: int, warmup: int) -> ResearchData:
        """Bars ``first..last-1`` traded, with up to ``warmup`` bars before ``first`` as warm-up (and nothing
        after ``last``: a window never sees later candles)."""
        if not 0 <= first < last <= len(self):
            raise DataError(f"window {first}..{last} is outside the {len(self)} candles")
        lo = max(0, first - warmup)
        return replace(
            self,
            times_ns=self.times_ns[lo:last],
            columns={name: values[lo:last] for name, values in self.columns.items()},
            start=first - lo,
        )

    def fingerprint(self) -> str:
        """A content hash (times, columns, start): the data's part of a result cache key."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.times_ns).tobytes())
        for name in sorted(self.columns):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(self.columns[name]).tobytes())
        digest.update(f"{self.start}|{self.symbol}|{self.timeframe}".encode())
        return digest.hexdigest()[:16]
