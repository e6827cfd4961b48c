"""Backtests through the API: start one (run in a worker process, outside the request), read it, list, cancel."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse

from backend.app.api.deps import AUTH_RESPONSES, BODY_RESPONSES, WRITE_RESPONSES, Reader, SettingsDep, Writer, invalid
from backend.app.api.v1.endpoints._params import Cursor, Limit, Skip, paging, row_id
from backend.app.db.repositories.backtests import summary
from backend.app.schemas.backtests import BacktestCreated, BacktestIn, BacktestOut, BacktestPage, BacktestSummary
from backend.app.services.backtests import BacktestPool, PoolFull, check_request
from src.exceptions import InvalidInput

router = APIRouter(prefix="/backtests", tags=["backtests"])

FULL_RESPONSE: dict[int | str, dict[str, object]] = {
    429: {"description": "Every backtest worker is busy and the queue is full (or the rate limit); see Retry-After"}
}
NOT_FOUND: dict[int | str, dict[str, object]] = {404: {"description": "No backtest run with this id"}}


def _pool(request: Request) -> BacktestPool:
    pool: BacktestPool = request.app.state.backtests
    return pool


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BacktestCreated,
    responses=AUTH_RESPONSES | BODY_RESPONSES | WRITE_RESPONSES | FULL_RESPONSE,
    summary="Start a backtest (runs in a worker process); poll GET /backtests/{id} for its status and result",
)
async def start_backtest(body: BacktestIn, request: Request, settings: SettingsDep, who: Writer) -> JSONResponse:
    try:
        check_request(body, settings)
    except InvalidInput as exc:
        field, _, message = exc.message.partition(": ")
        raise invalid(("body", field), message) from None
    try:
        run_id = await _pool(request).submit(body, who.name)
    except PoolFull as full:
        return JSONResponse(
            {"detail": "every backtest worker is busy and the queue is full; retry later"},
            status_code=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(full.retry_after)},
        )
    return JSONResponse(
        {"id": str(run_id)}, status_code=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/v1/backtests/{run_id}"}
    )


@router.get("", response_model=BacktestPage, summary="Backtest runs, newest first (without their result arrays)")
async def list_backtests(
    request: Request, _: Reader, limit: Limit = 50, cursor: Cursor = None, skip: Skip = None
) -> BacktestPage:
    try:
        page = await _pool(request).repository.page(paging(limit, cursor, skip))
    except InvalidInput as exc:
        raise invalid(("query", "cursor"), exc.message.split(": ", 1)[-1]) from None
    items = [BacktestSummary.model_validate({**summary(row), "id": str(row.id)}) for row in page.rows]
    return BacktestPage(
        items=items,
        limit=page.limit,
        next_cursor=page.next_cursor,
        total=page.total,
        page=page.page,
        page_size=page.page_size,
    )


@router.get(
    "/{run_id}",
    response_model=BacktestOut,
    responses=NOT_FOUND,
    summary="A backtest run: status, progress, request, and when done its metrics, trades, equity and candles",
)
async def get_backtest(run_id: str, request: Request, _: Reader) -> BacktestOut:
    row = await _pool(request).repository.get(row_id(run_id, "backtest run"))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no backtest run {run_id!r}")
    return BacktestOut.model_validate(
        {**summary(row), "id": str(row.id), "trades": row.trades, "equity": row.equity, "candles": row.candles}
    )


@router.post(
    "/{run_id}/cancel",
    response_model=BacktestSummary,
    responses=AUTH_RESPONSES | WRITE_RESPONSES | NOT_FOUND,
    summary="Cancel a run: a queued one never starts, a running one's worker is stopped",
)
async def cancel_backtest(run_id: str, request: Request, _: Writer) -> BacktestSummary:
    pool = _pool(request)
    number = row_id(run_id, "backtest run")
    if await pool.cancel(number) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no backtest run {run_id!r}")
    row = await pool.repository.get(number)
    assert row is not None
    return BacktestSummary.model_validate({**summary(row), "id": str(row.id)})
