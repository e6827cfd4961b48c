"""Walk-forward optimisation: optimise on each train window, trade the chosen parameters on the test window after
it, stitch the out-of-sample equity into one curve.

Folds (``plan_folds``), in bars of the traded span, placed so that the last test window ends at the last bar:

- rolling: train windows of ``train`` bars sliding by ``test`` bars;
- anchored: every train window starts at the first traded bar and grows by ``test`` bars a fold;
- ``embargo`` bars between a train window and its test window belong to neither (labels that straddle the
  boundary, such as a position opened at the end of training, cannot leak);
- the test windows follow each other without a gap, so the stitched curve covers one unbroken span.

A train window's backtests read only candles before its end (its warm-up lies before its start); a test window's
backtest starts from a fresh account at its first bar, with the warm-up candles before it for the indicators and
the quick filter (the bot would have read them too) but no position or trade from before. The test windows'
equity curves are chained (each fold starts where the previous ended) into the out-of-sample curve, whose
metrics are ``oos_metrics``. A fold whose training finds no parameter set meeting the constraints stays out of
the market for its test window.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from src.backtesting.backtester import Backtester, json_safe
from src.backtesting.engine import EngineConfig, TradeArrays
from src.backtesting.performance import PerformanceAnalyzer
from src.exceptions import ConfigurationError
from src.research.batch import Metrics
from src.research.data import ResearchData
from src.research.search import (
    Evaluator,
    SearchOptions,
    Trial,
    evaluated,
    fixed_sets,
    run_search,
    warmup_bars,
)
from src.research.space import SearchSpace
from src.strategy.params import ParamValue
from src.strategy.registry import strategy_class

MIN_TRAIN_BARS = 10
MIN_TEST_BARS = 2
DECAY_METRICS = ("sharpe", "sortino", "cagr_pct")


@dataclass(frozen=True, slots=True)
class FoldPlan:
    number: int
    train: tuple[int, int]  # bars [first, stop) of the data
    test: tuple[int, int]


def plan_folds(
    first: int,
    stop: int,
    folds: int,
    *,
    train: int | None = None,
    test: int | None = None,
    embargo: int = 0,
    anchored: bool = False,
) -> list[FoldPlan]:
    """``folds`` folds over bars ``first..stop-1``. Without sizes: test windows of (span - embargo) / (folds + 3)
    bars and train windows three times as long; with one size given, the other fills the span."""
    if folds < 1:
        raise ConfigurationError(f"--walk-forward needs at least 1 fold, got {folds}")
    if embargo < 0:
        raise ConfigurationError(f"the embargo must be >= 0 bars, got {embargo}")
    span = stop - first
    if test is None and train is None:
        test = (span - embargo) // (folds + 3)
        train = span - embargo - folds * test
    elif test is None:
        assert train is not None
        test = (span - train - embargo) // folds
    elif train is None:
        train = span - embargo - folds * test
    assert train is not None
    assert test is not None
    needed = train + embargo + folds * test
    if train < MIN_TRAIN_BARS or test < MIN_TEST_BARS:
        least = MIN_TRAIN_BARS + embargo + folds * MIN_TEST_BARS
        raise ConfigurationError(
            f"--walk-forward {folds}: the data has {span:,} traded bars, too few for train >= {MIN_TRAIN_BARS} + "
            f"embargo {embargo} + {folds} x test >= {MIN_TEST_BARS} bars (at least {least:,})"
        )
    if needed > span:
        raise ConfigurationError(
            f"--walk-forward {folds}: train {train} + embargo {embargo} + {folds} x test {test} bars needs "
            f"{needed:,} bars; the data has {span:,} traded bars"
        )
    base = stop - needed
    plans = []
    for i in range(folds):
        train_lo = first if anchored else base + i * test
        train_hi = base + train + i * test
        test_lo = train_hi + embargo
        plans.append(FoldPlan(i, (train_lo, train_hi), (test_lo, test_lo + test)))
    return plans


@dataclass(slots=True)
class FoldResult:
    plan: FoldPlan
    best: Trial | None
    trials: int
    feasible: int
    test_metrics: dict[str, Any] | None  # the test window's backtest metrics (None: no parameters chosen)
    oos_value: float  # the (first) objective on the test window
    equity: np.ndarray  # the test window's equity at each close (a fresh account)
    index: pd.DatetimeIndex
    trades: TradeArrays | None
    in_market: np.ndarray
    close: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass(slots=True)
class WalkForwardResult:
    folds: list[FoldResult]
    anchored: bool
    embargo: int
    oos_metrics: dict[str, Any]
    oos_equity: pd.Series
    stability: dict[str, Any]
    decay: dict[str, Any]
    objective: str

    def to_dict(self, data: ResearchData, include_equity: bool = True) -> dict[str, Any]:
        index = data.index
        step = pd.Timedelta(seconds=_step(data))

        def window(span: tuple[int, int]) -> dict[str, Any]:
            return {
                "start": index[span[0]].isoformat(),
                "end": (index[span[1] - 1] + step).isoformat(),
                "bars": span[1] - span[0],
            }

        folds = [
            {
                "fold": f.plan.number,
                "train": window(f.plan.train),
                "test": window(f.plan.test),
                "params": f.best.params if f.best is not None else None,
                "train_metrics": f.best.to_dict()["metrics"] if f.best is not None else None,
                "is_objective": f.best.to_dict()["values"][0] if f.best is not None else None,
                "oos_objective": f.oos_value if math.isfinite(f.oos_value) else None,
                "trials": f.trials,
                "feasible_trials": f.feasible,
                "test_metrics": f.test_metrics,
            }
            for f in self.folds
        ]
        out: dict[str, Any] = {
            "mode": "anchored" if self.anchored else "rolling",
            "embargo_bars": self.embargo,
            "objective": self.objective,
            "folds": folds,
            "oos_metrics": self.oos_metrics,
            "parameter_stability": self.stability,
            "is_oos_decay": self.decay,
        }
        if include_equity:
            out["oos_equity"] = [[t.isoformat(), float(v)] for t, v in self.oos_equity.items()]
        return json_safe(out)


def _step(data: ResearchData) -> float:
    return float(np.median(np.diff(data.times_ns))) / 1e9


def _metric_floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k: (float("nan") if v is None else float(v))
        for k, v in metrics.items()
        if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    }


def walk_forward(
    data: ResearchData,
    space: SearchSpace,
    options: SearchOptions,
    plans: list[FoldPlan],
    config: EngineConfig,
    make_evaluator: Callable[[tuple[int, int]], Evaluator],
    on_fold: Callable[[FoldResult], None] | None = None,
) -> WalkForwardResult:
    """Optimise ``space`` with ``options`` on each fold's train window (``make_evaluator(window)`` evaluates
    parameter sets there), backtest the best set on its test window, stitch."""
    warmup = warmup_bars(data, config)
    capital = config.initial_capital
    objective = options.objectives[0]
    results: list[FoldResult] = []
    sets = fixed_sets(space, options)
    together: list[list[Metrics]] | None = None
    if sets is not None:  # grid / random: every fold's train window evaluated in one fan-out
        together = make_evaluator(plans[0].train).across([p.train for p in plans], sets)
    for number, plan in enumerate(plans):
        evaluator = make_evaluator(plan.train)
        if sets is not None and together is not None:
            found = evaluated(options, sets, together[number])
        else:
            found = run_search(space, evaluator, options)
        best = found.best
        part = data.window(plan.test[0], plan.test[1], warmup)
        test_index = part.index[part.start :]
        if best is None:
            flat = np.full(len(test_index), capital)
            fold = FoldResult(plan, None, len(found.trials), 0, None, math.nan, flat, test_index, None,
                              np.zeros(len(test_index), dtype=np.bool_))  # fmt: skip
        else:
            strategy = strategy_class(space.strategy, evaluator.strategy_path)(**best.params)
            run = Backtester(config).run(part.frame(), strategy, test_index[0])
            value = objective.value(_metric_floats(run.metrics))
            fold = FoldResult(plan, best, len(found.trials), len(found.feasible), json_safe(run.metrics), value,
                              run.run.equity_values, test_index, run.run.trade_arrays(), run.run.in_market)  # fmt: skip
        fold.close = part.close[part.start :]
        results.append(fold)
        if on_fold is not None:
            on_fold(fold)
    return _stitch(results, space, options, capital)


def _stitch(folds: list[FoldResult], space: SearchSpace, options: SearchOptions, capital: float) -> WalkForwardResult:
    """Chain the test windows' equity (each fold from where the previous ended) and measure the whole."""
    values, pnl, pnl_pct, fees, held = [], [], [], [], []
    running = capital
    for fold in folds:
        scale = running / capital
        values.append(fold.equity * scale)
        if fold.trades is not None:
            pnl.append(fold.trades.pnl * scale)
            fees.append(fold.trades.fees * scale)
            pnl_pct.append(fold.trades.pnl_pct)
            held.append(fold.trades.holding_hours)
        running = float(values[-1][-1])
    index = folds[0].index.append([f.index for f in folds[1:]]) if len(folds) > 1 else folds[0].index
    equity = pd.Series(np.concatenate(values), index=index, name="equity")
    empty = np.empty(0)
    trades = TradeArrays(*(np.concatenate(x) if x else empty for x in (pnl, pnl_pct, fees, held)))
    in_market = np.concatenate([f.in_market for f in folds])
    close = pd.Series(np.concatenate([f.close for f in folds]), index=index)
    metrics = PerformanceAnalyzer().analyze(equity, trades, in_market, close, capital)
    plans = [f.plan for f in folds]
    return WalkForwardResult(
        folds=folds,
        anchored=len(plans) > 1 and len({p.train[0] for p in plans}) == 1,
        embargo=plans[0].test[0] - plans[0].train[1],
        oos_metrics=json_safe(metrics),
        oos_equity=equity,
        stability=parameter_stability(folds, space),
        decay=is_oos_decay(folds, options),
        objective=options.objectives[0].label,
    )


