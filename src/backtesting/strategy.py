"""The strategy interface and the two rule strategies.

A strategy turns a whole candle frame into per-bar order instructions in one vectorised pass. Every
instruction for bar t is a function of candles <= t only (the entry order of bar t may use bar t's
open, because it is placed at that open); the engine turns instructions into fills. The live pipeline
calls the same object on recent candles and reads the last bar (``StrategySignals.latest``).

Instruction arrays (length N, aligned with the frame):
- ``entry_stop[t]``: NaN = no entry order in bar t; 0 = market buy at the open of bar t;
  > 0 = buy-stop at that price during bar t (fills if high >= level, at max(level, open)).
- ``exit_at_open[t]``: sell any open position at the open of bar t.
- ``stop_distance[t]`` / ``target_distance[t]``: for a position opened in bar t, the stop-loss sits
  that far below and the take-profit that far above the entry's market price (NaN = none).
- ``buy_signal[t]`` / ``sell_signal[t]``: what the strategy concluded at the close of bar t
  (what the live pipeline acts on at the next bar).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from src.exceptions import ConfigurationError, DataError
from src.trading.indicators import IndicatorArrays, donchian, sma


@dataclass(slots=True)
class StrategySignals:
    index: pd.DatetimeIndex
    entry_stop: np.ndarray
    exit_at_open: np.ndarray
    stop_distance: np.ndarray
    target_distance: np.ndarray
    buy_signal: np.ndarray
    sell_signal: np.ndarray
    details: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, index: pd.DatetimeIndex) -> StrategySignals:
        n = len(index)
        return cls(
            index=index,
            entry_stop=np.full(n, np.nan),
            exit_at_open=np.zeros(n, dtype=np.bool_),
            stop_distance=np.full(n, np.nan),
            target_distance=np.full(n, np.nan),
            buy_signal=np.zeros(n, dtype=np.bool_),
            sell_signal=np.zeros(n, dtype=np.bool_),
        )

    def latest(self) -> dict[str, Any]:
        """The last bar's conclusions, for the live pipeline."""
        if len(self.index) == 0:
            raise DataError("no candles: the strategy has no last bar to report")
        last = len(self.index) - 1
        out: dict[str, Any] = {
            "timestamp": self.index[last].isoformat(),
            "buy": bool(self.buy_signal[last]),
            "sell": bool(self.sell_signal[last]),
        }
        for name, values in self.details.items():
            value = values[last]
            if isinstance(value, np.bool_ | bool):
                out[name] = bool(value)
            else:
                out[name] = float(value) if np.isfinite(value) else None  # JSON-safe
        return out


class Strategy(ABC):
    """A trading strategy: ``generate_signals`` runs once over the whole frame, vectorised, without look-ahead."""

    name: str = "strategy"

    @abstractmethod
    def generate_signals(self, df: pd.DataFrame) -> StrategySignals: ...

    def parameters(self) -> dict[str, Any]:
        return {}


def shifted(values: np.ndarray, bars: int = 1, fill: float = np.nan) -> np.ndarray:
    """values[t - bars] at t (``fill`` before that)."""
    out = np.empty_like(values, dtype=np.float64)
    out[:bars] = fill
    out[bars:] = values[:-bars] if bars else values
    return out


def _require_ohlc(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}")
    return tuple(np.ascontiguousarray(df[c].to_numpy(dtype=np.float64)) for c in ("open", "high", "low", "close"))  # type: ignore[return-value]


class VolatilityBreakoutStrategy(Strategy):
    """Larry Williams' volatility breakout, the classic Upbit strategy, exactly as specified.

    ``target[t] = open[t] + k * (high[t-1] - low[t-1])``. At the open of bar t any position is sold;
    then, if ``high[t] >= target[t]``, buy all-in at ``max(target[t], open[t])``. With ``trend_filter``
    the entry also needs ``open[t] > mean(close[t-5..t-1])``. (The engine never opens on the last bar.)
    """

    name = "volatility_breakout"

    def __init__(self, k: float = 0.5, trend_filter: bool = False, trend_window: int = 5) -> None:
        if not 0 < k <= 3:
            raise ConfigurationError(f"volatility breakout k must be in (0, 3], got {k}")
        if trend_window < 1:
            raise ConfigurationError(f"trend_window must be >= 1, got {trend_window}")
        self.k = k
        self.trend_filter = trend_filter
        self.trend_window = trend_window

    def parameters(self) -> dict[str, Any]:
        return {"k": self.k, "trend_filter": self.trend_filter, "trend_window": self.trend_window}

    def targets(self, df: pd.DataFrame) -> np.ndarray:
        o, h, lo, _ = _require_ohlc(df)
        return o + self.k * (shifted(h) - shifted(lo))

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        o, h, _, c = _require_ohlc(df)
        target = self.targets(df)
        allowed = ~np.isnan(target)
        if self.trend_filter:
            window = self.trend_window
            trend_mean = shifted(sma(c, window))
            allowed &= o > trend_mean  # False while the mean is NaN
        signals = StrategySignals.empty(df.index)
        signals.entry_stop = np.where(allowed, target, np.nan)
        signals.exit_at_open[:] = True
        signals.sell_signal[:] = True  # a position is always sold at the next bar's open
        signals.buy_signal = allowed & (h >= target)
        signals.details = {"target": target}
        return signals


SqueezeMode = Literal["bb_or_adx", "bb", "adx"]
BreakoutMode = Literal["donchian", "range"]


