"""The position job: stops, targets and trailing stops of open positions, sold through the execution path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from src.api.interfaces import IExchangeClient
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.risk.models import ExitSignal
from src.trading.pipeline.portfolio import Portfolio, load_portfolio
from src.trading.repository import ITradingRepository
from src.trading.results import ExecutionResult
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

ErrorLogger = Callable[[str, BaseException, dict[str, Any]], Awaitable[None]]


@dataclass(slots=True)
class ExitReport:
    symbol: str
    reason: str
    result: ExecutionResult | None
    error: str | None = None


async def exit_due_positions(
    *,
    exchange: IExchangeClient,
    positions: PositionService,
    risk: RiskManager,
    trading: TradingService,
    repository: ITradingRepository,
    clock: Callable[[], datetime],
    log_error: ErrorLogger,
) -> list[ExitReport]:
    """Mark the open positions at the latest prices and sell those whose exit is due."""
    open_positions = await positions.open_positions()
    if not open_positions:
        return []
    now = clock()
    symbols = sorted({p.symbol for p in open_positions})
    prices = {t.symbol: t.trade_price for t in await exchange.get_tickers(symbols)}
    marked = []
    for position in open_positions:
        price = prices.get(position.symbol)
        updated = await positions.mark(position.symbol, price) if price is not None else None
        marked.append(updated or position)
    exits = risk.exits_due(marked, prices, now)
    if not exits:
        return []
    portfolio = await load_portfolio(exchange, now)
    amounts = {p.symbol: p.amount for p in marked}
    return [
        await _exit(trading, repository, log_error, exit_signal, portfolio, amounts[exit_signal.symbol])
        for exit_signal in exits
    ]


async def _exit(
    trading: TradingService,
    repository: ITradingRepository,
    log_error: ErrorLogger,
    exit_signal: ExitSignal,
    portfolio: Portfolio,
    amount: Decimal,
) -> ExitReport:
    symbol = exit_signal.symbol
    reason = f"exit: {exit_signal.reason.value} (price {exit_signal.price}, level {exit_signal.trigger_price})"
    holding = portfolio.holding(symbol)
    if holding is None:
        await repository.log_event(
            "warning", "exit due but nothing held at the exchange", {"symbol": symbol, "reason": reason}
        )
        return ExitReport(symbol, reason, None, error="no balance to sell")
    try:
        result = await trading.market_sell(
            symbol,
            min(amount, holding.volume),  # the position, never coins the bot did not buy
            reason=reason,
            cycle_id=None,
            exit_reason=exit_signal.reason,
        )
    except Exception as exc:
        await log_error("exit order failed", exc, {"symbol": symbol, "reason": reason})
        return ExitReport(symbol, reason, None, error=str(exc))
    log.info("position.exit", symbol=symbol, reason=reason, status=result.status.value)
    return ExitReport(symbol, reason, result)


async def exit_position(
    trading: TradingService,
    repository: ITradingRepository,
    log_error: ErrorLogger,
    exit_signal: ExitSignal,
    portfolio: Portfolio,
    amount: Decimal,
) -> ExitReport:
    """Sell one position for ``exit_signal`` by the position job's own step (never more than the exchange holds)."""
    return await _exit(trading, repository, log_error, exit_signal, portfolio, amount)
