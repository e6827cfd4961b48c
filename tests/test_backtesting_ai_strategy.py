"""The AI strategy: asks only on rule entry candidates, replays cached answers, refuses without key or cache."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.ai.cache import InMemoryDecisionCache
from src.ai.prompt import build_request, request_hash
from src.ai.service import AIDecision, AIService, MarketContext
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.config.trading_groups import AIConfig
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import ConfigurationError
from src.strategy.bundled import RuleBasedBreakoutStrategy

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def candles() -> pd.DataFrame:
    return load_candle_csv(ROOT / "backtest_data" / "hourly" / "KRW-ETH_1h.csv").iloc[:3000]


class RecordingAdviser:
    available = True

    def __init__(self, decision: Decision = Decision.BUY, confidence: str = "80") -> None:
        self.contexts: list[MarketContext] = []
        self.decision = decision
        self.confidence = Decimal(confidence)

    async def decide(self, context: MarketContext) -> AIDecision:
        self.contexts.append(context)
        return AIDecision(self.decision, self.confidence, "test", DecisionSource.AI, "fake", f"h{len(self.contexts)}")


def test_asks_only_on_rule_candidates_and_buys_when_confident(candles: pd.DataFrame) -> None:
    # Given an adviser that always says buy with confidence 80
    adviser = RecordingAdviser()
    strategy = AITradingStrategy(adviser, "KRW-ETH", min_confidence=Decimal("60"))
    rule = RuleBasedBreakoutStrategy().generate_signals(candles)
    # When signals are generated
    signals = strategy.generate_signals(candles)
    # Then it was asked exactly once per rule candidate, at that bar's close, and follows the rule
    candidates = np.nonzero(rule.buy_signal)[0]
    assert len(adviser.contexts) == len(candidates) > 5
    first = adviser.contexts[0]
    assert first.timestamp == (candles.index[candidates[0]] + pd.Timedelta(hours=1)).to_pydatetime()
    assert first.price == candles["close"].iloc[candidates[0]]
    assert "rsi_14" in first.indicators
    assert "bias" in first.signals
    np.testing.assert_array_equal(signals.buy_signal, rule.buy_signal)
    np.testing.assert_array_equal(signals.entry_stop, rule.entry_stop)
    assert strategy.stats.answered == len(candidates)


def test_low_confidence_or_hold_never_enters(candles: pd.DataFrame) -> None:
    for adviser in (RecordingAdviser(Decision.BUY, "40"), RecordingAdviser(Decision.HOLD, "95")):
        result = Backtester().run(candles, AITradingStrategy(adviser, "KRW-ETH", min_confidence=Decimal("60")))
        assert result.metrics["trades"] == 0


async def test_replays_cached_decisions_without_a_key(candles: pd.DataFrame) -> None:
    # Given the model's answers recorded in a cache (keyed by the service's prompt hash)
    config = AIConfig(_env_file=None, OPENAI_API_KEY=None, AI_ENABLED=True)
    recorder = RecordingAdviser()
    recorded = AITradingStrategy(recorder, "KRW-ETH")
    await recorded.prepare(candles)
    cache = InMemoryDecisionCache()
    for i, context in enumerate(recorder.contexts):
        prompt_hash = request_hash(build_request(config.model, context.to_prompt_payload()))
        decision = Decision.BUY if i % 2 == 0 else Decision.HOLD
        await cache.put(AIDecision(decision, Decimal("90"), "recorded", DecisionSource.AI, config.model, prompt_hash))
    # When a backtest runs twice with the real service, no key, and that cache
    runs = []
    for _ in range(2):
        service = AIService(config, cache)
        strategy = AITradingStrategy(service, "KRW-ETH", has_cache=True)
        await strategy.prepare(candles)
        runs.append((Backtester().run_signals(candles, strategy.generate_signals(candles), "ai", {}), strategy.stats))
    # Then every decision came from the cache, half the candidates were bought, and both runs agree
    (first, stats), (second, _) = runs
    assert stats.from_cache == stats.candidates == len(recorder.contexts)
    assert int(first.signals.buy_signal.sum()) == (len(recorder.contexts) + 1) // 2
    pd.testing.assert_frame_equal(first.trades, second.trades)


async def test_without_key_and_without_cached_answers_it_says_so_and_stops(candles: pd.DataFrame) -> None:
    config = AIConfig(_env_file=None, OPENAI_API_KEY=None)
    with pytest.raises(ConfigurationError, match="needs OPENAI_API_KEY"):
        AITradingStrategy(AIService(config), "KRW-ETH", has_cache=False)
    strategy = AITradingStrategy(AIService(config, InMemoryDecisionCache()), "KRW-ETH", has_cache=True)
    with pytest.raises(ConfigurationError, match=r"none of the \d+ AI decisions"):
        await strategy.prepare(candles)


class BudgetRunsOut:
    """Available when asked first; its first answer spends the budget, so every answer is a disabled hold."""

    def __init__(self) -> None:
        self.available = True

    async def decide(self, context: MarketContext) -> AIDecision:
        self.available = False
        return AIDecision(
            Decision.HOLD, Decimal("0"), "AI disabled", DecisionSource.DISABLED, "fake", "h", error="budget: reached"
        )


async def test_a_budget_running_out_during_the_backtest_is_not_a_configuration_error(candles: pd.DataFrame) -> None:
    # Given an adviser that goes off (budget) during the backtest, when it is prepared
    stats = await AITradingStrategy(BudgetRunsOut(), "KRW-ETH").prepare(candles)
    # Then the unanswered candidates are counted, and no buy is approved
    assert stats.answered == 0
    assert stats.unanswered == stats.candidates > 0
