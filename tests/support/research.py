"""Evaluators for the distributed research tests: module-level, so Ray workers import them by name.

``record_evaluations`` (an environment variable naming a file) makes every evaluation append one line, the
batch's tag and the process id, so a test counts what was evaluated across processes and runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.backtesting.backtester import Backtester
from src.research.distributed import Batch, BatchResult
from src.strategy.registry import build_strategy

LOG_ENV = "RESEARCH_TEST_EVALUATION_LOG"
DELAY_ENV = "RESEARCH_TEST_BATCH_DELAY"


def _record(batch: Batch) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{batch.tag}\t{os.getpid()}\n")
            handle.flush()
            os.fsync(handle.fileno())
    delay = float(os.environ.get(DELAY_ENV) or 0)
    if delay:
        time.sleep(delay)


@dataclass(frozen=True, slots=True)
class StandInData:
    """STAND-IN for ``src.research.data.ResearchData`` until S15-SEARCH's lands: the candle arrays."""

    timestamps: np.ndarray  # int64 ns
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @classmethod
    def of(cls, df: pd.DataFrame) -> StandInData:
        cols = {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close", "volume")}
        return cls(df.index.as_unit("ns").asi8.copy(), **cols)

    def frame(self, window: tuple[int, int] | None = None) -> pd.DataFrame:
        start, stop = window or (0, len(self.close))
        index = pd.DatetimeIndex(pd.to_datetime(self.timestamps[start:stop], utc=True), name="timestamp")
        cols = {c: getattr(self, c)[start:stop] for c in ("open", "high", "low", "close", "volume")}
        return pd.DataFrame(cols, index=index)


def standin_evaluate_batch(
    data: StandInData, strategy_name: str, param_sets: list[dict[str, Any]], config: Any, window: Any = None
) -> list[dict[str, float]]:
    """STAND-IN for ``evaluate_batch``: the engine's single backtest per parameter set."""
    df = data.frame(window)
    out = []
    for params in param_sets:
        strategy = build_strategy(strategy_name, params, None)
        metrics = Backtester(config).run(df, strategy).metrics
        out.append({k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and v is not None})
    return out


def evaluate(data: Any, batch: Batch) -> BatchResult:
    """The research evaluation of a batch on its window."""
    _record(batch)
    return standin_evaluate_batch(data, batch.strategy, [dict(p) for p in batch.params], batch.config, batch.window)


def evaluations(path: str | os.PathLike[str]) -> list[str]:
    """The tags evaluated so far, in order (one per evaluation)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return [line.split("\t")[0] for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def fails(data: Any, batch: Batch) -> BatchResult:
    raise ValueError(f"bad batch {batch.tag}")
