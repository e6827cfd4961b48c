"""The equity a mode's return is measured from, as recorded: its first portfolio snapshot."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.models import PortfolioSnapshotRow
from src.config.settings import TradingMode


async def first_snapshot_equity(sessions: async_sessionmaker[AsyncSession], mode: TradingMode) -> Decimal | None:
    """``total_value_krw`` of the mode's first portfolio snapshot, or ``None`` before there is one."""
    async with sessions() as session:
        return await session.scalar(
            select(PortfolioSnapshotRow.total_value_krw)
            .where(PortfolioSnapshotRow.mode == mode)
            .order_by(PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id)
            .limit(1)
        )
