"""Portfolio snapshots written by the scheduler."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from backend.app.api.deps import ReadConnection, Reader, SettingsDep
from backend.app.api.v1.endpoints._params import Cursor, FromDate, Limit, Skip, ToDate, page_model, paging, query_error
from backend.app.db.queries.portfolio import latest_snapshot, snapshot_history
from backend.app.schemas.common import ErrorResponse
from backend.app.schemas.portfolio import PortfolioHistoryPage, PortfolioSnapshotOut
from src.domain.modes import TradingMode
from src.exceptions import InvalidInput

router = APIRouter(prefix="/portfolio", tags=["portfolio"])


@router.get(
    "",
    response_model=PortfolioSnapshotOut,
    responses={404: {"model": ErrorResponse}},
    summary="The newest snapshot (TRADING_MODE unless mode is given)",
)
async def latest_portfolio(
    connection: ReadConnection, settings: SettingsDep, _: Reader, mode: TradingMode | None = None
) -> PortfolioSnapshotOut:
    row = await latest_snapshot(connection, mode or settings.trading.mode)
    if row is None:
        raise HTTPException(404, detail="no portfolio snapshot yet")
    return PortfolioSnapshotOut.model_validate(row)


@router.get("/history", response_model=PortfolioHistoryPage, summary="Snapshots, newest first")
async def portfolio_history(
    connection: ReadConnection,
    settings: SettingsDep,
    _: Reader,
    mode: TradingMode | None = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    skip: Skip = None,
) -> PortfolioHistoryPage:
    try:
        page = await snapshot_history(
            connection,
            mode or settings.trading.mode,
            paging(limit, cursor, skip),
            from_date=from_date,
            to_date=to_date,
        )
    except InvalidInput as exc:
        raise query_error(exc) from None
    return page_model(PortfolioHistoryPage, page)
