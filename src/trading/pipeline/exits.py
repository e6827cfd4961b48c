"""Exits of open positions: the position job (``exit_due_positions``, every few minutes on the REST ticker) and the
real-time path (``exit_at_price``, a price tick that crossed a level), both sold through ``_exit`` and
``TradingService.market_sell``, the exactly-once order path.

Never twice for one crossing: both re-read the position from the store before selling (a closed position is not
sold again) and send nothing while a sell order of the coin is unsettled (its outcome unknown, or resting):
reconciliation is asked first, and a sell still unsettled after it blocks a new one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from src.api.interfaces import Balance, IExchangeClient
from src.domain.orders import Side
from src.position.service import PositionService
from src.risk.manager import RiskManager
from src.risk.models import ExitSignal
from src.trading.pipeline.portfolio import load_portfolio
from src.trading.repository import ITradingRepository
from src.trading.results import ExecutionResult
from src.trading.service import TradingService
from src.utils.logger import get_logger

log = get_logger(__name__)

ErrorLogger = Callable[[str, BaseException, dict[str, Any]], Awaitable[None]]
SELL_IN_FLIGHT = "a sell order of this coin is still unsettled: nothing sent"


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
    unsettled = await _unsettled_sells(positions)
    amounts = {p.symbol: p.amount for p in marked}
    reports = []
    for exit_signal in exits:
        symbol = exit_signal.symbol
        holding = portfolio.holding(symbol)
        held = None if holding is None else holding.volume
        reports.append(
            await _exit(
                trading, positions, repository, log_error, exit_signal, held, amounts[symbol], symbol in unsettled
            )
        )
    return reports


async def exit_at_price(
    symbol: str,
    price: Decimal,
    *,
    highest: Decimal | None,
    exchange: IExchangeClient,
    positions: PositionService,
    risk: RiskManager,
    trading: TradingService,
    repository: ITradingRepository,
    clock: Callable[[], datetime],
    log_error: ErrorLogger,
) -> ExitReport | None:
    """The real-time exit: a tick at ``price`` crossed a level of ``symbol``'s position (``highest``: the highest
    price seen since the last mark, for the trailing stop). The position is read again and the one exit rule
    asked again on it (``RiskManager.exits_due``); ``None`` when the position is closed or no exit is due any more
    (the levels moved). The sell is the position job's (``_exit``). The position, the unsettled orders and the
    balances are read at once (one round trip's time): this is the path whose latency counts."""
    position, unsettled, balances = await asyncio.gather(
        positions.get(symbol), _unsettled_sells(positions), exchange.get_balances()
    )
    if position is None:
        return None
    if highest is not None and highest > position.highest_price:
        position = replace(position, highest_price=highest)
    exits = risk.exits_due([position], {symbol: price}, clock())
    if not exits:
        if highest is not None:
            await positions.mark(symbol, highest)  # the ratchet is kept; a sale closes the position anyway
        return None
    held = _held(balances, symbol)
    return await _exit(trading, positions, repository, log_error, exits[0], held, position.amount, symbol in unsettled)


async def _unsettled_sells(positions: PositionService) -> set[str]:
    """The coins with a sell order written and not settled (``pending``: its answer lost; ``open``)."""
    orders = await positions.store.list_unsettled_orders(positions.mode)
    return {o.symbol for o in orders if o.side is Side.SELL}


async def _exit(
    trading: TradingService,
    positions: PositionService,
    repository: ITradingRepository,
    log_error: ErrorLogger,
    exit_signal: ExitSignal,
    held: Decimal | None,
    amount: Decimal,
    sell_unsettled: bool,
) -> ExitReport:
    symbol = exit_signal.symbol
    reason = f"exit: {exit_signal.reason.value} (price {exit_signal.price}, level {exit_signal.trigger_price})"
    if sell_unsettled:  # an earlier sell's outcome is unknown: ask the exchange before anything is sent
        await trading.reconcile()
        if symbol in await _unsettled_sells(positions):
            log.info("position.exit_in_flight", symbol=symbol, reason=reason)
            return ExitReport(symbol, reason, None, error=SELL_IN_FLIGHT)
        current = await positions.get(symbol)
        if current is None:  # the earlier sell filled: the position is closed
            return ExitReport(symbol, reason, None, error="position closed meanwhile")
        amount = min(amount, current.amount)
    if held is None:
        await repository.log_event(
            "warning", "exit due but nothing held at the exchange", {"symbol": symbol, "reason": reason}
        )
        return ExitReport(symbol, reason, None, error="no balance to sell")
    try:
        result = await trading.market_sell(
            symbol,
            min(amount, held),  # the position, never coins the bot did not buy
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
    exit_signal: ExitSignal,
    amount: Decimal,
    *,
    exchange: IExchangeClient,
    positions: PositionService,
    trading: TradingService,
    repository: ITradingRepository,
    log_error: ErrorLogger,
) -> ExitReport:
    """Sell one position for ``exit_signal`` by the position job's own step: never more than the exchange holds,
    never beside an unsettled sell of the coin (used for a held coin Upbit flags, ``MARKET_WARNING_ACTION=exit``)."""
    balances, unsettled = await asyncio.gather(exchange.get_balances(), _unsettled_sells(positions))
    symbol = exit_signal.symbol
    held = _held(balances, symbol)
    return await _exit(trading, positions, repository, log_error, exit_signal, held, amount, symbol in unsettled)


def _held(balances: list[Balance], symbol: str) -> Decimal | None:
    """The volume of ``symbol``'s coin the exchange holds for the account (None when none)."""
    currency = symbol.split("-", 1)[-1]
    return next((b.total for b in balances if b.currency == currency and b.total > 0), None)
