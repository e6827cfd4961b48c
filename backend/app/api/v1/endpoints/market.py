"""Candles for the dashboard's market view. Replay reads the bundled history the replay itself read
(``BACKTEST_DATA_DIR``); paper and live read Upbit's public candle endpoint (no keys needed), the candles the
bot's own cycles read."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

import pandas as pd
from fastapi import APIRouter, HTTPException, Query

from backend.app.api.deps import Reader, SettingsDep, invalid
from backend.app.api.v1.endpoints._params import SYMBOL_PATTERN, FromDate, ToDate
from backend.app.schemas.common import ErrorResponse
from backend.app.schemas.market import CandlesOut
from src.api.interfaces import MAX_CANDLES_PER_REQUEST
from src.api.upbit_client import UpbitClient
from src.backtesting.data_provider import HistoricalDataProvider
from src.config.settings import Settings
from src.domain.modes import TradingMode
from src.domain.timeframes import Timeframe
from src.exceptions import Blocked, DataError, ExchangeError, ExchangeUnavailable, RateLimited

router = APIRouter(prefix="/market", tags=["market"])

MAX_CANDLES = 2000


def _bundled(
    settings: Settings, symbol: str, timeframe: str, start: datetime | None, end: datetime | None
) -> pd.DataFrame:
    provider = HistoricalDataProvider(settings.market_data.backtest_data_dir)
    return provider.load_historical_data(symbol, timeframe, start, end)


async def _upbit(settings: Settings, symbol: str, timeframe: str, end: datetime | None, count: int) -> pd.DataFrame:
    async with UpbitClient.from_settings(settings) as client:
        return await client.get_candles(symbol, timeframe, min(count, MAX_CANDLES_PER_REQUEST), to=end)


@router.get(
    "/candles",
    response_model=CandlesOut,
    responses={
        404: {"model": ErrorResponse, "description": "No candles for that market and timeframe"},
        429: {"model": ErrorResponse, "description": "Upbit's rate limit (paper and live), with Retry-After"},
        502: {"model": ErrorResponse, "description": "Upbit did not answer (paper and live)"},
    },
    summary="Candles of one market: the bundled history in replay mode, Upbit's in paper and live",
)
async def candles(
    settings: SettingsDep,
    _: Reader,
    symbol: Annotated[str, Query(pattern=SYMBOL_PATTERN, description="Market, e.g. KRW-BTC")],
    timeframe: Annotated[str, Query(description=f"One of {', '.join(Timeframe.names())}")] = "1h",
    mode: TradingMode | None = None,
    from_date: FromDate = None,
    to_date: ToDate = None,
    limit: Annotated[int, Query(ge=1, le=MAX_CANDLES, description="The newest this many candles of the range")] = 500,
) -> CandlesOut:
    """Replay: the newest ``limit`` candles of [from_date, to_date) from BACKTEST_DATA_DIR. Paper and live: up to
    200 candles (one Upbit request) before ``to_date`` (or the newest), from Upbit's public quotation API."""
    if not Timeframe.is_known(timeframe):
        raise invalid(("query", "timeframe"), f"unknown timeframe {timeframe!r}; expected one of {Timeframe.names()}")
    mode = mode or settings.trading.mode
    try:
        if mode is TradingMode.REPLAY:
            source = "bundled"
            frame = await asyncio.to_thread(_bundled, settings, symbol, timeframe, from_date, to_date)
        else:
            source = "upbit"
            frame = await _upbit(settings, symbol, timeframe, to_date, limit)
    except DataError as exc:
        raise HTTPException(404, detail=exc.message) from None
    except (RateLimited, Blocked):
        raise HTTPException(
            429, detail="Upbit's candle budget is used up; retry shortly", headers={"Retry-After": "1"}
        ) from None
    except ExchangeUnavailable as exc:
        raise HTTPException(502, detail=f"Upbit did not answer: {exc.message}") from None
    except ExchangeError as exc:  # Upbit refused: an unknown market, for example
        raise HTTPException(404, detail=f"no candles from Upbit for {symbol}: {exc.message}") from None
    frame = frame.tail(limit)
    rows = [
        (index.to_pydatetime(), float(row.open), float(row.high), float(row.low), float(row.close), float(row.volume))
        for index, row in frame.iterrows()
    ]
    return CandlesOut(symbol=symbol, timeframe=timeframe, mode=mode, source=source, candles=rows)
