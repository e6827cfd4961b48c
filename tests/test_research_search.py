"""Parameter search: the space from the strategy's declaration and --space, objectives and constraints, and the
grid, random, TPE and NSGA-II searches over batches."""

from __future__ import annotations

import math

import pytest

from src.backtesting.engine import EngineConfig
from src.exceptions import ConfigurationError
from src.research.batch import evaluate_batch
from src.research.data import ResearchData
from src.research.objectives import Constraints, parse_objectives
from src.research.search import Evaluator, Method, SearchOptions, run_search
from src.research.space import search_space
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from tests.support.research_candles import walk_candles

RESEARCH = EngineConfig(quick_filter=False, slippage_pct=0.05).without_risk_rules()
VB = VolatilityBreakoutStrategy


@pytest.fixture(scope="module")
def data() -> ResearchData:
    df = walk_candles(1500, seed=3)
    return ResearchData.of(df, start=df.index[300])


def _evaluator(data: ResearchData) -> Evaluator:
    return Evaluator(data, "volatility_breakout", RESEARCH, batch_size=16)


def test_space_from_overrides_steps_ranges_and_lists() -> None:
    # Given --space overrides of each form
    space = search_space(
        "volatility_breakout",
        VB.space,
        ["k=0.2:1.0:0.2", "trend_filter=true,false", "trend_window=3:9", "stop_loss_pct=2"],
        {"max_hold_hours": 5},
    )
    # When the grid is expanded
    grid = list(space.grid())
    # Then steps are inclusive, ranges without a step take 5 points, lists keep their order, the rest is fixed
    assert space.names == ["k", "trend_filter", "trend_window", "stop_loss_pct"]
    assert sorted({p["k"] for p in grid}) == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert sorted({p["trend_window"] for p in grid}) == [3, 4, 6, 8, 9]
    assert {p["trend_filter"] for p in grid} == {True, False}
    assert len(grid) == 5 * 2 * 5 * 1 == space.grid_size()
    assert all(p["max_hold_hours"] == 5 and p["stop_loss_pct"] == 2.0 for p in grid)


def test_space_defaults_to_the_strategys_own_declared_parameters() -> None:
    # Given no --space
    # When the space is built
    space = search_space("rule_breakout", RuleBasedBreakoutStrategy.space)
    # Then it is the strategy's own parameters over their declared ranges (exit parameters stay at defaults)
    assert "stop_atr" not in space.names
    assert "ma_period" in space.names
    assert space.base["stop_atr"] == 2.0
    squeeze = next(d for d in space.dimensions if d.name == "squeeze_mode")
    assert squeeze.choices == ("bb_or_adx", "bb", "adx")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope=1:2", "has no parameter nope"),
        ("k=", "empty space"),
        ("k=1.0:0.5", "lo 1.0 is above hi 0.5"),
        ("k=0.5:1:0", "step must be > 0"),
        ("k=0.5:9", "k must be in 0.05..3"),
        ("trend_filter=0:1", "a range needs a number parameter"),
        ("trend_window=1.5:4", "trend_window must be a whole number"),
        ("trend_window=2:8:1.5", "integer parameter needs whole"),
        ("k", "expected name=lo:hi:step"),
    ],
)
def test_bad_space_specifications_are_one_clear_error(spec: str, message: str) -> None:
    # Given a bad --space specification / When parsed / Then one ConfigurationError says what is wrong
    with pytest.raises(ConfigurationError, match=message):
        search_space("volatility_breakout", VB.space, [spec])


def test_objectives_parse_mixes_and_refuse_unknown_names() -> None:
    # Given objective texts
    mix = parse_objectives("0.7*sharpe+0.3*calmar")[0]
    several = parse_objectives("sharpe,return")
    # Then a mix is a weighted sum, several are several, and a bad one is one error
    assert mix.value({"sharpe": 2.0, "calmar": 1.0}) == pytest.approx(1.7)
    assert [o.label for o in several] == ["sharpe", "return"]
    for bad in ("", "sharp", "x*sharpe", "sharpe,", "sharpe,sharpe"):
        with pytest.raises(ConfigurationError, match="--objective"):
            parse_objectives(bad)


def test_grid_search_finds_the_best_feasible_set_of_the_grid(data: ResearchData) -> None:
    # Given a grid over k and a stop, the Sharpe objective and a minimum of 20 trades
    space = search_space("volatility_breakout", VB.space, ["k=0.3:1.5:0.3", "stop_loss_pct=0,1,3"])
    options = SearchOptions(Method.GRID, tuple(parse_objectives("sharpe")), Constraints(min_trades=20))
    # When searched
    result = run_search(space, _evaluator(data), options)
    # Then every grid point was evaluated and the best is the feasible maximum of direct evaluations
    sets = list(space.grid())
    direct = evaluate_batch(data, "volatility_breakout", sets, RESEARCH)
    feasible = [(m["sharpe"], i) for i, m in enumerate(direct) if m["trades"] >= 20 and math.isfinite(m["sharpe"])]
    assert len(result.trials) == len(sets) == 15
    assert result.best is not None
    top = max(feasible)[0]
    first_best = min(i for value, i in feasible if value == top)  # a tie goes to the first grid point
    assert result.best.params == sets[first_best]
    assert result.best.metrics == direct[first_best]
    assert all(t.feasible == (t.metrics["trades"] >= 20) for t in result.trials)


