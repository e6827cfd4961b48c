"""Trades: lists with filters and paging, one trade, and statistics with realised P&L."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response

from backend.app.api.deps import ReadConnection, Reader, page_connection_of, read_connection_of
from backend.app.api.hot_reads import trade_page_body
from backend.app.api.v1.endpoints._params import (
    Cursor,
    FromDate,
    Limit,
    Skip,
    Symbol,
    ToDate,
    paging,
    query_error,
)
from backend.app.db.queries import statistics as statistics_queries
from backend.app.db.queries import trades as trade_queries
from backend.app.schemas.common import NO_NUL_PATTERN, ErrorResponse
from backend.app.schemas.trades import (
    PeriodStats,
    StatisticsPeriod,
    SymbolStats,
    TradeOut,
    TradePage,
    TradeStatisticsOut,
    TradeStats,
)
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus
from src.exceptions import InvalidInput

router = APIRouter(prefix="/trades", tags=["trades"])


@router.get("", response_model=TradePage, summary="List trades, newest first")
async def list_trades(
    request: Request,
    _: Reader,
    symbol: Symbol = None,
    side: Side | None = None,
    status: TradeStatus | None = None,
    mode: TradingMode | None = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    skip: Skip = None,
) -> Response:
    filters = trade_queries.TradeFilter(symbol, side, status, from_date, to_date, mode)
    page_request = paging(limit, cursor, skip)
    try:
        connect = read_connection_of if page_request.skip is not None else page_connection_of
        async with connect(request.app.state) as connection:
            body = await trade_page_body(connection, filters, page_request)
    except InvalidInput as exc:
        raise query_error(exc) from None
    return Response(body, media_type="application/json")


@router.get("/statistics/summary", response_model=TradeStatisticsOut, summary="Trade statistics and realised P&L")
async def trade_statistics(
    connection: ReadConnection,
    _: Reader,
    symbol: Symbol = None,
    mode: TradingMode | None = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    period: Annotated[StatisticsPeriod, Query(description="Bucket of `by_period` (UTC)")] = StatisticsPeriod.DAY,
) -> TradeStatisticsOut:
    filters = trade_queries.TradeFilter(symbol=symbol, from_date=from_date, to_date=to_date, mode=mode)
    try:
        stats = await statistics_queries.trade_statistics(connection, filters, period.value)
    except InvalidInput as exc:
        raise query_error(exc) from None
    return TradeStatisticsOut(
        symbol=symbol,
        from_date=from_date,
        to_date=to_date,
        period=period,
        overall=TradeStats(**stats.overall.as_dict()),
        by_symbol=[
            SymbolStats(
                symbol=name, avg_buy_price=tally.avg_buy_price, avg_sell_price=tally.avg_sell_price, **tally.as_dict()
            )
            for name, tally in sorted(stats.by_symbol.items())
        ],
        by_period=[
            PeriodStats(period_start=start, **tally.as_dict()) for start, tally in sorted(stats.by_period.items())
        ],
    )


@router.get(
    "/{trade_id}", response_model=TradeOut, responses={404: {"model": ErrorResponse}}, summary="One trade by trade_id"
)
async def get_trade(
    connection: ReadConnection,
    _: Reader,
    trade_id: Annotated[str, Path(min_length=1, max_length=100, pattern=NO_NUL_PATTERN)],
) -> TradeOut:
    row = await trade_queries.get_trade(connection, trade_id)
    if row is None:
        raise HTTPException(404, detail="trade not found")
    return TradeOut.model_validate(row)
