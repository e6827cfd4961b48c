"""Totals the API's ``/metrics`` derives from the database, read incrementally by row id (a scrape reads only
the rows written since the last)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.models import AIDecisionRow, TradeRow
from src.ai.models import AIPurpose
from src.domain.money import ZERO
from src.domain.orders import TradeStatus


# --- metrics: totals derived from the database ------------------------------------------------------
@dataclass(slots=True)
class TradeTotals:
    count: int = 0
    volume_krw: Decimal = ZERO
    fee_krw: Decimal = ZERO


TradeKey = tuple[str, str, str]  # symbol, side, mode


async def max_ids(connection: AsyncConnection) -> tuple[int, int]:
    trades = await connection.scalar(select(func.coalesce(func.max(TradeRow.id), 0)))
    decisions = await connection.scalar(select(func.coalesce(func.max(AIDecisionRow.id), 0)))
    return int(trades or 0), int(decisions or 0)


async def trade_totals_between(
    connection: AsyncConnection, after_id: int, up_to_id: int
) -> dict[TradeKey, TradeTotals]:
    """Totals of completed trades with ``after_id < id <= up_to_id``, by symbol, side and mode."""
    where = (TradeRow.id > after_id, TradeRow.id <= up_to_id, TradeRow.status == TradeStatus.COMPLETED)
    keys = (TradeRow.symbol, TradeRow.side, TradeRow.mode)
    totals: dict[TradeKey, TradeTotals] = {}
    if connection.dialect.name == "postgresql":
        query = select(*keys, func.count(), func.sum(TradeRow.total), func.sum(TradeRow.fee)).where(*where)
        for symbol, side, mode, count, volume, fee in await connection.execute(query.group_by(*keys)):
            totals[(symbol, str(side), str(mode))] = TradeTotals(count, volume or ZERO, fee or ZERO)
        return totals
    for symbol, side, mode, total, fee in await connection.execute(
        select(*keys, TradeRow.total, TradeRow.fee).where(*where)
    ):
        entry = totals.setdefault((symbol, str(side), str(mode)), TradeTotals())
        entry.count += 1
        entry.volume_krw += total
        entry.fee_krw += fee
    return totals


async def decision_counts_between(
    connection: AsyncConnection, after_id: int, up_to_id: int
) -> dict[tuple[str, str], int]:
    """The cycle's AI decisions with ``after_id < id <= up_to_id``, counted by symbol and final decision."""
    keys = (AIDecisionRow.symbol, AIDecisionRow.final_decision)
    where = (AIDecisionRow.id > after_id, AIDecisionRow.id <= up_to_id, AIDecisionRow.purpose == AIPurpose.DECISION)
    query = select(*keys, func.count()).where(*where).group_by(*keys)
    return {(symbol, decision): count for symbol, decision, count in await connection.execute(query)}


async def latest_confidence_between(connection: AsyncConnection, after_id: int, up_to_id: int) -> dict[str, Decimal]:
    """The confidence of the newest decision per symbol among ``after_id < id <= up_to_id``."""
    newest = (
        select(func.max(AIDecisionRow.id))
        .where(AIDecisionRow.id > after_id, AIDecisionRow.id <= up_to_id, AIDecisionRow.purpose == AIPurpose.DECISION)
        .group_by(AIDecisionRow.symbol)
    )
    query = select(AIDecisionRow.symbol, AIDecisionRow.confidence).where(AIDecisionRow.id.in_(newest))
    return {symbol: confidence for symbol, confidence in await connection.execute(query) if confidence is not None}


def merge_counts(target: dict[Any, Any], increments: dict[Any, Any]) -> None:
    for key, value in increments.items():
        if isinstance(value, TradeTotals):
            entry = target.setdefault(key, TradeTotals())
            entry.count += value.count
            entry.volume_krw += value.volume_krw
            entry.fee_krw += value.fee_krw
        else:
            target[key] = target.get(key, 0) + value
