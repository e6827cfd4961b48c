"""Parameter search over a strategy's declared space: grid, random, and Optuna (TPE; NSGA-II for several
objectives) through its ask/tell interface. Parameter sets are always evaluated in batches
(``src.research.batch.evaluate_batch``: many sets per compiled call), never one backtest per trial.

The evaluation goes through an executor of ``src.research.distributed`` (``map_batches(evaluate_job, batches,
data=...)``): in this process by default, on Ray with ``--ray`` / ``--ray-address``. ``evaluate_job`` is the
function the executors run on each ``Batch``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from src.backtesting.engine import EngineConfig
from src.exceptions import ConfigurationError
from src.research.batch import Metrics, evaluate_batch, median_step
from src.research.data import ResearchData
from src.research.distributed import Batch, Executor, InProcessExecutor, Progress
from src.research.objectives import Constraints, Objective
from src.research.space import GRID_POINTS, SearchSpace
from src.strategy.contract import history_bars
from src.strategy.params import ParamValue

DEFAULT_BATCH = 256  # parameter sets per batch (per compiled call; per task with Ray)
OPTUNA_BATCH = 32  # sets asked from Optuna before they are told (one evaluation batch)
MAX_GRID = 1_000_000


NO_CONSTRAINTS = Constraints()


class Method(StrEnum):
    GRID = "grid"
    RANDOM = "random"
    TPE = "tpe"
    NSGA2 = "nsga2"


# --- evaluation through an executor ------------------------------------------------------------------------


def warmup_bars(data: ResearchData, config: EngineConfig) -> int:
    """The bars before a window its backtest reads, as ``backtest.py --start`` loads them (``history_bars``)."""
    return history_bars(config.quick_filter_lookback_days, max(1, int(median_step(data.times_ns))))


def evaluate_job(data: ResearchData, batch: Any) -> list[Metrics]:
    """The executors' evaluator: ``batch.params`` on ``data`` (its ``batch.window`` when given)."""
    config = batch.config if batch.config is not None else EngineConfig()
    part = data
    if batch.window is not None:
        first, stop = batch.window
        part = data.window(first, stop, warmup_bars(data, config))
    return evaluate_batch(part, batch.strategy, list(batch.params), config)


