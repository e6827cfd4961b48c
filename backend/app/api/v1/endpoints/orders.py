"""Orders, with their state."""

from __future__ import annotations

from fastapi import APIRouter

from backend.app.api.deps import ReadConnection, Reader
from backend.app.api.v1.endpoints._params import (
    Cursor,
    FromDate,
    Limit,
    Skip,
    Symbol,
    ToDate,
    page_model,
    paging,
    query_error,
)
from backend.app.db.queries import orders as order_queries
from backend.app.schemas.orders import OrderPage
from src.domain.orders import OrderStatus
from src.exceptions import InvalidInput

router = APIRouter(prefix="/orders", tags=["orders"])


@router.get("", response_model=OrderPage, summary="List orders, newest first")
async def list_orders(
    connection: ReadConnection,
    _: Reader,
    state: OrderStatus | None = None,
    symbol: Symbol = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    skip: Skip = None,
) -> OrderPage:
    try:
        page = await order_queries.list_orders(
            connection,
            paging(limit, cursor, skip),
            status=state,
            symbol=symbol,
            from_date=from_date,
            to_date=to_date,
        )
    except InvalidInput as exc:
        raise query_error(exc) from None
    return page_model(OrderPage, page)
