"""The analysis stage's parts: indicators and signals, the trading strategy's last bar, the quick filter, the AI
adviser (when the ``ai`` strategy trades), the validator and the liquidity check, ending in one decision with
everything that led to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from src.ai.models import AIDecision, MarketContext
from src.ai.service import AIService
from src.ai.validator import AIDecisionValidator
from src.api.interfaces import Orderbook
from src.backtesting.quick_filter import QuickBacktestFilter
from src.domain.decisions import Decision, DecisionSource
from src.domain.orders import Side
from src.strategy.contract import Strategy
from src.trading.indicators import get_latest_indicators
from src.trading.liquidity import LiquidityAnalyzer, LiquidityAssessment
from src.trading.signal_analyzer import SignalAnalyzer
from src.utils.logger import get_logger

log = get_logger(__name__)

# Who may turn a decision into a hold (the ``by`` label of ``ai_decision_overrides_total``).
VALIDATOR_VETO = "validator"
RISK_VETO = "risk"  # a risk rule (or the paused bot) refused the buy; its reasons start with "risk: "
LIQUIDITY_VETO = "liquidity"
NO_POSITION_VETO = "no_position"  # a sell with nothing to sell
QUICK_FILTER_VETO = "quick_filter"  # a stage of the quick backtest filter failed (the decision's source is filter)
OVERRIDERS = (VALIDATOR_VETO, RISK_VETO, LIQUIDITY_VETO, NO_POSITION_VETO, QUICK_FILTER_VETO)


@dataclass(slots=True)
class Analysis:
    """The decision of one cycle for one symbol and what it rests on (stored in ``ai_decisions``)."""

    decision: Decision  # what the adviser (or the rules) proposed
    final_decision: Decision  # after the validator, the risk rules and liquidity: what is done and counted
    source: DecisionSource
    reason: str
    confidence: Decimal | None = None
    indicators: dict[str, float] = field(default_factory=dict)
    signals: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, Any] = field(default_factory=dict)
    quick_filter: dict[str, Any] | None = None
    ai: AIDecision | None = None
    overridden: bool = False
    override_reasons: list[str] = field(default_factory=list)
    liquidity: LiquidityAssessment | None = None
    ai_disabled_reason: str | None = None
    overridden_by: list[str] = field(default_factory=list)  # OVERRIDERS that turned the decision into a hold

    @property
    def risk_vetoed(self) -> bool:
        """A buy the risk rules (or the paused bot) turned into a hold."""
        return RISK_VETO in self.overridden_by

    def override(self, reason: str, by: str) -> None:
        """The final decision becomes hold; ``by`` (one of ``OVERRIDERS``) and ``reason`` are recorded."""
        self.final_decision = Decision.HOLD
        self.overridden = True
        self.override_reasons.append(reason)
        if by not in self.overridden_by:
            self.overridden_by.append(by)


class Analyzer:
    """Stateless apart from the quick filter's per-bar cache; one instance serves every symbol.

    ``strategy`` is the strategy that trades (``TRADING_STRATEGY``); with ``trades_with_ai`` (``TRADING_STRATEGY=ai``)
    it is the candidate strategy whose entry bars the adviser confirms."""

    def __init__(
        self,
        strategy: Strategy,
        ai: AIService | None,
        validator: AIDecisionValidator,
        liquidity: LiquidityAnalyzer,
        quick_filter: QuickBacktestFilter | None = None,
        signal_analyzer: SignalAnalyzer | None = None,
        ai_off_reason: str | None = None,
        trades_with_ai: bool = False,
    ) -> None:
        self.strategy = strategy
        self.trades_with_ai = trades_with_ai
        self.ai = ai
        self.validator = validator
        self.liquidity = liquidity
        self.quick_filter = quick_filter
        self.signal_analyzer = signal_analyzer or SignalAnalyzer()
        self.ai_off_reason = ai_off_reason

    @property
    def ai_available(self) -> bool:
        return self.ai is not None and self.ai.available

    async def refresh_ai(self) -> None:
        """Re-read the AI spend before deciding whether to ask (a failed read keeps the last state)."""
        if self.ai is None:
            return
        try:
            await self.ai.check_budget(reread=True)
        except Exception as exc:
            log.warning("ai.budget_check_failed", error=str(exc))

    def ai_disabled_reason(self) -> str:
        if self.ai_off_reason:
            return f"disabled: {self.ai_off_reason}"
        if self.ai is None:
            return "disabled: no AI service configured"
        if self.ai.off_reason:
            return f"disabled: {self.ai.off_reason}"
        return "disabled: no OPENAI_API_KEY configured or AI_ENABLED is false"

    def technicals(self, candles: pd.DataFrame) -> tuple[dict[str, float], dict[str, Any], dict[str, Any]]:
        indicators = get_latest_indicators(candles)
        signals = self.signal_analyzer.summary(self.signal_analyzer.analyze_signals(indicators))
        strategy_last = self.strategy.generate_signals(candles).latest()
        return indicators, signals, strategy_last

    def rules_decision(self, strategy_last: dict[str, Any], holding: bool) -> tuple[Decision, str]:
        """The strategy contract on the last bar: buy on an entry when flat, sell on an exit signal when held."""
        name = self.strategy.name
        met = [k for k, v in strategy_last.items() if k not in ("buy", "sell") and v is True]
        if strategy_last.get("buy") and not holding:
            return Decision.BUY, f"{name}: entry signal ({', '.join(met) or 'entry'})"
        if strategy_last.get("sell") and holding:
            return Decision.SELL, f"{name}: exit signal"
        if holding:
            return Decision.HOLD, f"{name}: holding the position (no exit signal; stop, target and time-out apply)"
        unmet = [k for k, v in strategy_last.items() if k not in ("buy", "sell") and v is False]
        return Decision.HOLD, f"{name}: no entry" + (f" (not met: {', '.join(unmet)})" if unmet else "")

    async def quick_filter_result(self, symbol: str, candles: pd.DataFrame) -> dict[str, Any] | None:
        """The quick filter on the trading strategy (its AI stage only as ``quick_filter_for`` built it)."""
        if self.quick_filter is None:
            return None
        result = (await self.quick_filter.aevaluate(symbol, candles)).to_dict()
        result["blocked_by"] = None if result.get("passed") else result.get("stage")  # which stage failed
        return result

    async def ask_ai(self, context: MarketContext) -> AIDecision:
        assert self.ai is not None
        return await self.ai.decide(context)

    def validate(self, analysis: Analysis, flash_crash: bool) -> None:
        """Buys of the adviser go through the validator; rule buys rest on the strategy's own gates."""
        if analysis.ai is None or analysis.final_decision is not Decision.BUY:
            return
        outcome = self.validator.validate(analysis.ai, analysis.indicators, flash_crash)
        if outcome.overridden:
            for reason in outcome.reasons:
                analysis.override(reason, VALIDATOR_VETO)

    def assess_liquidity(
        self, analysis: Analysis, orderbook: Orderbook | None, krw_amount: Decimal | None, volume: Decimal | None
    ) -> None:
        side = {Decision.BUY: Side.BUY, Decision.SELL: Side.SELL}.get(analysis.final_decision)
        if side is None:
            return
        if orderbook is None:
            if side is Side.BUY:
                analysis.override("liquidity: no orderbook available", LIQUIDITY_VETO)
            return
        if side is Side.BUY and (krw_amount is None or krw_amount <= 0):
            return
        if side is Side.SELL and (volume is None or volume <= 0):
            return
        if side is Side.BUY:
            assessment = self.liquidity.assess(orderbook, side, krw_amount=krw_amount)
        else:
            assessment = self.liquidity.assess(orderbook, side, volume=volume)
        analysis.liquidity = assessment
        if not assessment.allowed and side is Side.BUY:
            analysis.override(f"liquidity: {assessment.reason}", LIQUIDITY_VETO)


def ai_source(decision: AIDecision) -> DecisionSource:
    return DecisionSource(decision.source)
