"""Walk-forward: fold layout (rolling, anchored, embargo), no test window seen in its own training (a planted
future-only signal), the stitched out-of-sample curve, parameter stability and IS -> OOS decay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.backtesting.backtester import Backtester
from src.backtesting.engine import EngineConfig
from src.exceptions import ConfigurationError
from src.research.batch import evaluate_batch
from src.research.data import ResearchData
from src.research.objectives import parse_objectives
from src.research.search import Evaluator, Method, SearchOptions, warmup_bars
from src.research.space import search_space
from src.research.walkforward import plan_folds, walk_forward
from src.strategy.bundled import VolatilityBreakoutStrategy
from src.strategy.registry import strategy_class
from tests.support.research_candles import walk_candles

RESEARCH = EngineConfig(quick_filter=False, slippage_pct=0.0).without_risk_rules()

PLANTED = '''
import numpy as np
from src.strategy import EXIT_PARAMS, Param, ParameterSpace, Strategy


class Planted(Strategy):
    """Buys at the close of a marked bar (candle column value > 0) when ``follow``; sells at the next close."""

    name = "planted"
    space = ParameterSpace((Param("follow", bool, False),)) + EXIT_PARAMS

    def generate_signals(self, df):
        n = len(df)
        marked = df["value"].to_numpy() > 0 if self.params["follow"] else np.zeros(n, dtype=bool)
        return self.signals(df, marked, np.ones(n, dtype=bool))
'''


def test_rolling_folds_slide_by_the_test_size_and_end_at_the_last_bar() -> None:
    # Given 1,000 traded bars from bar 100, 4 folds of train 300, test 100, embargo 24
    # When planned
    plans = plan_folds(100, 1100, 4, train=300, test=100, embargo=24)
    # Then the train windows slide, the embargo separates train and test, the tests follow each other to the end
    assert [p.train for p in plans] == [(376, 676), (476, 776), (576, 876), (676, 976)]
    assert [p.test for p in plans] == [(700, 800), (800, 900), (900, 1000), (1000, 1100)]
    assert all(p.test[0] - p.train[1] == 24 for p in plans)


def test_anchored_folds_grow_from_the_first_bar_and_default_sizes_fill_the_span() -> None:
    # Given anchored folds without sizes
    plans = plan_folds(0, 700, 4, anchored=True)
    # Then every train window starts at bar 0, tests are (700 / (4 + 3)) = 100 bars, the last ends at 700
    assert {p.train[0] for p in plans} == {0}
    assert [p.test for p in plans] == [(300, 400), (400, 500), (500, 600), (600, 700)]
    assert [p.train[1] for p in plans] == [300, 400, 500, 600]
    # And too little data is one clear error
    with pytest.raises(ConfigurationError, match="needs 1,100 bars"):
        plan_folds(0, 700, 4, train=500, test=150)


def _planted_candles(bars: int, window: tuple[int, int]) -> pd.DataFrame:
    """A flat price with marked bars: +5 % after each of 3 marks inside ``window`` (the future-only signal), -1 %
    after a mark every 97 bars elsewhere (following marks loses money in every other stretch)."""
    close = np.empty(bars)
    value = np.full(bars, -1.0)
    good = {window[0] + 10, window[0] + 40, window[0] + 70}
    bad = {t for t in range(5, bars - 1, 97) if not window[0] - 2 <= t < window[1]}
    price = 50_000_000.0
    for t in range(bars):
        close[t] = price
        if t in good or t in bad:
            value[t] = 1.0
            price *= 1.05 if t in good else 0.99
    opens = np.concatenate(([close[0]], close[:-1]))
    return pd.DataFrame(
        {
            "open": opens,
            "high": np.maximum(opens, close) * 1.0001,
            "low": np.minimum(opens, close) * 0.9999,
            "close": close,
            "volume": np.full(bars, 10.0),
            "value": value,
        },
        index=pd.date_range("2024-01-01", periods=bars, freq="1h", tz="UTC", name="timestamp"),
    )


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_no_test_window_is_seen_by_its_own_training(tmp_path: Path, fold: int) -> None:
    # Given candles whose only profitable signal is planted inside the test window of one fold, and a strategy
    # that follows it or not
    (tmp_path / "planted.py").write_text(PLANTED)
    plans = plan_folds(0, 1200, 4, train=300, test=100, embargo=24)
    df = _planted_candles(1200, plans[fold].test)
    data = ResearchData.of(df)
    cls = strategy_class("planted", tmp_path)
    space = search_space("planted", cls.space, ["follow=false,true"])
    options = SearchOptions(Method.GRID, tuple(parse_objectives("return")))

    def make(window: tuple[int, int]) -> Evaluator:
        return Evaluator(data, "planted", RESEARCH, window=window, strategy_path=tmp_path)

    # When walked forward
    result = walk_forward(data, space, options, plans, RESEARCH, make)
    chosen = [f.best.params["follow"] if f.best is not None else None for f in result.folds]
    # Then the fold whose test window holds the signal did not follow it (its training never saw it) ...
    assert chosen[fold] is False
    assert result.folds[fold].test_metrics is not None
    assert result.folds[fold].test_metrics["trades"] == 0
    # ... although following it there would have paid (the signal is real) ...
    test_part = data.window(*plans[fold].test, warmup=300)
    followed = evaluate_batch(test_part, "planted", [{"follow": True}], RESEARCH, strategy_path=tmp_path)[0]
    assert followed["total_return_pct"] > 2.5  # 3 x 5 % on a fifth of the equity
    # ... and the next fold, whose training does contain that window, follows it: the check can see a leak
    assert chosen[fold + 1] is True


def test_walk_forward_stitches_the_test_windows_into_one_curve() -> None:
    # Given hourly candles and a small grid searched in 3 rolling folds
    df = walk_candles(2400, seed=11)
    data = ResearchData.of(df, start=df.index[400])
    space = search_space("volatility_breakout", VolatilityBreakoutStrategy.space, ["k=0.3:1.2:0.3"])
    options = SearchOptions(Method.GRID, tuple(parse_objectives("return")))
    plans = plan_folds(data.start, len(data), 3, embargo=10)

    def make(window: tuple[int, int]) -> Evaluator:
        return Evaluator(data, "volatility_breakout", RESEARCH, window=window)

    # When walked forward
    result = walk_forward(data, space, options, plans, RESEARCH, make)
    report = result.to_dict(data)
    # Then the curve covers the test windows bar for bar, each fold continuing from where the previous ended
    equity = result.oos_equity
    assert len(equity) == sum(p.test[1] - p.test[0] for p in plans)
    assert equity.index[0] == data.index[plans[0].test[0]]
    assert equity.index[-1] == data.index[len(data) - 1]
    running = RESEARCH.initial_capital
    for f in result.folds:
        assert f.best is not None
        alone = Backtester(RESEARCH).run(
            data.window(*f.plan.test, warmup=warmup_bars(data, RESEARCH)).frame(),
            VolatilityBreakoutStrategy(**f.best.params),
            data.index[f.plan.test[0]],
        )
        assert f.test_metrics is not None
        assert f.test_metrics["final_equity"] == alone.metrics["final_equity"]
        assert f.test_metrics["trades"] == alone.metrics["trades"] > 0
        running *= alone.metrics["final_equity"] / RESEARCH.initial_capital
    assert equity.iloc[-1] == pytest.approx(running, rel=1e-12)
    assert report["oos_metrics"]["total_return_pct"] == pytest.approx(100 * (running / RESEARCH.initial_capital - 1))
    # And the report names the windows, the chosen parameters, their stability and the decay
    first = report["folds"][0]
    assert first["train"]["start"] == data.index[plans[0].train[0]].isoformat()
    assert first["test"]["end"] == (data.index[plans[0].test[1] - 1] + pd.Timedelta(hours=1)).isoformat()
    assert set(first["params"]) >= {"k", "trend_filter"}
    assert len(report["parameter_stability"]["k"]["values"]) == 3
    assert report["is_oos_decay"]["return"]["folds"] == 3
    assert report["mode"] == "rolling"
    assert report["embargo_bars"] == 10


def test_an_undefined_test_metric_is_nan_for_the_objective() -> None:
    # Given a test window's backtest metrics without a Sharpe (no trades: the report's null)
    from src.research.walkforward import _metric_floats

    metrics = {"sharpe": None, "trades": 0, "timeframe": "1h", "total_return_pct": 0.0}
    # When read for the objective
    floats = _metric_floats(metrics)
    # Then the Sharpe is NaN (the fold's OOS objective is undefined), numbers stay, text goes
    assert np.isnan(parse_objectives("sharpe")[0].value(floats))
    assert floats["trades"] == 0.0
    assert "timeframe" not in floats
