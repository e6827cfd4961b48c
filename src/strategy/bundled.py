"""The bundled rule strategies: the spec's breakout with three gates, and Larry Williams' volatility breakout."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from src.strategy.contract import Strategy, StrategySignals, require_ohlc, shifted
from src.strategy.params import EXIT_PARAMS, Param, ParameterSpace
from src.trading.indicators import IndicatorArrays, donchian, sma


class VolatilityBreakoutStrategy(Strategy):
    """Larry Williams' volatility breakout, as an hourly bot can trade it.

    ``target[t] = open[t] + k * (high[t-1] - low[t-1])``. When bar t traded at or above its target
    (``high[t] >= target[t]``) the strategy buys at bar t's close; a held position is sold at the next
    bar's close (the signal exit on every bar). With ``trend_filter`` the entry also needs
    ``open[t] > mean(close[t-trend_window..t-1])``. Exits by default: the signal only.
    """

    name = "volatility_breakout"
    description = "buy when a bar breaks open + k x the previous bar's range; sell at the next bar's close"
    space = (
        ParameterSpace(
            (
                Param("k", float, 0.5, 0.05, 3.0, doc="share of the previous bar's range added to the open"),
                Param("trend_filter", bool, False, doc="also require the open above the recent mean close"),
                Param("trend_window", int, 5, 1, 200, doc="bars in the trend filter's mean"),
            )
        )
        + EXIT_PARAMS
    )

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self.k = float(self.params["k"])
        self.trend_filter = bool(self.params["trend_filter"])
        self.trend_window = int(self.params["trend_window"])

    def targets(self, df: pd.DataFrame) -> np.ndarray:
        o, h, lo, _ = require_ohlc(df)
        return o + self.k * (shifted(h) - shifted(lo))

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        return self._signals(df, _BreakoutInputs.of(df))

    @classmethod
    def batch_signals(cls, df: pd.DataFrame, param_sets: Sequence[Mapping[str, Any]]) -> Iterator[StrategySignals]:
        """As ``generate_signals`` for each set, with the candle arrays, the previous range and each trend
        window's filter computed once for all sets."""
        inputs = _BreakoutInputs.of(df)
        for params in param_sets:
            yield cls(**dict(params))._signals(df, inputs)

    def _signals(self, df: pd.DataFrame, inputs: _BreakoutInputs) -> StrategySignals:
        target = inputs.open + self.k * inputs.prev_range
        allowed = ~np.isnan(target)
        if self.trend_filter:
            allowed &= inputs.trend(self.trend_window)
        entry = allowed & (inputs.high >= target)
        return self.signals(df, entry, np.ones(len(df), dtype=np.bool_), {"target": target})


@dataclass(slots=True)
class _BreakoutInputs:
    """What the volatility breakout reads from the candles, whatever its parameters."""

    open: np.ndarray
    high: np.ndarray
    close: np.ndarray
    prev_range: np.ndarray  # high[t-1] - low[t-1]
    trends: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, df: pd.DataFrame) -> _BreakoutInputs:
        o, h, lo, c = require_ohlc(df)
        return cls(o, h, c, shifted(h) - shifted(lo))

    def trend(self, window: int) -> np.ndarray:
        """open[t] > mean(close[t-window..t-1]) (False while the mean is NaN)."""
        if window not in self.trends:
            self.trends[window] = self.open > shifted(sma(self.close, window))
        return self.trends[window]


class RuleBasedBreakoutStrategy(Strategy):
    """The spec's three gates plus a trend filter, decided at the close of bar t and bought there.

    - trend: close[t] > SMA(ma_period)[t];
    - squeeze: within the last ``squeeze_window`` bars before t, Bollinger width percentile <=
      ``squeeze_percentile`` (mode ``bb``), or ADX(14)[t-1] < ``adx_max`` (``adx``), or either (``bb_or_adx``);
    - breakout: close[t] > the highest high of the ``donchian_period`` bars before t (``donchian``), or
      close[t] > close[t-1] + ``range_k`` * (high[t-1] - low[t-1]) (``range``);
    - volume: volume[t] > ``volume_multiplier`` x its 20-bar mean, or OBV rose over the last 5 bars.
    Exits by default: stop 2 x ATR(14) below and target 3 x ATR(14) above the entry fill.
    """

    name = "rule_breakout"
    description = "trend + squeeze + breakout + volume gates; ATR stop and target"
    space = ParameterSpace(
        (
            Param("ma_period", int, 50, 2, 500, doc="trend filter: close above this SMA"),
            Param("squeeze_mode", str, "bb_or_adx", choices=("bb_or_adx", "bb", "adx")),
            Param("squeeze_percentile", float, 20.0, 0.0, 100.0, doc="Bollinger width percentile for a squeeze"),
            Param("squeeze_window", int, 5, 1, 100, doc="bars before t in which the squeeze may have been"),
            Param("adx_max", float, 25.0, 0.0, 100.0, doc="ADX below this counts as a squeeze"),
            Param("breakout_mode", str, "donchian", choices=("donchian", "range")),
            Param("donchian_period", int, 20, 2, 500),
            Param("range_k", float, 0.5, 0.0, 5.0),
            Param("volume_multiplier", float, 1.5, 0.0, 20.0),
            Param("use_obv", bool, True, doc="a rising OBV also passes the volume gate"),
        )
    ) + EXIT_PARAMS.with_defaults(stop_atr=2.0, target_atr=3.0)

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        p = self.params
        self.ma_period = int(p["ma_period"])
        self.squeeze_mode = str(p["squeeze_mode"])
        self.squeeze_percentile = float(p["squeeze_percentile"])
        self.squeeze_window = int(p["squeeze_window"])
        self.adx_max = float(p["adx_max"])
        self.breakout_mode = str(p["breakout_mode"])
        self.donchian_period = int(p["donchian_period"])
        self.range_k = float(p["range_k"])
        self.volume_multiplier = float(p["volume_multiplier"])
        self.use_obv = bool(p["use_obv"])

    def gates(self, df: pd.DataFrame, indicators: IndicatorArrays | None = None) -> dict[str, np.ndarray]:
        """Each gate as a boolean array, decided at each bar's close."""
        _, h, lo, c = require_ohlc(df)
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
        return self._signals(df, IndicatorArrays(df))

    @classmethod
    def batch_signals(cls, df: pd.DataFrame, param_sets: Sequence[Mapping[str, Any]]) -> Iterator[StrategySignals]:
        """As ``generate_signals`` for each set, with one set of indicators (each computed on first use) for all."""
        indicators = IndicatorArrays(df)
        for params in param_sets:
            yield cls(**dict(params))._signals(df, indicators)

    def _signals(self, df: pd.DataFrame, indicators: IndicatorArrays) -> StrategySignals:
        gates = self.gates(df, indicators)
        atr_now = indicators["atr_14"]
        entry = gates["trend"] & gates["squeeze"] & gates["breakout"] & gates["volume"] & ~np.isnan(atr_now)
        return self.signals(df, entry, None, {**gates}, indicators)
