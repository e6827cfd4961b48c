"""AI decisions as the API lists them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.db.queries.paging import Page, Paging, in_range, paged
from backend.app.models import AIDecisionRow
from src.ai.models import AIPurpose


async def list_ai_decisions(
    connection: AsyncConnection,
    paging: Paging,
    *,
    symbol: str | None = None,
    decision: str | None = None,
    final_decision: str | None = None,
    overridden: bool | None = None,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
    purpose: str | None = AIPurpose.DECISION,
) -> Page:
    """The trading cycle's decisions by default; ``purpose='filter'`` lists the quick filter's model calls."""
    query = select(AIDecisionRow.__table__).where(*in_range(AIDecisionRow.created_at, from_date, to_date))
    if purpose is not None:
        query = query.where(AIDecisionRow.purpose == purpose)
    if symbol is not None:
        query = query.where(AIDecisionRow.symbol == symbol)
    if decision is not None:
        query = query.where(AIDecisionRow.decision == decision)
    if final_decision is not None:
        query = query.where(AIDecisionRow.final_decision == final_decision)
    if overridden is not None:
        query = query.where(AIDecisionRow.overridden.is_(overridden))
    return await paged(connection, query, AIDecisionRow.created_at, AIDecisionRow.id, paging)


async def decisions_by_candle(
    connection: AsyncConnection, symbol: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The trading cycle's decisions of ``symbol`` whose candle opened in ``[start, end)``, oldest candle first
    (and, for one candle recorded twice, in the order written). Through the index ``(symbol, candle_at)``."""
    table = AIDecisionRow.__table__
    query = (
        select(table)
        .where(
            AIDecisionRow.purpose == AIPurpose.DECISION,
            AIDecisionRow.symbol == symbol,
            AIDecisionRow.candle_at >= start,
            AIDecisionRow.candle_at < end,
        )
        .order_by(AIDecisionRow.candle_at, AIDecisionRow.id)
    )
    return [dict(row) for row in (await connection.execute(query)).mappings()]


async def ai_spend_usd(connection: AsyncConnection, since: datetime, until: datetime) -> tuple[int, Decimal]:
    """Model calls (requests that spent tokens, every purpose) with ``since <= created_at < until``, and their
    cost in USD, added up exactly in Python (money is text on SQLite)."""
    spent_tokens = or_(AIDecisionRow.prompt_tokens > 0, AIDecisionRow.completion_tokens > 0)
    query = select(AIDecisionRow.cost_usd).where(
        AIDecisionRow.created_at >= since, AIDecisionRow.created_at < until, spent_tokens
    )
    costs = [Decimal(str(cost)) for cost in (await connection.execute(query)).scalars()]
    return len(costs), sum(costs, Decimal("0"))
