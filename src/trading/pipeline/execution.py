"""The execution stage: the final decision becomes market orders through ``TradingService`` (exactly once)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from src.domain.decisions import Decision
from src.domain.exits import ExitReason
from src.domain.money import KRW_QUANTUM
from src.position.service import PositionService
from src.trading.pipeline.analysis import Analysis
from src.trading.pipeline.context import CycleContext, CycleOutcome, ExecutionOutcome
from src.trading.pipeline.observer import PipelineObserver
from src.trading.pipeline.payloads import finite
from src.trading.pipeline.portfolio import Portfolio
from src.trading.pipeline.risk_stage import Verdict
from src.trading.results import ExecutionResult
from src.trading.service import TradingService


def buy_budget(trading: TradingService, portfolio: Portfolio, verdict: Verdict) -> Decimal:
    """The risk manager's size, capped so that total plus fee fits the available KRW."""
    return trading.buy_total_for(portfolio.krw_available, verdict.size_krw)


async def execution_stage(
    ctx: CycleContext,
    analysis: Analysis,
    portfolio: Portfolio,
    verdict: Verdict,
    dry_run: bool,
    *,
    trading: TradingService,
    positions: PositionService,
    observer: PipelineObserver,
) -> list[ExecutionResult]:
    decision = analysis.final_decision
    if decision is Decision.HOLD and analysis.risk_vetoed:
        ctx.skip("execution", "risk veto: " + "; ".join(verdict.reasons))
        ctx.outcome = CycleOutcome.BUY_VETOED
        return []
    if decision is Decision.HOLD:
        ctx.skip("execution", "hold")
        ctx.outcome = CycleOutcome.HOLD
        return []
    if dry_run:
        ctx.skip("execution", f"dry run: would {decision.value}")
        ctx.outcome = CycleOutcome.dry_run(decision)
        return []
    with ctx.stage("execution") as stage:
        if decision is Decision.BUY:
            results = await _buy(trading, ctx, analysis, portfolio, verdict, stage.detail)
        else:
            results = await _sell(trading, positions, ctx, analysis, portfolio)
        outcome = ExecutionOutcome(decision, frozenset(r.status for r in results))
        stage.outcome = ctx.outcome = outcome
        stage.detail["orders"] = [r.to_dict() for r in results]
    observer.on_stage("execution", ctx.stages[-1].duration_ms / 1000)
    return results


async def _buy(
    trading: TradingService,
    ctx: CycleContext,
    analysis: Analysis,
    portfolio: Portfolio,
    verdict: Verdict,
    detail: dict[str, Any],
) -> list[ExecutionResult]:
    total = buy_budget(trading, portfolio, verdict)
    problem = trading.check_min_total(total)
    if problem:
        detail["skipped"] = problem
        return []
    children = 1
    if analysis.liquidity is not None and analysis.liquidity.split_into > 1:
        children = analysis.liquidity.split_into
    child_total = (total / children).quantize(KRW_QUANTUM)
    reason = f"{analysis.source}: {analysis.reason}"[:1000]
    atr = finite(analysis.indicators.get("atr_14"))
    atr_krw = Decimal(str(atr)) if atr is not None and atr > 0 else None
    results = []
    for _ in range(children):
        result = await trading.market_buy(ctx.symbol, child_total, reason=reason, cycle_id=ctx.cycle_id, atr=atr_krw)
        results.append(result)
        if not result.filled:
            break
    return results


async def _sell(
    trading: TradingService, positions: PositionService, ctx: CycleContext, analysis: Analysis, portfolio: Portfolio
) -> list[ExecutionResult]:
    """Sell the bot's position (never more than the exchange holds); the whole balance when untracked."""
    holding = portfolio.holding(ctx.symbol)
    if holding is None:
        return []
    position = await positions.get(ctx.symbol)
    volume = min(position.amount, holding.volume) if position is not None else holding.volume
    reason = f"{analysis.source}: {analysis.reason}"[:1000]
    sold = await trading.market_sell(
        ctx.symbol, volume, reason=reason, cycle_id=ctx.cycle_id, exit_reason=ExitReason.SIGNAL
    )
    return [sold]
