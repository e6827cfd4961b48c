"""Positions as Telegram reads them: the position an order's fills were applied to (``position_fills``)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.models import PositionFillRow, PositionRow


async def position_of_order(connection: Any, identifier: str) -> tuple[datetime, Decimal] | None:
    """(entry time, average entry price) of the position the order ``identifier`` was applied to."""
    query = (
        select(PositionRow.entry_at, PositionRow.avg_entry_price)
        .join(PositionFillRow, PositionFillRow.position_id == PositionRow.id)
        .where(PositionFillRow.order_identifier == identifier)
        .limit(1)
    )
    row = (await connection.execute(query)).first()
    return None if row is None else (row.entry_at, row.avg_entry_price)


class SqlTradeDetails:
    """What a sell's message adds from the database: when the sold position was entered, and at what price."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def __call__(self, identifier: str) -> dict[str, Any]:
        async with self._sessions() as session:
            found = await position_of_order(await session.connection(), identifier)
        if found is None:
            return {}
        entry_at, entry_price = found
        return {"entry_at": entry_at, "entry_price": entry_price}
