"""QuickBacktestFilter: two stages, named threshold failures, the stage that blocked, caching per symbol and last
candle; the same compiled judgement as the backtest's gate at each entry attempt."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.ai.service import AIDecision, MarketContext
from src.ai.validator import AIDecisionValidator
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.backtesting.engine import EngineConfig
from src.backtesting.quick_filter import TIERS, QuickBacktestFilter, QuickFilterThresholds
from src.config.trading_groups import RiskConfig
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import ConfigurationError
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import StrategySignals

ROOT = Path(__file__).resolve().parents[1]
NOTHING = QuickFilterThresholds(*([None] * 10))


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-BTC_1h.csv").loc["2023-01-31":"2023-05-18"]


class CountingAdviser:
    available = True

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.calls = 0

    async def decide(self, context: MarketContext) -> AIDecision:
        self.calls += 1
        return AIDecision(self.decision, Decimal("90"), "t", DecisionSource.AI, "fake", str(self.calls))


def test_rule_stage_failure_names_the_thresholds_and_skips_ai(candles: pd.DataFrame) -> None:
    # Given thresholds no backtest can meet and an AI stage that must not be reached
    adviser = CountingAdviser(Decision.BUY)
    impossible = replace(NOTHING, min_total_return_pct=1000.0, min_trades=10_000)
    quick = QuickBacktestFilter(
        lookback_days=60, thresholds=impossible, ai_strategy_factory=lambda s: AITradingStrategy(adviser, s)
    )
    result = quick.evaluate("KRW-BTC", candles)
    assert not result.passed
    assert result.stage == "rule"
    assert result.failed_thresholds == ["min_total_return_pct", "min_trades"]
    assert result.blocked_by == "rule"
    assert adviser.calls == 0
    assert result.metrics["bars"] <= 60 * 24


def test_rule_pass_then_ai_stage_decides(candles: pd.DataFrame) -> None:
    # Given thresholds every run meets except "at least one trade", and an adviser that always holds
    adviser = CountingAdviser(Decision.HOLD)
    one_trade = QuickFilterThresholds(*([None] * 8), min_trades=1, max_avg_holding_hours=None)
    quick = QuickBacktestFilter(
        lookback_days=60, thresholds=one_trade, ai_strategy_factory=lambda s: AITradingStrategy(adviser, s)
    )
    result = quick.evaluate("KRW-BTC", candles)
    # Then the rule stage passed, the AI stage ran, made no trade, and failed on min_trades
    assert result.rule_metrics["trades"] >= 1
    assert adviser.calls >= result.rule_metrics["trades"]  # asked on every rule candidate
    assert result.stage == "ai"
    assert not result.passed
    assert result.failed_thresholds == ["min_trades"]
    assert result.blocked_by == "ai"
    assert "AI decisions" in result.note


def test_without_ai_the_rule_stage_decides_and_results_are_cached(candles: pd.DataFrame) -> None:
    quick = QuickBacktestFilter(lookback_days=30, thresholds=NOTHING)
    first = quick.evaluate("KRW-BTC", candles)
    assert first.passed
    assert first.stage == "rule"
    assert first.failed_thresholds == []
    assert first.blocked_by is None
    assert quick.evaluate("KRW-BTC", candles) is first  # same symbol and last candle: cached
    assert quick.evaluate("KRW-BTC", candles.iloc[:-1]) is not first  # a different last candle
    assert quick.evaluate("KRW-ETH", candles) is not first
    json.dumps(first.to_dict(), allow_nan=False)
    assert first.to_dict()["last_candle"] == candles.index[-1].isoformat()


async def test_async_evaluation_inside_an_event_loop(candles: pd.DataFrame) -> None:
    adviser = CountingAdviser(Decision.BUY)
    objects_to_nothing = AIDecisionValidator(
        RiskConfig(_env_file=None, VALIDATOR_MAX_RSI="100", VALIDATOR_MAX_ATR_PCT="100", VALIDATOR_FAKEOUT_ADX="0")
    )
    quick = QuickBacktestFilter(
        lookback_days=60,
        thresholds=NOTHING,
        ai_strategy_factory=lambda s: AITradingStrategy(adviser, s, validator=objects_to_nothing),
    )
    result = await quick.aevaluate("KRW-BTC", candles)
    assert result.stage == "ai"
    assert result.passed
    # an always-buy AI whose buys the validator never vetoes = the rule strategy
    assert result.metrics["trades"] == result.rule_metrics["trades"]


def test_tiers_and_bad_tier() -> None:
    assert set(TIERS) == {"strict", "moderate", "lenient"}
    assert TIERS["strict"].min_sharpe > TIERS["moderate"].min_sharpe
    with pytest.raises(ConfigurationError, match="unknown quick filter tier"):
        QuickBacktestFilter(thresholds="yolo")


def test_undefined_metric_fails_its_threshold() -> None:
    failed = QuickFilterThresholds().failures({"total_return_pct": 0.0, "trades": 0, "max_drawdown_pct": 0.0})
    assert "min_win_rate_pct" in failed
    assert "min_trades" in failed
    assert "max_drawdown_pct" not in failed


def test_from_settings_uses_lookback_tier_and_costs() -> None:
    from src.config.settings import load_settings

    settings = load_settings(env_file=None)
    quick = QuickBacktestFilter.from_settings(settings)
    assert quick.lookback == pd.Timedelta(days=settings.backtest.quick_filter_lookback_days)
    assert quick.thresholds == TIERS[settings.backtest.quick_filter_tier]
    assert quick.config.fee_rate == float(settings.trading.fee_rate)
    assert quick.config.initial_capital == float(settings.trading.paper_starting_krw)
    assert quick.config.max_trades_per_day == settings.risk.max_trades_per_day


@pytest.mark.parametrize("tier", ["strict", "moderate", "lenient"])
def test_the_compiled_judgement_is_the_threshold_rule(candles: pd.DataFrame, tier: str) -> None:
    # Given windows ending at many bars
    quick = QuickBacktestFilter(lookback_days=20, thresholds=tier, config=EngineConfig(quick_filter=False))
    for end in range(600, len(candles), 97):
        # When the filter judges it (compiled metrics and thresholds)
        metrics, failed = quick.judge(candles.iloc[:end], RuleBasedBreakoutStrategy())
        # Then the failures are those QuickFilterThresholds.failures finds in the full metrics
        assert failed == TIERS[tier].failures(metrics), end


def test_the_backtest_gate_decides_each_entry_as_the_quick_filter_would(candles: pd.DataFrame) -> None:
    # Given a backtest with the gate on (lenient, so some entries pass) and the bot's quick filter
    config = EngineConfig(quick_filter=True, quick_filter_tier="lenient", quick_filter_lookback_days=20,
                          min_trade_interval_hours=0)  # fmt: skip
    strategy = RuleBasedBreakoutStrategy()
    result = Backtester(config).run(candles, strategy)
    quick = QuickBacktestFilter(lookback_days=20, thresholds="lenient", config=config, rule_strategy=strategy)
    signals = strategy.generate_signals(candles)
    entries = {pd.Timestamp(t["entry_candle"]) for t in result.trade_records()}
    held = np.zeros(len(candles), dtype=bool)
    for trade in result.trades.itertuples():
        held[trade.entry_bar : trade.exit_bar] = True
    gated = result.gates()["refused_by"]["quick_filter"]
    assert gated > 0
    assert entries
    # Then at every entry attempt the engine made, it bought exactly when the quick filter (given the candles up
    # to that bar, as the bot gives them) passes
    refused = 0
    for t in np.flatnonzero(signals.entry):
        if held[t] or candles.index[t] in entries:
            if candles.index[t] in entries:
                assert quick.evaluate("KRW-BTC", candles.iloc[: t + 1]).passed, t
            continue
        refused += not quick.evaluate("KRW-BTC", candles.iloc[: t + 1]).passed
    assert refused >= gated


def test_the_ai_strategy_is_gated_by_the_rule_stage_then_the_ai_stage(candles: pd.DataFrame) -> None:
    # Given a candidate strategy and "AI-confirmed" entries more than 30 days apart, and a gate needing 2 trades
    strategy = RuleBasedBreakoutStrategy()
    rule = strategy.generate_signals(candles)
    confirmed = np.zeros(len(candles), dtype=bool)
    last = None
    for t in np.flatnonzero(rule.entry):
        if last is None or candles.index[t] - candles.index[last] > pd.Timedelta(days=31):
            confirmed[t], last = True, t
    ai = StrategySignals(rule.index, confirmed, rule.exit, rule.atr)
    two_trades = replace(NOTHING, min_trades=2)
    config = EngineConfig(quick_filter_lookback_days=30, quick_filter_thresholds=two_trades.vector(),
                          min_trade_interval_hours=0)  # fmt: skip
    # When the ai strategy is backtested with its candidate strategy's signals for the rule stage
    result = Backtester(config).run_signals(candles, ai, "ai", {}, strategy.exit_policy, None, rule)
    # Then the AI stage (at most one confirmed entry in any 30 days: one trade) refuses what the rule stage passed
    gates = result.gates()["refused_by"]
    assert gates["quick_filter_ai"] > 0
    assert gates["quick_filter"] + gates["quick_filter_ai"] == result.gates()["entry_attempts"]
    assert result.trade_records() == []
    # And judged on the candidate's signals alone (one stage) entries pass
    single = Backtester(config).run_signals(candles, ai, "ai", {}, strategy.exit_policy, None, None)
    assert single.gates()["refused_by"]["quick_filter_ai"] == 0
