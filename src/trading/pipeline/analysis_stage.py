"""The analysis stage: the strategy proposes, the quick filter, the validator, risk and liquidity may turn it
into a hold.

The trading strategy (``TRADING_STRATEGY``) decides by its contract on the last complete bar: a buy on an entry
when flat, a sell on an exit signal when held, else hold. A proposed buy is gated by the quick filter's rule stage
(always) and, when the ``ai`` strategy trades, confirmed by the adviser: the adviser is asked only on the candidate
strategy's entry bars (the bars the AI backtest asks on), after the quick filter (rule stage, then AI stage)
passed. AI unavailable (off, no key, budget) is a hold with the reason, never the rules in its place.
The decision is written to ``ai_decisions`` with the market data it saw, counted and announced.
"""

from __future__ import annotations

from typing import Any

from src.ai.context import build_market_context, decided_candle
from src.domain.decisions import Decision, DecisionSource
from src.domain.events import EventKind, NotificationEvent, Notifier
from src.domain.money import ZERO
from src.domain.timeframes import Timeframe
from src.trading.pipeline.analysis import (
    NO_POSITION_VETO,
    QUICK_FILTER_VETO,
    RISK_VETO,
    Analysis,
    Analyzer,
    ai_source,
)
from src.trading.pipeline.context import CycleContext
from src.trading.pipeline.data_stage import MarketView
from src.trading.pipeline.execution import buy_budget
from src.trading.pipeline.observer import PipelineObserver
from src.trading.pipeline.payloads import finite, jsonable, liquidity_payload, position_payload
from src.trading.pipeline.portfolio import Portfolio
from src.trading.pipeline.risk_stage import Verdict
from src.trading.repository import AIDecisionRecord, ITradingRepository
from src.trading.service import TradingService


async def analysis_stage(
    ctx: CycleContext,
    market: MarketView,
    portfolio: Portfolio,
    verdict: Verdict,
    *,
    analyzer: Analyzer,
    trading: TradingService,
    repository: ITradingRepository,
    notifier: Notifier,
    observer: PipelineObserver,
    timeframe: str,
) -> Analysis:
    with ctx.stage("analysis") as stage:
        analysis = await _analyse(analyzer, trading, ctx, market, portfolio, verdict, timeframe)
        stage.outcome = analysis.final_decision
        stage.detail.update(
            ai=_ai_state(analyzer),
            source=analysis.source,
            decision=analysis.decision.value,
            confidence=None if analysis.confidence is None else str(analysis.confidence),
            overridden=analysis.overridden,
            override_reasons=analysis.override_reasons,
            quick_filter=None if analysis.quick_filter is None else analysis.quick_filter.get("passed"),
            liquidity=None if analysis.liquidity is None else analysis.liquidity.reason,
        )
    observer.on_stage("analysis", ctx.stages[-1].duration_ms / 1000)
    observer.on_decision(analysis.source, analysis.final_decision, analysis.confidence)
    for by in analysis.overridden_by:
        observer.on_override(analysis.decision.value, by)
    if analysis.ai is not None and analysis.ai.error:
        observer.on_ai_error(analysis.ai.error.split(":", 1)[0])
    await _save_decision(repository, timeframe, ctx, market, portfolio, verdict, analysis)
    if analysis.final_decision is not Decision.HOLD:  # holds every hour would drown the channel
        notifier.notify(
            NotificationEvent(
                EventKind.AI_DECISION,
                f"{analysis.final_decision.value.upper()} {ctx.symbol} decided",
                {
                    "symbol": ctx.symbol,
                    "decision": analysis.final_decision.value,
                    "confidence": analysis.confidence,
                    "source": analysis.source,
                    "reason": analysis.reason,
                },
                at=ctx.now,
            )
        )
    if analysis.overridden and analysis.decision is Decision.BUY:
        notifier.notify(
            NotificationEvent(
                EventKind.VALIDATOR_OVERRIDE,
                f"Buy of {ctx.symbol} turned into hold",
                {
                    "symbol": ctx.symbol,
                    "decision": analysis.decision.value,  # what was proposed
                    "final_decision": analysis.final_decision.value,  # what is done and counted
                    "reasons": analysis.override_reasons,
                    "source": analysis.source,
                },
                at=ctx.now,
            )
        )
    return analysis


def _ai_state(analyzer: Analyzer) -> str:
    if not analyzer.trades_with_ai:
        return f"not used (strategy {analyzer.strategy.name})"
    return "available" if analyzer.ai_available else analyzer.ai_disabled_reason()


async def _analyse(
    analyzer: Analyzer,
    trading: TradingService,
    ctx: CycleContext,
    market: MarketView,
    portfolio: Portfolio,
    verdict: Verdict,
    timeframe: str,
) -> Analysis:
    holding = portfolio.holding(ctx.symbol)
    indicators, signals, strategy_last = analyzer.technicals(market.candles)
    proposal, reason = analyzer.rules_decision(strategy_last, holding is not None)
    if analyzer.trades_with_ai:
        await analyzer.refresh_ai()  # the budget's state (and its gauges) every cycle, asked or not
    analysis = Analysis(
        proposal, proposal, DecisionSource.RULES, reason, indicators=indicators, signals=signals, strategy=strategy_last
    )
    if proposal is Decision.BUY:
        analysis = await _gate_entry(analyzer, ctx, market, portfolio, analysis, timeframe)
    elif analyzer.trades_with_ai:
        analysis.reason += f" (the adviser is asked only on {analyzer.strategy.name}'s entry bars)"
    analyzer.validate(analysis, market.flash_crash)
    if analysis.final_decision is Decision.BUY and not verdict.allowed:
        # A buy the risk rules (or the bot's state) refuse is a hold: recorded, announced and counted so.
        for reason in verdict.reasons:
            analysis.override(f"{RISK_VETO}: {reason}", RISK_VETO)
    buy_krw = buy_budget(trading, portfolio, verdict) if analysis.final_decision is Decision.BUY else None
    sell_volume = holding.volume if holding is not None else None
    analyzer.assess_liquidity(analysis, market.orderbook, buy_krw, sell_volume)
    if analysis.final_decision is Decision.SELL and holding is None:
        analysis.override("sell without a position: nothing to sell", NO_POSITION_VETO)
    return analysis


