"""Technical indicators, vectorised over whole candle frames (TA-Lib underneath).

Every value at row t uses only rows <= t, so the same frame serves backtests (computed once) and
the live path (``get_latest_indicators`` reads the last row).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

import numba
import numpy as np
import pandas as pd
import talib

from src.exceptions import DataError

INDICATOR_KEYS: tuple[str, ...] = (
    "close",
    "sma_20",
    "sma_50",
    "ema_12",
    "ema_26",
    "rsi_14",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_width",
    "bb_width_percentile",
    "atr_14",
    "atr_pct",
    "adx_14",
    "stoch_k",
    "stoch_d",
    "obv",
    "obv_slope",
    "donchian_high_20",
    "donchian_low_20",
    "volume_ratio",
)

BB_WIDTH_PERCENTILE_LOOKBACK = 100
OBV_SLOPE_BARS = 5


def _as_float(values: pd.Series | np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(values, dtype=np.float64))


def sma(values: np.ndarray, period: int) -> np.ndarray:
    return talib.SMA(_as_float(values), timeperiod=period)


def ema(values: np.ndarray, period: int) -> np.ndarray:
    return talib.EMA(_as_float(values), timeperiod=period)


def rsi(close: np.ndarray, period: int = 14) -> np.ndarray:
    return talib.RSI(_as_float(close), timeperiod=period)


def macd(close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[np.ndarray, ...]:
    """MACD line, signal line and histogram (TA-Lib seeds the EMAs like most charting tools)."""
    return talib.MACD(_as_float(close), fastperiod=fast, slowperiod=slow, signalperiod=signal)


def bollinger(close: np.ndarray, period: int = 20, stddev: float = 2.0) -> tuple[np.ndarray, ...]:
    """Upper, middle, lower bands (population standard deviation) and width = (upper-lower)/middle."""
    upper, middle, lower = talib.BBANDS(
        _as_float(close), timeperiod=period, nbdevup=stddev, nbdevdn=stddev, matype=talib.MA_Type.SMA
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (upper - lower) / middle
    return upper, middle, lower, width


@numba.njit(cache=True, fastmath={"reassoc"})
def _rolling_rank_le(values: np.ndarray, lookback: int, skip: np.ndarray) -> np.ndarray:
    n = values.shape[0]
    out = np.full(n, np.nan)
    for t in range(lookback - 1, n):
        if skip[t]:
            continue
        current = values[t]
        base = t - lookback + 1
        count = np.int64(0)
        for i in range(lookback):  # an integer reduction without branches: the compiler vectorises it
            count += np.int64(values[base + i] <= current)
        out[t] = 100.0 * count / lookback
    return out


def rolling_percentile_rank(values: np.ndarray, lookback: int) -> np.ndarray:
    """Percent (0..100) of the last ``lookback`` values (current one included) that are <= the current one.

    NaN until a full window of non-NaN values exists (and for any window that holds a NaN).
    """
    arr = _as_float(values)
    nan_count = np.concatenate(([0], np.cumsum(np.isnan(arr))))
    window_nans = np.zeros(len(arr), dtype=np.int64)
    if len(arr) >= lookback:
        window_nans[lookback - 1 :] = nan_count[lookback:] - nan_count[: len(arr) - lookback + 1]
    return _rolling_rank_le(arr, lookback, window_nans > 0)


def bollinger_squeeze(width_percentile: np.ndarray, threshold: float = 20.0) -> np.ndarray:
    """True where the band width sits in the lowest ``threshold`` percent of its recent history."""
    return np.nan_to_num(width_percentile, nan=np.inf) <= threshold


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    """Wilder's average true range."""
    return talib.ATR(_as_float(high), _as_float(low), _as_float(close), timeperiod=period)


def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> np.ndarray:
    return talib.ADX(_as_float(high), _as_float(low), _as_float(close), timeperiod=period)


