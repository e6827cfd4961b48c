"""Portfolio snapshots: the latest, the history, and the first (a live account's starting equity)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from backend.app.db.queries.paging import Page, Paging, in_range, paged
from backend.app.models import PortfolioSnapshotRow
from src.domain.modes import TradingMode


async def latest_snapshot(connection: AsyncConnection, mode: TradingMode) -> Row[Any] | None:
    query = (
        select(PortfolioSnapshotRow.__table__)
        .where(PortfolioSnapshotRow.mode == mode)
        .order_by(PortfolioSnapshotRow.created_at.desc(), PortfolioSnapshotRow.id.desc())
        .limit(1)
    )
    return (await connection.execute(query)).first()


async def snapshot_history(
    connection: AsyncConnection,
    mode: TradingMode,
    paging: Paging,
    *,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
) -> Page:
    query = select(PortfolioSnapshotRow.__table__).where(
        PortfolioSnapshotRow.mode == mode, *in_range(PortfolioSnapshotRow.created_at, from_date, to_date)
    )
    return await paged(connection, query, PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id, paging)


async def snapshot_at(session: AsyncSession, mode: TradingMode, at: datetime) -> PortfolioSnapshotRow | None:
    """The newest snapshot taken at or before ``at``."""
    return await session.scalar(
        select(PortfolioSnapshotRow)
        .where(PortfolioSnapshotRow.mode == mode, PortfolioSnapshotRow.created_at <= at)
        .order_by(PortfolioSnapshotRow.created_at.desc(), PortfolioSnapshotRow.id.desc())
        .limit(1)
    )


async def equity_curve(session: AsyncSession, mode: TradingMode) -> list[Decimal]:
    """Every snapshot's total value, oldest first."""
    query = (
        select(PortfolioSnapshotRow.total_value_krw)
        .where(PortfolioSnapshotRow.mode == mode)
        .order_by(PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id)
    )
    return list(await session.scalars(query))


async def first_snapshot_equity(session: AsyncSession, mode: TradingMode) -> Decimal | None:
    """The total value of the first snapshot recorded in ``mode`` (a live account's starting equity)."""
    return await session.scalar(
        select(PortfolioSnapshotRow.total_value_krw)
        .where(PortfolioSnapshotRow.mode == mode)
        .order_by(PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id)
        .limit(1)
    )
