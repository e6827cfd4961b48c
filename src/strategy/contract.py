"""The strategy contract: one object decides entries, signal exits and exit levels in every world.

A strategy turns a candle frame into per-bar conclusions in one vectorised pass. Everything for bar t is
a function of candles <= t only, and is acted on at bar t's close (the moment the bar is complete, when
the bot's trading cycle runs):

- ``entry[t]``: buy at the close of bar t when flat;
- ``exit[t]``: sell a held position at the close of bar t (the strategy's signal exit);
- ``atr[t]``: ATR(14) of bar t, from which ATR-based stops and targets are set for an entry at t.

Exit levels, the trailing stop and the time-out come from the strategy's ``exit_policy`` (its exit
parameters) and are evaluated by ``src.risk.exits``; sizing and every other rule come from the risk
settings. The backtester simulates all of it in one compiled loop; the live pipeline calls the same
object on recent candles and reads the last bar (``StrategySignals.latest``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from src.domain.exits import ExitPolicy
from src.exceptions import DataError
from src.strategy.params import EXIT_PARAMS, ParameterSpace, ParamValue, exit_policy_of
from src.trading.indicators import IndicatorArrays

# Candles a strategy's indicators need before their values settle (ADX and ATR are Wilder-smoothed; the
# Bollinger width percentile ranks over 100 bars). The backtest and the bot both load this many bars
# before the first bar they act on.
WARMUP_BARS = 250


@dataclass(slots=True)
class StrategySignals:
    index: pd.DatetimeIndex
    entry: np.ndarray
    exit: np.ndarray
    atr: np.ndarray
    details: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def empty(cls, index: pd.DatetimeIndex) -> StrategySignals:
        n = len(index)
        return cls(
            index=index,
            entry=np.zeros(n, dtype=np.bool_),
            exit=np.zeros(n, dtype=np.bool_),
            atr=np.full(n, np.nan),
        )

    def latest(self) -> dict[str, Any]:
        """The last bar's conclusions, for the live pipeline."""
        if len(self.index) == 0:
            raise DataError("no candles: the strategy has no last bar to report")
        last = len(self.index) - 1
        out: dict[str, Any] = {
            "timestamp": self.index[last].isoformat(),
            "buy": bool(self.entry[last]),
            "sell": bool(self.exit[last]),
            "atr_14": _json_float(self.atr[last]),
        }
        for name, values in self.details.items():
            value = values[last]
            out[name] = bool(value) if isinstance(value, np.bool_ | bool) else _json_float(value)
        return out


def _json_float(value: Any) -> float | None:
    number = float(value)
    return number if np.isfinite(number) else None  # JSON-safe


class Strategy(ABC):
    """A trading strategy. Subclasses set ``name``, declare ``space`` (their own parameters plus
    ``EXIT_PARAMS`` with their exit defaults) and implement ``generate_signals``; parameters arrive as keyword
    arguments and are validated against the space (``self.params`` holds every value)."""

    name: ClassVar[str] = "strategy"
    space: ClassVar[ParameterSpace] = EXIT_PARAMS
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, ParamValue] = self.space.resolve(params, self.name)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Strategy:
        return cls(**dict(params))

    def parameters(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def exit_policy(self) -> ExitPolicy:
        return exit_policy_of(self.params)

    @property
    def warmup_bars(self) -> int:
        return WARMUP_BARS

    @abstractmethod
    def generate_signals(self, df: pd.DataFrame) -> StrategySignals: ...

    @classmethod
    def batch_signals(cls, df: pd.DataFrame, param_sets: Sequence[Mapping[str, Any]]) -> Iterator[StrategySignals]:
        """The signals of many parameter sets over one candle frame, in order (the research batch evaluation).
        Each must equal ``cls.from_params(params).generate_signals(df)``; a strategy may override this to share
        the work that does not depend on the parameters (its ``generate_signals`` calling the same code)."""
        for params in param_sets:
            yield cls.from_params(params).generate_signals(df)

    def signals(
        self,
        df: pd.DataFrame,
        entry: np.ndarray,
        exit: np.ndarray | None = None,
        details: dict[str, np.ndarray] | None = None,
        indicators: IndicatorArrays | None = None,
    ) -> StrategySignals:
        """Package a strategy's arrays; the ATR is computed when the exit policy needs it."""
        n = len(df)
        atr = np.full(n, np.nan)
        if self.exit_policy.uses_atr:
            atr = (indicators if indicators is not None else IndicatorArrays(df))["atr_14"]
        return StrategySignals(
            index=df.index,
            entry=np.ascontiguousarray(entry, dtype=np.bool_),
            exit=np.zeros(n, dtype=np.bool_) if exit is None else np.ascontiguousarray(exit, dtype=np.bool_),
            atr=np.ascontiguousarray(atr, dtype=np.float64),
            details=details or {},
        )


def shifted(values: np.ndarray, bars: int = 1, fill: float = np.nan) -> np.ndarray:
    """values[t - bars] at t (``fill`` before that)."""
    out = np.empty_like(values, dtype=np.float64)
    out[:bars] = fill
    out[bars:] = values[:-bars] if bars else values
    return out


def require_ohlc(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    missing = [c for c in ("open", "high", "low", "close") if c not in df.columns]
    if missing:
        raise DataError(f"candles lack column(s) {', '.join(missing)}")
    o, h, lo, c = (np.ascontiguousarray(df[col].to_numpy(dtype=np.float64)) for col in ("open", "high", "low", "close"))
    return o, h, lo, c


def history_bars(quick_filter_lookback_days: int, bar_seconds: int) -> int:
    """Candles the bot reads each cycle, and the backtest loads before ``--start``: the quick filter's lookback
    plus ``WARMUP_BARS``, so the strategy's signals over the filter's window are settled in both worlds."""
    return -(-quick_filter_lookback_days * 86_400 // bar_seconds) + WARMUP_BARS