def stochastic(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, k_period: int = 14, smooth_k: int = 3, d_period: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Slow stochastic %K and %D (simple moving averages)."""
    return talib.STOCH(
        _as_float(high),
        _as_float(low),
        _as_float(close),
        fastk_period=k_period,
        slowk_period=smooth_k,
        slowk_matype=talib.MA_Type.SMA,
        slowd_period=d_period,
        slowd_matype=talib.MA_Type.SMA,
    )


def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray:
    return talib.OBV(_as_float(close), _as_float(volume))


def donchian(high: np.ndarray, low: np.ndarray, period: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Highest high and lowest low of the last ``period`` bars, the current bar included."""
    return talib.MAX(_as_float(high), timeperiod=period), talib.MIN(_as_float(low), timeperiod=period)


def volume_ratio(volume: np.ndarray, period: int = 20) -> np.ndarray:
    """Volume over its ``period``-bar mean (current bar included)."""
    mean = sma(volume, period)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, _as_float(volume) / mean, np.nan)


def slope(values: np.ndarray, bars: int) -> np.ndarray:
    """Change over the last ``bars`` bars (values[t] - values[t-bars])."""
    arr = _as_float(values)
    out = np.full_like(arr, np.nan)
    if len(arr) > bars:
        out[bars:] = arr[bars:] - arr[:-bars]
    return out


def _require_columns(df: pd.DataFrame) -> None:
    missing = [column for column in ("open", "high", "low", "close", "volume") if column not in df.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}", missing=missing)


class IndicatorArrays(Mapping[str, np.ndarray]):
    """The indicators of one frame as numpy arrays, each computed on first access (backtests ask for few)."""

    def __init__(self, df: pd.DataFrame) -> None:
        _require_columns(df)
        self.high, self.low, self.close, self.volume = (_as_float(df[c]) for c in ("high", "low", "close", "volume"))
        self._values: dict[str, np.ndarray] = {"close": self.close}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._values:
            if key not in INDICATOR_KEYS:
                raise KeyError(key)
            self._compute(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(INDICATOR_KEYS)

    def __len__(self) -> int:
        return len(INDICATOR_KEYS)

    def _compute(self, key: str) -> None:
        h, lo, c, v, out = self.high, self.low, self.close, self.volume, self._values
        if key in ("sma_20", "sma_50"):
            out[key] = sma(c, int(key[4:]))
        elif key in ("ema_12", "ema_26"):
            out[key] = ema(c, int(key[4:]))
        elif key == "rsi_14":
            out[key] = rsi(c)
        elif key.startswith("macd"):
            out["macd"], out["macd_signal"], out["macd_hist"] = macd(c)
        elif key == "bb_width_percentile":
            out[key] = rolling_percentile_rank(self["bb_width"], BB_WIDTH_PERCENTILE_LOOKBACK)
        elif key.startswith("bb_"):
            out["bb_upper"], out["bb_middle"], out["bb_lower"], out["bb_width"] = bollinger(c)
        elif key == "atr_14":
            out[key] = atr(h, lo, c)
        elif key == "atr_pct":
            with np.errstate(divide="ignore", invalid="ignore"):
                out[key] = 100.0 * self["atr_14"] / c
        elif key == "adx_14":
            out[key] = adx(h, lo, c)
        elif key.startswith("stoch"):
            out["stoch_k"], out["stoch_d"] = stochastic(h, lo, c)
        elif key == "obv":
            out[key] = obv(c, v)
        elif key == "obv_slope":
            out[key] = slope(self["obv"], OBV_SLOPE_BARS)
        elif key.startswith("donchian"):
            out["donchian_high_20"], out["donchian_low_20"] = donchian(h, lo)
        elif key == "volume_ratio":
            out[key] = volume_ratio(v)


def compute_indicators(df: pd.DataFrame) -> pd.DataFrame:
    """Every indicator of ``INDICATOR_KEYS`` as a column, same index as ``df`` (NaN during warm-up)."""
    arrays = IndicatorArrays(df)
    return pd.DataFrame({key: arrays[key] for key in INDICATOR_KEYS}, index=df.index)


def get_latest_indicators(df: pd.DataFrame) -> dict[str, float]:
    """The last row of ``compute_indicators`` as plain floats; keys whose value is NaN are left out."""
    if df.empty:
        raise DataError("no candles to compute indicators from")
    last = compute_indicators(df).iloc[-1]
    return {key: float(value) for key, value in last.items() if not math.isnan(float(value))}
