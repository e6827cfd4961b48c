"""The strategy contract and the strategies that implement it (see ``contract.py``)."""

from src.strategy.contract import WARMUP_BARS, Strategy, StrategySignals, history_bars, require_ohlc, shifted
from src.strategy.params import EXIT_PARAMS, Param, ParameterSpace

__all__ = [
    "EXIT_PARAMS",
    "WARMUP_BARS",
    "Param",
    "ParameterSpace",
    "Strategy",
    "StrategySignals",
    "history_bars",
    "require_ohlc",
    "shifted",
]