class RuleBasedBreakoutStrategy(Strategy):
    """The spec's three gates plus a trend filter; decided at the close of bar t, bought at the open of t+1.

    - trend: close[t] > SMA(ma_period)[t];
    - squeeze: within the last ``squeeze_window`` bars before t, Bollinger width percentile <=
      ``squeeze_percentile`` (mode ``bb``), or ADX(14)[t-1] < ``adx_max`` (``adx``), or either (``bb_or_adx``);
    - breakout: close[t] > the highest high of the ``donchian_period`` bars before t (``donchian``), or
      close[t] > close[t-1] + ``range_k`` * (high[t-1] - low[t-1]) (``range``);
    - volume: volume[t] > ``volume_multiplier`` x its 20-bar mean, or OBV rose over the last 5 bars.
    Exits: stop ``atr_stop`` x ATR(14)[t] below and target ``atr_target`` x ATR(14)[t] above the entry,
    evaluated intrabar by the engine.
    """

    name = "rule_breakout"

    def __init__(
        self,
        ma_period: int = 50,
        squeeze_mode: SqueezeMode = "bb_or_adx",
        squeeze_percentile: float = 20.0,
        squeeze_window: int = 5,
        adx_max: float = 25.0,
        breakout_mode: BreakoutMode = "donchian",
        donchian_period: int = 20,
        range_k: float = 0.5,
        volume_multiplier: float = 1.5,
        use_obv: bool = True,
        atr_stop: float = 2.0,
        atr_target: float = 3.0,
    ) -> None:
        if squeeze_mode not in ("bb_or_adx", "bb", "adx"):
            raise ConfigurationError(f"squeeze_mode must be bb_or_adx, bb or adx, got {squeeze_mode!r}")
        if breakout_mode not in ("donchian", "range"):
            raise ConfigurationError(f"breakout_mode must be donchian or range, got {breakout_mode!r}")
        for label, value in (("ma_period", ma_period), ("squeeze_window", squeeze_window)):
            if value < 1:
                raise ConfigurationError(f"{label} must be >= 1, got {value}")
        if donchian_period < 2:
            raise ConfigurationError(f"donchian_period must be >= 2, got {donchian_period}")
        if atr_stop <= 0 or atr_target <= 0:
            raise ConfigurationError("atr_stop and atr_target must be > 0")
        self.ma_period = ma_period
        self.squeeze_mode = squeeze_mode
        self.squeeze_percentile = squeeze_percentile
        self.squeeze_window = squeeze_window
        self.adx_max = adx_max
        self.breakout_mode = breakout_mode
        self.donchian_period = donchian_period
        self.range_k = range_k
        self.volume_multiplier = volume_multiplier
        self.use_obv = use_obv
        self.atr_stop = atr_stop
        self.atr_target = atr_target

    def parameters(self) -> dict[str, Any]:
        return {
            "ma_period": self.ma_period,
            "squeeze_mode": self.squeeze_mode,
            "squeeze_percentile": self.squeeze_percentile,
            "squeeze_window": self.squeeze_window,
            "adx_max": self.adx_max,
            "breakout_mode": self.breakout_mode,
            "donchian_period": self.donchian_period,
            "range_k": self.range_k,
            "volume_multiplier": self.volume_multiplier,
            "use_obv": self.use_obv,
            "atr_stop": self.atr_stop,
            "atr_target": self.atr_target,
        }

    def gates(self, df: pd.DataFrame, indicators: IndicatorArrays | None = None) -> dict[str, np.ndarray]:
        """Each gate as a boolean array, decided at each bar's close."""
        _, h, lo, c = _require_ohlc(df)
        ind = IndicatorArrays(df) if indicators is None else indicators
        # Comparisons with NaN (warm-up) are False, so no gate opens before its inputs exist.
        trend = c > sma(c, self.ma_period)

        width_pct = ind["bb_width_percentile"]
        recent_min = np.full(len(c), np.nan)
        for bars_back in range(1, self.squeeze_window + 1):  # NaN-ignoring min over the bars before t
            recent_min = np.fmin(recent_min, shifted(width_pct, bars_back))
        bb_squeeze = recent_min <= self.squeeze_percentile
        adx_squeeze = shifted(ind["adx_14"]) < self.adx_max
        squeeze = {"bb": bb_squeeze, "adx": adx_squeeze, "bb_or_adx": bb_squeeze | adx_squeeze}[self.squeeze_mode]

        if self.breakout_mode == "donchian":
            level = shifted(donchian(h, lo, self.donchian_period)[0])
        else:
            level = shifted(c) + self.range_k * (shifted(h) - shifted(lo))
        breakout = c > level

        volume_ok = ind["volume_ratio"] > self.volume_multiplier
        if self.use_obv:
            volume_ok |= ind["obv_slope"] > 0
        return {"trend": trend, "squeeze": squeeze, "breakout": breakout, "volume": volume_ok}

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        indicators = IndicatorArrays(df)
        gates = self.gates(df, indicators)
        atr_now = indicators["atr_14"]
        buy = gates["trend"] & gates["squeeze"] & gates["breakout"] & gates["volume"] & ~np.isnan(atr_now)
        signals = StrategySignals.empty(df.index)
        signals.buy_signal = buy
        signals.entry_stop = np.where(shifted(buy.astype(np.float64), fill=0.0) > 0, 0.0, np.nan)
        signals.stop_distance = shifted(self.atr_stop * atr_now)
        signals.target_distance = shifted(self.atr_target * atr_now)
        signals.details = {**gates, "atr_14": atr_now}
        return signals
