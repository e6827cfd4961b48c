"""The AI strategy: asked only on the candidate's entry bars with the live context, the validator and the
liquidity check applied as live, cached answers replayed, and a clear stop without key or cache."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.ai.cache import InMemoryDecisionCache
from src.ai.context import build_market_context
from src.ai.prompt import request_hash
from src.ai.service import AIDecision, AIService, MarketContext
from src.ai.validator import AIDecisionValidator
from src.backtesting.ai_strategy import AITradingStrategy
from src.backtesting.backtester import Backtester
from src.backtesting.data_provider import load_candle_csv
from src.config.trading_groups import AIConfig, RiskConfig
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import ConfigurationError
from src.strategy.bundled import RuleBasedBreakoutStrategy, VolatilityBreakoutStrategy
from src.strategy.contract import history_bars
from src.trading.liquidity import LiquidityAnalyzer
from tests.fakes.openai_server import Behaviour, FakeOpenAI

pytest_plugins = ["tests.fakes.openai_fixtures"]

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


def lenient_validator() -> AIDecisionValidator:
    """A validator that objects to nothing but the minimum confidence (so tests see the adviser's effect)."""
    risk = RiskConfig(
        _env_file=None,
        VALIDATOR_MAX_RSI="100",
        VALIDATOR_MAX_ATR_PCT="100",
        VALIDATOR_FAKEOUT_ADX="0",
        FLASH_CRASH_PCT="99",
    )
    return AIDecisionValidator(risk, min_confidence=Decimal("60"))


async def test_asked_only_on_candidate_entries_with_the_context_the_live_builder_makes(candles: pd.DataFrame) -> None:
    # Given an adviser that always says buy with confidence 80 and a volatility breakout candidate
    adviser = RecordingAdviser()
    candidate = VolatilityBreakoutStrategy()
    strategy = AITradingStrategy(adviser, "KRW-ETH", candidate, validator=lenient_validator())
    # When the strategy decides its candidates
    await strategy.prepare(candles)
    # Then it asked exactly once per entry bar of the candidate, decided at that bar's close
    entries = np.nonzero(candidate.generate_signals(candles).entry)[0]
    assert len(adviser.contexts) == len(entries) > 5
    row = int(entries[-1])
    context = adviser.contexts[-1]
    assert context.candle_at == candles.index[row].to_pydatetime()
    assert context.timestamp == (candles.index[row] + pd.Timedelta(hours=1)).to_pydatetime()
    # And its context is the one the live builder makes from the same candles and inputs: the last
    # history_bars candles, the bar's close as price, the candidate's last bar and the replay book
    window = candles.iloc[row + 1 - history_bars(30, 3600) : row + 1]
    live = build_market_context(
        "KRW-ETH",
        window,
        bar_seconds=3600,
        price=float(candles["close"].iloc[row]),
        strategy_last=candidate.generate_signals(window).latest(),
        orderbook_summary=context.orderbook,
        quick_filter=None,
    )
    assert live.to_prompt_payload() == context.to_prompt_payload()
    assert context.orderbook is not None
    assert context.orderbook["best_bid"] < context.price < context.orderbook["best_ask"]


async def test_the_validator_vetoes_buys_in_the_backtest(candles: pd.DataFrame) -> None:
    # Given an adviser that always says buy with confidence 90
    adviser = RecordingAdviser(Decision.BUY, "90")
    # When the validator's RSI limit is so low that every bar is overbought
    strict = AIDecisionValidator(RiskConfig(_env_file=None, VALIDATOR_MAX_RSI="1"), min_confidence=Decimal("60"))
    strategy = AITradingStrategy(adviser, "KRW-ETH", validator=strict)
    stats = await strategy.prepare(candles)
    # Then every candidate is vetoed by the validator, none is bought, and the backtest trades nothing
    assert stats.vetoed == {"validator": stats.candidates}
    assert stats.approved == 0
    assert Backtester().run_signals(candles, strategy.generate_signals(candles), "ai", {}).metrics["trades"] == 0
    assert all(any("rsi" in r for r in o.reasons) for o in strategy.outcomes.values())


async def test_liquidity_is_checked_on_the_replay_book_and_a_missing_book_is_reported(candles: pd.DataFrame) -> None:
    # Given a confident adviser and an order far larger than the replay fill model's book holds
    liquidity = LiquidityAnalyzer(Decimal("0.5"))
    strategy = AITradingStrategy(
        RecordingAdviser(Decision.BUY, "90"),
        "KRW-ETH",
        validator=lenient_validator(),
        liquidity=liquidity,
        order_krw=Decimal("1000000000000"),
    )
    stats = await strategy.prepare(candles)
    # Then every buy is vetoed by the liquidity check, and the stats say on which book
    assert stats.vetoed == {"liquidity": stats.candidates}
    assert "replay fill model's book" in stats.liquidity
    # And on bars that are no Upbit timeframe (2 hours) no book is known: the check is not run, and said so
    two_hourly = candles.iloc[::2]
    odd = AITradingStrategy(
        RecordingAdviser(Decision.BUY, "90"),
        "KRW-ETH",
        validator=lenient_validator(),
        liquidity=liquidity,
        order_krw=Decimal("1000000000000"),
    )
    stats = await odd.prepare(two_hourly)
    assert stats.liquidity.startswith("not checked: no orderbook known")
    assert stats.approved == stats.candidates > 0
    assert all(context.orderbook is None for context in odd.adviser.contexts)  # type: ignore[union-attr]


async def test_low_confidence_or_hold_never_enters(candles: pd.DataFrame) -> None:
    for adviser in (RecordingAdviser(Decision.BUY, "40"), RecordingAdviser(Decision.HOLD, "95")):
        strategy = AITradingStrategy(adviser, "KRW-ETH", validator=lenient_validator())
        await strategy.prepare(candles)
        assert not strategy.generate_signals(candles).entry.any()


async def test_the_real_client_on_the_fake_server_and_its_answers_replayed_from_the_cache(
    candles: pd.DataFrame, fake_openai: FakeOpenAI
) -> None:
    # Given the real AI service on the fake OpenAI server, which answers buy 90, and an empty cache
    fake_openai.default = Behaviour.ok("buy", 90.0)
    config = AIConfig(_env_file=None, OPENAI_API_KEY=fake_openai.api_key, OPENAI_BASE_URL=fake_openai.base_url)
    cache = InMemoryDecisionCache()
    first = AITradingStrategy(AIService(config, cache), "KRW-ETH", validator=lenient_validator())
    stats = await first.prepare(candles)
    asked = fake_openai.request_count
    # Then the model was asked once per candidate, with the prompt of the context the builder made
    assert asked == stats.candidates == stats.answered > 0
    assert {o.prompt_hash for o in first.outcomes.values()} == {request_hash(body) for body in fake_openai.bodies}
    # When the same backtest runs again without a key, on that cache
    offline = AIConfig(_env_file=None, OPENAI_API_KEY=None, AI_ENABLED=True)
    again = AITradingStrategy(AIService(offline, cache), "KRW-ETH", validator=lenient_validator(), has_cache=True)
    stats_again = await again.prepare(candles)
    # Then every answer came from the cache, nothing crossed the wire, and the same bars are bought
    assert stats_again.from_cache == stats.candidates
    assert fake_openai.request_count == asked
    np.testing.assert_array_equal(first.generate_signals(candles).entry, again.generate_signals(candles).entry)


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
    assert stats.approved == 0


def test_the_candidate_exit_policy_is_the_strategy_exit_policy() -> None:
    candidate = RuleBasedBreakoutStrategy(stop_atr=1.5)
    strategy = AITradingStrategy(RecordingAdviser(), "KRW-ETH", candidate)
    assert strategy.exit_policy == candidate.exit_policy
