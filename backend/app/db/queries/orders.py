"""Orders as the API lists them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.db.queries.paging import Page, Paging, in_range, paged
from backend.app.models import OrderRow


async def list_orders(
    connection: AsyncConnection,
    paging: Paging,
    *,
    status: str | None = None,
    symbol: str | None = None,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
) -> Page:
    query = select(OrderRow.__table__).where(*in_range(OrderRow.created_at, from_date, to_date))
    if status is not None:
        query = query.where(OrderRow.status == status)
    if symbol is not None:
        query = query.where(OrderRow.symbol == symbol)
    return await paged(connection, query, OrderRow.created_at, OrderRow.id, paging)