@dataclass(slots=True)
class Evaluator:
    """Evaluates lists of parameter sets of ``strategy`` on ``data`` (bars ``window``) in batches."""

    data: ResearchData
    strategy: str
    config: EngineConfig
    window: tuple[int, int] | None = None
    executor: Executor = field(default_factory=InProcessExecutor)
    batch_size: int = DEFAULT_BATCH
    strategy_path: Path | None = None
    on_sets: Callable[[int], None] | None = None  # told how many sets each finished batch held
    name: str = "data"
    map_options: dict[str, Any] = field(default_factory=dict)  # more for map_batches (Ray's: a result cache)
    evaluated: int = 0

    def __call__(self, param_sets: Sequence[Mapping[str, Any]]) -> list[Metrics]:
        return self.across([self.window], param_sets)[0]

    def across(
        self, windows: Sequence[tuple[int, int] | None], param_sets: Sequence[Mapping[str, Any]]
    ) -> list[list[Metrics]]:
        """The same sets on each of ``windows`` (a walk-forward's train windows), in one fan-out: every window's
        batches go to the executor together."""
        if not param_sets:
            return [[] for _ in windows]
        if self.strategy_path is not None:  # user strategies are loaded from a folder: evaluate here
            out = []
            for window in windows:
                part = self.data if window is None else self.data.window(*window, self._warmup())
                out.append(evaluate_batch(part, self.strategy, list(param_sets), self.config,
                                          strategy_path=self.strategy_path))  # fmt: skip
                self._count(len(param_sets))
            return out
        workers = max(1, int(getattr(self.executor, "workers", 1)))  # Ray: spread even a small ask over them all
        size = min(self.batch_size, -(-len(param_sets) * len(windows) // workers))
        batches = [
            Batch(self.name, self.strategy, tuple(param_sets[i : i + size]), window, self.config)
            for window in windows
            for i in range(0, len(param_sets), size)
        ]

        told = [0]

        def progress(update: Progress) -> None:
            sets = update.param_sets_done - told[0]
            told[0] += sets
            if self.on_sets is not None:
                self.on_sets(sets)

        results = self.executor.map_batches(
            evaluate_job, batches, data={self.name: self.data}, progress=progress, **self.map_options
        )
        self.evaluated += len(param_sets) * len(windows)
        per_window = -(-len(param_sets) // size)
        return [
            [metrics for chunk in results[w * per_window : (w + 1) * per_window] for metrics in chunk]
            for w in range(len(windows))
        ]

    def _warmup(self) -> int:
        return warmup_bars(self.data, self.config)

    def _count(self, sets: int) -> None:
        self.evaluated += sets
        if self.on_sets is not None:
            self.on_sets(sets)


# --- trials and results --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trial:
    number: int
    params: dict[str, ParamValue]
    metrics: Metrics
    values: tuple[float, ...]  # one per objective
    feasible: bool  # constraints met and every objective finite

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "params": self.params,
            "values": [_json_float(v) for v in self.values],
            "feasible": self.feasible,
            "metrics": {k: v if isinstance(v, int) else _json_float(v) for k, v in self.metrics.items()},
        }


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(slots=True)
class SearchResult:
    method: Method
    objectives: list[Objective]
    constraints: Constraints
    trials: list[Trial]

    @property
    def feasible(self) -> list[Trial]:
        return [t for t in self.trials if t.feasible]

    @property
    def pareto(self) -> list[Trial]:
        """The feasible trials no other feasible trial dominates (all of them better or equal, one better)."""
        pool = self.feasible
        return [
            t
            for t in pool
            if not any(
                all(a >= b for a, b in zip(o.values, t.values, strict=True)) and o.values != t.values for o in pool
            )
        ]

    @property
    def best(self) -> Trial | None:
        """The feasible trial with the highest (first) objective; the first such trial on a tie."""
        pool = self.pareto if len(self.objectives) > 1 else self.feasible
        return max(pool, key=lambda t: t.values[0], default=None)

    def to_dict(self, top: int = 20) -> dict[str, Any]:
        best = self.best
        ranked = sorted(self.feasible, key=lambda t: t.values[0], reverse=True)
        out: dict[str, Any] = {
            "method": self.method.value,
            "objectives": [o.label for o in self.objectives],
            "constraints": self.constraints.describe(),
            "trials": len(self.trials),
            "feasible_trials": len(ranked),
            "best_params": best.params if best is not None else None,
            "best_metrics": best.to_dict()["metrics"] if best is not None else None,
            "best_values": best.to_dict()["values"] if best is not None else None,
            "top": [t.to_dict() for t in ranked[:top]],
        }
        if len(self.objectives) > 1:
            out["pareto"] = [t.to_dict() for t in self.pareto]
        return out


def _trial(number: int, params: dict[str, ParamValue], metrics: Metrics, objectives: Sequence[Objective],
           constraints: Constraints) -> Trial:  # fmt: skip
    values = tuple(o.value(metrics) for o in objectives)
    feasible = constraints.satisfied(metrics) and all(math.isfinite(v) for v in values)
    return Trial(number, params, metrics, values, feasible)


# --- the search ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchOptions:
    method: Method
    objectives: tuple[Objective, ...]
    constraints: Constraints = NO_CONSTRAINTS
    trials: int | None = None  # random / tpe / nsga2: how many; grid: an upper bound (None: any size)
    seed: int = 0
    grid_points: int = GRID_POINTS
    optuna_batch: int = OPTUNA_BATCH

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ConfigurationError("a search needs an objective")
        if len(self.objectives) > 1 and self.method is not Method.NSGA2:
            raise ConfigurationError(
                f"{len(self.objectives)} objectives need --method nsga2 (or one weighted mix: 0.5*sharpe+0.5*return)"
            )
        if self.trials is not None and self.trials < 1:
            raise ConfigurationError(f"--trials must be at least 1, got {self.trials}")
        if self.method is not Method.GRID and self.trials is None:
            raise ConfigurationError(f"--method {self.method.value} needs --trials N")

    def planned(self, space: SearchSpace) -> int:
        """How many parameter sets the search evaluates."""
        if self.method is Method.GRID:
            return space.grid_size(self.grid_points)
        assert self.trials is not None
        return self.trials


def run_search(space: SearchSpace, evaluate: Callable[[Sequence[Mapping[str, Any]]], list[Metrics]],
               options: SearchOptions) -> SearchResult:  # fmt: skip
    """Search ``space`` with ``options``; ``evaluate`` maps parameter sets to their metrics (an ``Evaluator``)."""
    sets = fixed_sets(space, options)
    if sets is not None:
        return evaluated(options, sets, evaluate(sets))
    return _optuna(space, evaluate, options)


def fixed_sets(space: SearchSpace, options: SearchOptions) -> list[dict[str, ParamValue]] | None:
    """The sets a grid or random search evaluates, known in advance (None: Optuna asks as it learns)."""
    if options.method is Method.GRID:
        size = space.grid_size(options.grid_points)
        if size > MAX_GRID:
            raise ConfigurationError(f"the grid has {size:,} points (more than {MAX_GRID:,}): narrow --space")
        if options.trials is not None and size > options.trials:
            raise ConfigurationError(
                f"the grid has {size:,} points, more than --trials {options.trials}: narrow --space or raise --trials"
            )
        return list(space.grid(options.grid_points))
    if options.method is Method.RANDOM:
        assert options.trials is not None
        return space.sample(options.trials, options.seed)
    return None


def evaluated(options: SearchOptions, sets: list[dict[str, ParamValue]], metrics: list[Metrics]) -> SearchResult:
    pairs = enumerate(zip(sets, metrics, strict=True))
    trials = [_trial(i, p, m, options.objectives, options.constraints) for i, (p, m) in pairs]
    return SearchResult(options.method, list(options.objectives), options.constraints, trials)


def _optuna(space: SearchSpace, evaluate: Callable[[Sequence[Mapping[str, Any]]], list[Metrics]],
            options: SearchOptions) -> SearchResult:  # fmt: skip
    try:
        import optuna
    except ModuleNotFoundError:
        raise ConfigurationError(
            f"--method {options.method.value} needs Optuna: pip install -r requirements-research.txt"
        ) from None
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    sampler: Any
    if options.method is Method.TPE:
        sampler = optuna.samplers.TPESampler(seed=options.seed, constant_liar=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
    else:
        sampler = optuna.samplers.NSGAIISampler(seed=options.seed, population_size=options.optuna_batch)
        study = optuna.create_study(directions=["maximize"] * len(options.objectives), sampler=sampler)
    assert options.trials is not None
    trials: list[Trial] = []
    while len(trials) < options.trials:
        asked = [study.ask() for _ in range(min(options.optuna_batch, options.trials - len(trials)))]
        sets = [space.suggest(t) for t in asked]
        for optuna_trial, params, metrics in zip(asked, sets, evaluate(sets), strict=True):
            trial = _trial(len(trials), params, metrics, options.objectives, options.constraints)
            trials.append(trial)
            for name, violation in options.constraints.named_violations(metrics).items():
                optuna_trial.set_constraint(name, violation)  # the samplers prefer sets that meet them
            if all(math.isfinite(v) for v in trial.values):
                study.tell(optuna_trial, list(trial.values) if len(trial.values) > 1 else trial.values[0])
            else:  # an undefined objective (no trades): Optuna learns nothing from it
                study.tell(optuna_trial, state=TrialState.FAIL)
    return SearchResult(options.method, list(options.objectives), options.constraints, trials)
