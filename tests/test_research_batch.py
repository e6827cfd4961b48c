"""Batch evaluation: many parameter sets in one compiled call give exactly the metrics of single backtests."""

from __future__ import annotations

import math
import pickle
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from src.backtesting.engine import EngineConfig
from src.exceptions import ConfigurationError, DataError
from src.research.batch import METRICS, evaluate_batch, single_metrics
from src.research.data import ResearchData
from src.strategy.registry import strategy_class
from tests.support.research_candles import walk_candles

# Every risk rule and the quick filter gate (judging: at least 3 round trips in its window, so it refuses some
# entries and lets others through)
BOT_RULES = EngineConfig(quick_filter_thresholds=(None,) * 8 + (3.0, None))
RESEARCH = EngineConfig(quick_filter=False, slippage_pct=0.1).without_risk_rules()

GRIDS = {
    "volatility_breakout": [
        {"k": k, "trend_filter": trend, "stop_loss_pct": stop, "max_hold_hours": hold}
        for k, trend, stop, hold in product((0.2, 0.5, 0.9), (False, True), (0.0, 1.5), (0.0, 3.0))
    ],
    "rule_breakout": [
        {"ma_period": ma, "breakout_mode": mode, "stop_atr": stop, "trailing_stop_pct": trail, "volume_multiplier": 1.0}
        for ma, mode, stop, trail in product((20, 50), ("donchian", "range"), (0.0, 2.0), (0.0, 2.5))
    ],
}


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.fixture(scope="module")
def data() -> ResearchData:
    df = walk_candles(2500)
    return ResearchData.of(df, start=df.index[400])


@pytest.mark.parametrize("config", [BOT_RULES, RESEARCH], ids=["bot-rules", "research"])
@pytest.mark.parametrize("strategy", sorted(GRIDS))
def test_batch_equals_single_backtests_bit_for_bit(data: ResearchData, strategy: str, config: EngineConfig) -> None:
    # Given a grid of parameter sets (signal and exit parameters) of a bundled strategy
    sets = GRIDS[strategy]
    # When the whole grid is evaluated in one batch (small chunks: several compiled calls)
    batch = evaluate_batch(data, strategy, sets, config, memory_mb=0.05)
    # Then every set's metrics are exactly those of its own backtest
    cls = strategy_class(strategy, None)
    traded = 0
    for params, got in zip(sets, batch, strict=True):
        want = single_metrics(data, cls(**params), config)
        different = {m: (got[m], want[m]) for m in METRICS if not _same(got[m], want[m])}
        assert not different, f"{strategy} {params}: {different}"
        traded += got["trades"] > 0
    assert traded >= len(sets) // 2  # the grid trades: the comparison is not of empty runs


def test_batch_keeps_the_order_and_shares_signals_across_exit_parameters(data: ResearchData) -> None:
    # Given sets that differ only in their exits, interleaved with another signal setting
    sets = [{"k": 0.5, "stop_loss_pct": 1.0}, {"k": 0.7}, {"k": 0.5}, {"k": 0.5, "stop_loss_pct": 1.0}]
    # When evaluated together and one at a time
    together = evaluate_batch(data, "volatility_breakout", sets, RESEARCH)
    alone = [evaluate_batch(data, "volatility_breakout", [s], RESEARCH)[0] for s in sets]
    # Then the results come back in the order given, each as if evaluated alone
    assert together == alone
    assert together[0] == together[3]
    assert together[0] != together[2]


def test_research_data_pickles_and_windows_without_later_candles(data: ResearchData) -> None:
    # Given research data
    # When it is pickled and a window is cut from it
    copy = pickle.loads(pickle.dumps(data))
    part = data.window(1000, 1200, warmup=300)
    # Then the copy is the same data and the window holds its warm-up and nothing after its end
    assert copy.fingerprint() == data.fingerprint()
    assert copy.frame().equals(data.frame())
    assert len(part) == 500
    assert part.start == 300
    assert part.index[-1] == data.index[1199]
    assert part.index[part.start] == data.index[1000]


def test_bad_parameter_sets_are_one_clear_error(data: ResearchData) -> None:
    # Given a set with an unknown parameter, one out of range, and an unknown strategy
    # When evaluated / Then a ConfigurationError names the problem
    with pytest.raises(ConfigurationError, match="has no parameter nope"):
        evaluate_batch(data, "volatility_breakout", [{"nope": 1}], RESEARCH)
    with pytest.raises(ConfigurationError, match="k must be in"):
        evaluate_batch(data, "volatility_breakout", [{"k": 99.0}], RESEARCH)
    with pytest.raises(ConfigurationError, match="unknown strategy"):
        evaluate_batch(data, "no_such_strategy", [{}], RESEARCH)
    with pytest.raises(DataError):
        data.window(10, 5, warmup=0)


@pytest.mark.parametrize("strategy", sorted(GRIDS))
def test_batch_signals_equal_each_sets_own_signals(data: ResearchData, strategy: str) -> None:
    # Given a grid of a bundled strategy and its candles
    cls = strategy_class(strategy, None)
    df = data.frame()
    sets = GRIDS[strategy]
    # When the signals are built for all sets at once (shared work)
    together = list(cls.batch_signals(df, sets))
    # Then each set's arrays are those its own generate_signals gives
    for params, got in zip(sets, together, strict=True):
        alone = cls(**params).generate_signals(df)
        for name in ("entry", "exit", "atr"):
            assert np.array_equal(getattr(got, name), getattr(alone, name), equal_nan=True), (params, name)


def test_a_set_the_strategy_refuses_has_no_metrics_and_the_others_are_evaluated(data: ResearchData) -> None:
    # Given the example user strategy, which refuses a fast average that is not faster than the slow one
    folder = Path(__file__).resolve().parents[1] / "strategies"
    sets = [{"fast": 10, "slow": 30}, {"fast": 30, "slow": 20}, {"fast": 5, "slow": 40}]
    # When the sets are evaluated together
    got = evaluate_batch(data, "sma_crossover", sets, RESEARCH, strategy_path=folder)
    # Then the refused set has no trades and undefined metrics, and the others are their own backtests
    assert got[1]["trades"] == 0
    assert math.isnan(got[1]["total_return_pct"])
    cls = strategy_class("sma_crossover", folder)
    for i in (0, 2):
        want = single_metrics(data, cls(**sets[i]), RESEARCH)
        assert all(_same(got[i][m], want[m]) for m in METRICS)
        assert got[i]["trades"] > 0