def test_constraints_exclude_sets_and_a_grid_larger_than_trials_is_refused(data: ResearchData) -> None:
    # Given a drawdown limit no set can meet
    space = search_space("volatility_breakout", VB.space, ["k=0.3:0.9:0.3"])
    strict = SearchOptions(Method.GRID, tuple(parse_objectives("return")), Constraints(max_drawdown_pct=0.0))
    # When searched / Then nothing is feasible and there is no best
    result = run_search(space, _evaluator(data), strict)
    assert result.best is None
    assert result.to_dict()["best_params"] is None
    # And a grid with more points than --trials is one clear error
    with pytest.raises(ConfigurationError, match="the grid has 3 points, more than --trials 2"):
        run_search(space, _evaluator(data), SearchOptions(Method.GRID, tuple(parse_objectives("return")), trials=2))


def test_random_search_is_reproducible_with_a_seed(data: ResearchData) -> None:
    # Given a random search of 12 trials with a seed
    space = search_space("volatility_breakout", VB.space, ["k=0.1:2.0", "trend_filter=true,false"])
    options = SearchOptions(Method.RANDOM, tuple(parse_objectives("sortino")), trials=12, seed=5)
    # When run twice
    first, second = (run_search(space, _evaluator(data), options) for _ in range(2))
    # Then the same sets in the same order, inside the space
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert all(0.1 <= t.params["k"] <= 2.0 for t in first.trials)
    assert len(first.trials) == 12


def test_tpe_asks_in_batches_and_reports_the_best_trial(data: ResearchData) -> None:
    # Given a TPE search of 40 trials asked 16 at a time
    calls: list[int] = []
    evaluator = _evaluator(data)

    def evaluate(sets):  # type: ignore[no-untyped-def]
        calls.append(len(sets))
        return evaluator(sets)

    space = search_space("volatility_breakout", VB.space, ["k=0.1:2.0:0.05", "max_hold_hours=0:6:1"])
    options = SearchOptions(Method.TPE, tuple(parse_objectives("calmar")), Constraints(min_trades=5), 40, seed=1,
                            optuna_batch=16)  # fmt: skip
    # When searched
    result = run_search(space, evaluate, options)
    # Then three batched evaluations (16, 16, 8), and the best is the top feasible trial
    assert calls == [16, 16, 8]
    feasible = [t for t in result.trials if t.feasible]
    assert result.best is not None
    assert result.best.values[0] == max(t.values[0] for t in feasible)
    assert result.to_dict()["best_params"] == result.best.params


def test_nsga2_returns_a_pareto_front_of_several_objectives(data: ResearchData) -> None:
    # Given two objectives
    space = search_space("volatility_breakout", VB.space, ["k=0.1:2.0:0.05", "stop_loss_pct=0:5:0.5"])
    options = SearchOptions(Method.NSGA2, tuple(parse_objectives("return,drawdown")), trials=48, seed=2,
                            optuna_batch=16)  # fmt: skip
    # When searched with NSGA-II
    result = run_search(space, _evaluator(data), options)
    front = result.pareto
    # Then no trial of the front is dominated by a feasible trial, and the report lists the front
    assert front
    for t in front:
        assert not any(
            all(a >= b for a, b in zip(o.values, t.values, strict=True)) and o.values != t.values
            for o in result.feasible
        )
    assert len(result.to_dict()["pareto"]) == len(front)
    # And several objectives without NSGA-II are refused
    with pytest.raises(ConfigurationError, match="need --method nsga2"):
        SearchOptions(Method.TPE, tuple(parse_objectives("return,drawdown")), trials=4)


class _RecordingExecutor:
    """An executor of the interface the search uses, with 4 workers, that runs the batches it is given in reverse
    order (as a pool may finish them) and returns the results in the batches' order."""

    workers = 4

    def __init__(self) -> None:
        self.batches: list[object] = []

    def map_batches(self, fn, batches, *, data, **_options):  # type: ignore[no-untyped-def]
        self.batches.extend(batches)
        results = {i: fn(data[b.data], b) for i, b in reversed(list(enumerate(batches)))}
        return [results[i] for i in range(len(batches))]


def test_an_executor_gets_batches_spread_over_its_workers_and_gives_the_same_result(data: ResearchData) -> None:
    # Given an executor with 4 workers and an evaluator of a window of the data
    executor = _RecordingExecutor()
    window = (600, 1400)
    remote = Evaluator(data, "volatility_breakout", RESEARCH, window=window, executor=executor)
    local = Evaluator(data, "volatility_breakout", RESEARCH, window=window)
    sets = [{"k": 0.1 * i} for i in range(1, 11)]
    # When 10 sets are evaluated
    got = remote(sets)
    # Then they went out as 4 batches of at most 3 sets with the window, and the metrics are those of one process
    assert [len(b.params) for b in executor.batches] == [3, 3, 3, 1]  # type: ignore[attr-defined]
    assert {b.window for b in executor.batches} == {window}  # type: ignore[attr-defined]
    assert got == local(sets)
    assert remote.evaluated == 10


def test_several_windows_go_out_in_one_fan_out_with_the_results_of_each(data: ResearchData) -> None:
    # Given two train windows (walk-forward folds) and an executor with 4 workers
    executor = _RecordingExecutor()
    windows = [(400, 900), (700, 1200)]
    sets = [{"k": 0.2 * i} for i in range(1, 6)]
    # When the same sets are evaluated on both at once
    got = Evaluator(data, "volatility_breakout", RESEARCH, executor=executor).across(windows, sets)
    # Then one call carried the batches of both windows, and each window's metrics are its own
    assert {b.window for b in executor.batches} == set(windows)  # type: ignore[attr-defined]
    assert sum(len(b.params) for b in executor.batches) == 10  # type: ignore[attr-defined]
    assert got == [Evaluator(data, "volatility_breakout", RESEARCH, window=w)(sets) for w in windows]