async def _gate_entry(
    analyzer: Analyzer,
    ctx: CycleContext,
    market: MarketView,
    portfolio: Portfolio,
    analysis: Analysis,
    timeframe: str,
) -> Analysis:
    """A proposed buy (flat, entry signal): the adviser's availability (ai strategy), the quick filter, the adviser."""
    if analyzer.trades_with_ai and not analyzer.ai_available:
        disabled = analyzer.ai_disabled_reason()
        analysis.decision = analysis.final_decision = Decision.HOLD
        analysis.source = DecisionSource.DISABLED
        analysis.reason = f"{analysis.reason}; not confirmed, the adviser is unavailable ({disabled})"
        analysis.ai_disabled_reason = disabled
        return analysis
    quick = await analyzer.quick_filter_result(ctx.symbol, market.candles)
    analysis.quick_filter = quick
    if quick is not None and not quick.get("passed"):
        failed = ", ".join(quick.get("failed_thresholds") or []) or "thresholds"
        asked = "; the adviser was not asked" if analyzer.trades_with_ai else ""
        analysis.source = DecisionSource.FILTER
        analysis.override(f"quick filter: {quick.get('stage')} stage failed ({failed}){asked}", QUICK_FILTER_VETO)
        return analysis
    if not analyzer.trades_with_ai:
        return analysis
    return await _ai_analysis(
        analyzer, ctx, market, portfolio, analysis.indicators, analysis.signals, analysis.strategy, quick, timeframe
    )


async def _ai_analysis(
    analyzer: Analyzer,
    ctx: CycleContext,
    market: MarketView,
    portfolio: Portfolio,
    indicators: dict[str, float],
    signals: dict[str, Any],
    strategy_last: dict[str, Any],
    quick: dict[str, Any] | None,
    timeframe: str,
) -> Analysis:
    """The adviser's answer on a candidate entry bar that passed the quick filter."""
    holding = portfolio.holding(ctx.symbol)
    context = build_market_context(
        ctx.symbol,
        market.candles,
        bar_seconds=Timeframe(timeframe).seconds,
        price=None if market.price is None else float(market.price),
        strategy_last=strategy_last,
        orderbook_summary=market.orderbook_summary(),
        position=position_payload(holding),
        fear_greed=market.fear_greed,
        quick_filter=quick,
    )
    decision = await analyzer.ask_ai(context)
    return Analysis(
        decision.decision,
        decision.decision,
        ai_source(decision),
        decision.reason,
        confidence=decision.confidence,
        indicators=indicators,
        signals=signals,
        strategy=strategy_last,
        quick_filter=quick,
        ai=decision,
    )


async def _save_decision(
    repository: ITradingRepository,
    timeframe: str,
    ctx: CycleContext,
    market: MarketView,
    portfolio: Portfolio,
    verdict: Verdict,
    analysis: Analysis,
) -> None:
    ai = analysis.ai
    market_data = {
        "timeframe": timeframe,
        "candle": market.last_candle(),
        "price": None if market.price is None else str(market.price),
        "indicators": {k: finite(v) for k, v in analysis.indicators.items()},
        "signals": analysis.signals,
        "strategy": analysis.strategy,
        "quick_filter": analysis.quick_filter,
        "orderbook": market.orderbook_summary(),
        "fear_greed": market.fear_greed,
        "flash_crash": market.flash_crash,
        **market.extra,
        "position": position_payload(portfolio.holding(ctx.symbol)),
        "risk": {
            "buys_allowed": verdict.allowed,
            "reasons": verdict.reasons,
            "max_krw": str(verdict.max_krw),
            "size_krw": str(verdict.size_krw),
        },
        "liquidity": liquidity_payload(analysis),
    }
    record = AIDecisionRecord(
        symbol=ctx.symbol,
        decision=analysis.decision.value,
        final_decision=analysis.final_decision.value,
        source=analysis.source,
        confidence=analysis.confidence,
        reason=analysis.reason,
        market_data=jsonable(market_data),
        overridden=analysis.overridden,
        override_reasons=analysis.override_reasons or None,
        model=ai.model if ai else None,
        prompt_hash=ai.prompt_hash or None if ai else None,
        prompt=ai.prompt if ai else None,
        raw_response=ai.raw_response if ai else None,
        prompt_tokens=ai.prompt_tokens if ai else 0,
        completion_tokens=ai.completion_tokens if ai else 0,
        cost_usd=ai.cost_usd if ai else ZERO,
        error=(ai.error if ai else analysis.ai_disabled_reason),
        cycle_id=ctx.cycle_id,
        created_at=ctx.now,
        candle_at=decided_candle(market.candles),
    )
    await repository.save_ai_decision(record)
