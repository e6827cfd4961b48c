"""What the daily report and the replay summary read: trades summed, positions, decisions and errors counted.
One query per figure, whichever of the two asks for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from backend.app.models import (
    AIDecisionRow,
    OrderRow,
    PositionRow,
    RiskStateRow,
    SystemLogRow,
    TradeRow,
    TradingCycleRow,
)
from src.ai.models import AIPurpose
from src.domain.modes import TradingMode
from src.domain.money import ZERO
from src.domain.orders import Side
from src.risk.store import PositionStatus

CYCLE_DECISION = AIDecisionRow.purpose == AIPurpose.DECISION


@dataclass(slots=True)
class TradeSums:
    """Trades of one mode in a window, any status. Summed in Python: exact ``Decimal`` on SQLite too."""

    trades: int = 0
    buys: int = 0
    sells: int = 0
    volume_krw: Decimal = ZERO
    fees_krw: Decimal = ZERO
    realized_pnl_krw: Decimal = ZERO


def _window(column: Any, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    """``since <= column <= until``, either end open when ``None``."""
    conditions: list[ColumnElement[bool]] = []
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column <= until)
    return conditions


async def trade_sums(
    session: AsyncSession, mode: TradingMode, since: datetime | None = None, until: datetime | None = None
) -> TradeSums:
    query = select(TradeRow.side, TradeRow.total, TradeRow.fee, TradeRow.realized_pnl).where(
        TradeRow.mode == mode, *_window(TradeRow.created_at, since, until)
    )
    sums = TradeSums()
    for side, total, fee, pnl in await session.execute(query):
        sums.trades += 1
        sums.buys += side is Side.BUY
        sums.sells += side is Side.SELL
        sums.volume_krw += total
        sums.fees_krw += fee
        if pnl is not None:
            sums.realized_pnl_krw += pnl
    return sums


async def _count_by(session: AsyncSession, column: Any, *where: ColumnElement[bool]) -> dict[str, int]:
    query = select(column, func.count()).where(*where).group_by(column)
    return {str(key): int(count) for key, count in (await session.execute(query)).all()}


async def open_position_symbols(session: AsyncSession, mode: TradingMode) -> list[str]:
    query = select(PositionRow.symbol).where(PositionRow.mode == mode, PositionRow.status == PositionStatus.OPEN)
    return sorted(await session.scalars(query))


async def exits_by_reason(session: AsyncSession, mode: TradingMode) -> dict[str, int]:
    """Closed positions counted by the exit that closed them."""
    closed = (PositionRow.mode == mode, PositionRow.status == PositionStatus.CLOSED)
    return await _count_by(session, PositionRow.exit_reason, *closed)


async def decisions_by_source(
    session: AsyncSession, since: datetime | None = None, until: datetime | None = None
) -> dict[str, int]:
    """The trading cycle's AI decisions counted by who decided (model, rules, cache...)."""
    window = _window(AIDecisionRow.created_at, since, until)
    return await _count_by(session, AIDecisionRow.source, *window, CYCLE_DECISION)


async def decisions_by_final(session: AsyncSession) -> dict[str, int]:
    """The trading cycle's AI decisions counted by the decision that stood after the validator."""
    return await _count_by(session, AIDecisionRow.final_decision, CYCLE_DECISION)


async def model_calls(session: AsyncSession) -> tuple[dict[str, int], Decimal]:
    """Requests that reached the model, counted by purpose, and what they cost in USD."""
    reached = or_(AIDecisionRow.prompt_tokens > 0, AIDecisionRow.completion_tokens > 0)
    calls = await _count_by(session, AIDecisionRow.purpose, reached)
    costs = await session.scalars(select(AIDecisionRow.cost_usd).where(reached))
    return calls, sum(costs, ZERO)


async def cycles_by_status(session: AsyncSession, mode: TradingMode) -> dict[str, int]:
    return await _count_by(session, TradingCycleRow.status, TradingCycleRow.mode == mode)


async def orders_by_status(session: AsyncSession, mode: TradingMode) -> dict[str, int]:
    return await _count_by(session, OrderRow.status, OrderRow.mode == mode)


async def order_and_position_counts(session: AsyncSession, mode: TradingMode) -> tuple[int, int]:
    orders = await session.scalar(select(func.count()).where(OrderRow.mode == mode))
    positions = await session.scalar(select(func.count()).where(PositionRow.mode == mode))
    return int(orders or 0), int(positions or 0)


async def error_log_count(session: AsyncSession, since: datetime, until: datetime) -> int:
    """System log lines at ``error`` or ``critical`` in ``since <= created_at <= until``."""
    query = select(func.count()).where(
        SystemLogRow.level.in_(("error", "critical")), *_window(SystemLogRow.created_at, since, until)
    )
    return int(await session.scalar(query) or 0)


async def peak_equity(session: AsyncSession, mode: TradingMode) -> Decimal | None:
    """The highest equity the risk manager has seen in ``mode``."""
    return await session.scalar(select(RiskStateRow.peak_equity).where(RiskStateRow.mode == mode))
