from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field, TypeAdapter
from typing_extensions import TypedDict

from backend.app.schemas.common import ApiModel, Money, PageInfo
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus


class TradeOut(ApiModel):
    id: int
    trade_id: str
    order_id: int | None
    symbol: str
    side: Side
    price: Money
    amount: Money
    total: Money
    fee: Money
    realized_pnl: Money | None
    status: TradeStatus
    mode: TradingMode
    exit_reason: ExitReason | None = Field(
        description="A sell's: the exit that caused it (stop_loss, take_profit, trailing_stop, signal); null on buys"
    )
    created_at: datetime


class TradePage(PageInfo):
    items: list[TradeOut]


class TradeJson(TypedDict):
    """``TradeOut`` as served values (``queries.trades.served_columns``), for serialising a page without validating it
    again (see ``TRADE_PAGE_JSON``). Money is fixed-point text, the JSON ``Money`` gives; enum fields are ``str``
    (a member of a ``StrEnum`` and its value give the same JSON)."""

    id: int
    trade_id: str
    order_id: int | None
    symbol: str
    side: str
    price: str
    amount: str
    total: str
    fee: str
    realized_pnl: str | None
    status: str
    mode: str
    exit_reason: str | None
    created_at: datetime


class TradePageJson(TypedDict):
    limit: int
    next_cursor: str | None
    total: int | None
    page: int | None
    page_size: int | None
    items: list[TradeJson]


# Same keys in the same order as the models, so the JSON is the one ``TradePage`` would give.
TRADE_FIELDS: tuple[str, ...] = tuple(TradeOut.model_fields)
if tuple(TradeJson.__annotations__) != TRADE_FIELDS or tuple(TradePageJson.__annotations__) != tuple(
    TradePage.model_fields
):
    raise TypeError("TradeJson and TradePageJson must mirror TradeOut and TradePage")
TRADE_PAGE_JSON: TypeAdapter[TradePageJson] = TypeAdapter(TradePageJson)


class StatisticsPeriod(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class TradeStats(ApiModel):
    """Completed trades only. ``win_rate_pct`` = winning sells / sells with a realised P&L."""

    trade_count: int
    buy_count: int
    sell_count: int
    volume_krw: Money
    buy_volume_krw: Money
    sell_volume_krw: Money
    fee_krw: Money
    realized_pnl_krw: Money
    winning_sells: int
    losing_sells: int
    win_rate_pct: Money | None = Field(description="null while no sell has a realised P&L")
    unmatched_sells: int = Field(description="Sells without a realised P&L (not counted in P&L or win rate)")


class SymbolStats(TradeStats):
    symbol: str
    avg_buy_price: Money | None
    avg_sell_price: Money | None


class PeriodStats(TradeStats):
    period_start: datetime


class TradeStatisticsOut(ApiModel):
    symbol: str | None
    from_date: datetime | None
    to_date: datetime | None
    period: StatisticsPeriod
    overall: TradeStats
    by_symbol: list[SymbolStats]
    by_period: list[PeriodStats]
