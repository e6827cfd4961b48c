"""The AI strategy: the rule strategy's entry candidates, confirmed by the AI adviser.

The adviser is asked only on bars where ``RuleBasedBreakoutStrategy`` would buy (that bounds the
number of calls), and all answers are collected before the portfolio loop runs. Through the AI
service's decision cache, a repeated backtest replays the same answers, deterministically and for free.
Exits are the rule strategy's ATR stop and target.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, Protocol

import numpy as np
import pandas as pd

from src.ai.service import AIDecision, MarketContext
from src.backtesting.performance import bar_seconds
from src.domain.decisions import Decision, DecisionSource
from src.domain.exits import ExitPolicy
from src.exceptions import ConfigurationError, DataError
from src.strategy.bundled import RuleBasedBreakoutStrategy
from src.strategy.contract import Strategy, StrategySignals
from src.trading.indicators import compute_indicators
from src.trading.signal_analyzer import SignalAnalyzer
from src.utils.logger import get_logger

log = get_logger(__name__)


class Adviser(Protocol):
    """What the strategy needs of ``AIService``."""

    @property
    def available(self) -> bool: ...

    async def decide(self, context: MarketContext) -> AIDecision: ...


@dataclass(frozen=True, slots=True)
class AIDecisionStats:
    candidates: int
    answered: int  # real answers: from the model now or from the cache
    from_cache: int
    unanswered: int  # disabled / fallback holds


class AITradingStrategy(Strategy):
    name = "ai"

    def __init__(
        self,
        adviser: Adviser,
        symbol: str,
        rule_strategy: Strategy | None = None,
        min_confidence: Decimal = Decimal("60"),
        has_cache: bool = True,
    ) -> None:
        if not adviser.available and not has_cache:
            raise ConfigurationError(
                "the AI strategy needs OPENAI_API_KEY (to ask the model) or a decision cache (to replay answers); "
                "neither is configured"
            )
        self.adviser = adviser
        self.symbol = symbol
        self.rule_strategy = rule_strategy or RuleBasedBreakoutStrategy()
        self.params = dict(self.rule_strategy.params)
        self.min_confidence = min_confidence
        self._decisions: dict[pd.Timestamp, AIDecision] = {}
        self.stats = AIDecisionStats(0, 0, 0, 0)

    def parameters(self) -> dict[str, Any]:
        return {"min_confidence": str(self.min_confidence), "rule": self.rule_strategy.parameters()}

    async def prepare(self, df: pd.DataFrame) -> AIDecisionStats:
        """Ask (or replay) the adviser for every rule entry candidate of ``df``, in time order."""
        rule = self.rule_strategy.generate_signals(df)
        indicators = compute_indicators(df)
        analyzer = SignalAnalyzer()
        step = timedelta(seconds=bar_seconds(df.index))
        candidates = np.nonzero(rule.entry)[0]
        answered = from_cache = 0
        could_ask = self.adviser.available  # before: an AI budget may run out during the loop, which is no error
        for row in candidates:
            values = {k: float(v) for k, v in indicators.iloc[row].items() if np.isfinite(v)}
            context = MarketContext(
                symbol=self.symbol,
                timestamp=(df.index[row] + step).to_pydatetime(),  # decided at the bar's close
                price=float(df["close"].iloc[row]),
                indicators=values,
                signals=analyzer.summary(analyzer.analyze_signals(values)),
            )
            decision = await self.adviser.decide(context)
            self._decisions[df.index[row]] = decision
            if decision.source in (DecisionSource.AI, DecisionSource.CACHE):
                answered += 1
                from_cache += decision.source is DecisionSource.CACHE
        self.stats = AIDecisionStats(len(candidates), answered, from_cache, len(candidates) - answered)
        if len(candidates) and answered == 0 and not could_ask:
            raise ConfigurationError(
                f"no OPENAI_API_KEY and none of the {len(candidates)} AI decisions this backtest needs is in the "
                "decision cache; set the key once to record them, or point to a cache that holds them"
            )
        log.info(
            "ai_backtest.decisions",
            symbol=self.symbol,
            candidates=len(candidates),
            answered=answered,
            cached=from_cache,
        )
        return self.stats

    def generate_signals(self, df: pd.DataFrame) -> StrategySignals:
        rule = self.rule_strategy.generate_signals(df)
        candidates = np.nonzero(rule.entry)[0]
        if any(df.index[row] not in self._decisions for row in candidates):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.prepare(df))
            else:
                raise DataError("AITradingStrategy: await prepare(df) before generate_signals inside an event loop")
        approved = np.zeros(len(df), dtype=np.bool_)
        for row in candidates:
            decision = self._decisions[df.index[row]]
            approved[row] = decision.decision is Decision.BUY and decision.confidence >= self.min_confidence
        return StrategySignals(df.index, approved, rule.exit, rule.atr, {**rule.details, "rule_buy": rule.entry})

    @property
    def exit_policy(self) -> ExitPolicy:
        return self.rule_strategy.exit_policy