def parameter_stability(folds: list[FoldResult], space: SearchSpace) -> dict[str, Any]:
    """Per searched parameter, the values chosen fold by fold; numbers: mean, standard deviation, coefficient
    of variation and the spread as a share of the searched range; choices: the most chosen value and its share."""
    chosen = [f.best.params for f in folds if f.best is not None]
    out: dict[str, Any] = {}
    for dim in space.dimensions:
        values: list[ParamValue] = [p[dim.name] for p in chosen]
        entry: dict[str, Any] = {"values": [f.best.params[dim.name] if f.best is not None else None for f in folds]}
        if values and dim.is_range and dim.kind is not bool:
            numbers = [float(v) for v in values]
            mean = statistics.fmean(numbers)
            std = statistics.pstdev(numbers)
            width = (dim.high or 0.0) - (dim.low or 0.0)
            entry |= {
                "mean": mean,
                "std": std,
                "cv": std / abs(mean) if mean else None,
                "range_share": (max(numbers) - min(numbers)) / width if width > 0 else 0.0,
            }
        elif values:
            value, count = Counter(values).most_common(1)[0]
            entry |= {"mode": value, "mode_share": count / len(values)}
        out[dim.name] = entry
    return out


def is_oos_decay(folds: list[FoldResult], options: SearchOptions) -> dict[str, Any]:
    """In-sample (the best train result) against out-of-sample (its test window), averaged over the folds that
    chose parameters: the objective and the annualised metrics; ``efficiency`` = OOS mean / IS mean (walk-forward
    efficiency; None unless the IS mean is positive)."""
    used = [f for f in folds if f.best is not None and f.test_metrics is not None]
    pairs: dict[str, list[tuple[float, float]]] = {options.objectives[0].label: []}
    for name in DECAY_METRICS:
        pairs[name] = []
    for f in used:
        assert f.best is not None
        assert f.test_metrics is not None
        pairs[options.objectives[0].label].append((f.best.values[0], f.oos_value))
        oos = _metric_floats(f.test_metrics)
        for name in DECAY_METRICS:
            pairs[name].append((float(f.best.metrics[name]), oos.get(name, math.nan)))
    out: dict[str, Any] = {}
    for name, values in pairs.items():
        both = [(a, b) for a, b in values if math.isfinite(a) and math.isfinite(b)]
        if not both:
            out[name] = {"is_mean": None, "oos_mean": None, "efficiency": None, "folds": 0}
            continue
        is_mean = statistics.fmean(a for a, _ in both)
        oos_mean = statistics.fmean(b for _, b in both)
        out[name] = {
            "is_mean": is_mean,
            "oos_mean": oos_mean,
            "efficiency": oos_mean / is_mean if is_mean > 0 else None,
            "folds": len(both),
        }
    return out
