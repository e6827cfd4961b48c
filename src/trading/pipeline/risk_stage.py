"""The risk stage: the account as the exchange reports it, and whether (and for how much) a buy may follow."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from src.api.interfaces import IExchangeClient
from src.domain.decisions import PositionSizing
from src.domain.money import ZERO
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.risk.models import PortfolioView, TradeStats
from src.trading.market_status import MarketStatusBook
from src.trading.pipeline.context import CycleContext, StageOutcome
from src.trading.pipeline.observer import PipelineObserver
from src.trading.pipeline.portfolio import Portfolio, load_portfolio


@dataclass(slots=True)
class Verdict:
    allowed: bool  # risk rules and the bot's state allow a new buy
    reasons: list[str]
    max_krw: Decimal
    size_krw: Decimal  # the order total the sizing rule chose


async def risk_stage(
    ctx: CycleContext,
    allow_buys: bool,
    *,
    exchange: IExchangeClient,
    positions: PositionService,
    risk: RiskManager,
    observer: PipelineObserver,
    markets: MarketStatusBook | None = None,
) -> tuple[Portfolio, Verdict]:
    with ctx.stage("risk") as stage:
        portfolio = await load_portfolio(exchange, ctx.now)
        open_positions = await positions.open_positions()
        view = PortfolioView.of(
            portfolio.cash_krw,
            {symbol: holding.value_krw for symbol, holding in portfolio.holdings.items()},
            len(open_positions),
        )
        verdict = await risk.evaluate_entry(ctx.symbol, view, ctx.now)
        reasons = list(verdict.reasons)
        flag = markets.entry_refusal(ctx.symbol) if markets is not None else None
        if flag is not None:  # Upbit's own warning or caution on the market: a hard gate
            reasons.append(flag)
        entry_allowed = verdict.allowed and flag is None
        size = risk.size_entry(verdict, view, await _trade_stats(risk)) if entry_allowed else ZERO
        if not allow_buys:
            reasons.append("paused: the bot is paused, no new buys")
        allowed = entry_allowed and allow_buys
        stage.outcome = StageOutcome.BUYS_ALLOWED if allowed else StageOutcome.BUYS_BLOCKED
        stage.detail.update(
            equity_krw=str(portfolio.equity_krw),
            cash_krw=str(portfolio.cash_krw),
            max_krw=str(verdict.max_krw),
            size_krw=str(size),
            reasons=reasons,
            holding=ctx.symbol in portfolio.holdings,
            open_positions=len(open_positions),
        )
    observer.on_stage("risk", ctx.stages[-1].duration_ms / 1000)
    return portfolio, Verdict(allowed, reasons, verdict.max_krw, size)


async def _trade_stats(risk: RiskManager) -> TradeStats | None:
    """Closed-position statistics, which only half-Kelly sizing reads."""
    if risk.config.position_sizing is PositionSizing.HALF_KELLY:
        return await risk.trade_stats()
    return None
