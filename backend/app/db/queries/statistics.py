"""Trade statistics: completed trades summed overall, by symbol and by period.

Money sums are exact ``Decimal`` on both databases: PostgreSQL sums NUMERIC in SQL; SQLite keeps money as decimal
TEXT (``ExactDecimal``), where ``SUM()`` would be float, so there the sums are done in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from backend.app.db.queries.trades import TradeFilter
from backend.app.models import TradeRow
from src.domain.money import ZERO
from src.domain.orders import Side, TradeStatus

HUNDRED = Decimal("100")


# --- trade statistics -----------------------------------------------------------------------------
@dataclass(slots=True)
class Tally:
    """Sums over completed trades; combinable, so SQL groups and single rows add up the same way."""

    trade_count: int = 0
    buy_count: int = 0
    sell_count: int = 0
    buy_volume_krw: Decimal = ZERO
    sell_volume_krw: Decimal = ZERO
    buy_amount: Decimal = ZERO
    sell_amount: Decimal = ZERO
    fee_krw: Decimal = ZERO
    realized_pnl_krw: Decimal = ZERO
    winning_sells: int = 0
    losing_sells: int = 0
    pnl_sells: int = 0
    unmatched_sells: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def volume_krw(self) -> Decimal:
        return self.buy_volume_krw + self.sell_volume_krw

    @property
    def win_rate_pct(self) -> Decimal | None:
        if not self.pnl_sells:
            return None
        return (HUNDRED * self.winning_sells / self.pnl_sells).quantize(Decimal("0.01"))

    @property
    def avg_buy_price(self) -> Decimal | None:
        return (self.buy_volume_krw / self.buy_amount).quantize(Decimal("0.00000001")) if self.buy_amount else None

    @property
    def avg_sell_price(self) -> Decimal | None:
        return (self.sell_volume_krw / self.sell_amount).quantize(Decimal("0.00000001")) if self.sell_amount else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trade_count": self.trade_count,
            "buy_count": self.buy_count,
            "sell_count": self.sell_count,
            "volume_krw": self.volume_krw,
            "buy_volume_krw": self.buy_volume_krw,
            "sell_volume_krw": self.sell_volume_krw,
            "fee_krw": self.fee_krw,
            "realized_pnl_krw": self.realized_pnl_krw,
            "winning_sells": self.winning_sells,
            "losing_sells": self.losing_sells,
            "win_rate_pct": self.win_rate_pct,
            "unmatched_sells": self.unmatched_sells,
        }


def _tally(
    side: Side,
    count: int,
    volume: Decimal | None,
    amount: Decimal | None,
    fee: Decimal | None,
    pnl_sum: Decimal | None,
    pnl_count: int,
    wins: int,
    losses: int,
) -> Tally:
    tally = Tally(trade_count=count, fee_krw=fee or ZERO)
    if side is Side.BUY:
        tally.buy_count, tally.buy_volume_krw, tally.buy_amount = count, volume or ZERO, amount or ZERO
        return tally
    tally.sell_count, tally.sell_volume_krw, tally.sell_amount = count, volume or ZERO, amount or ZERO
    tally.realized_pnl_krw = pnl_sum or ZERO
    tally.pnl_sells, tally.winning_sells, tally.losing_sells = pnl_count, wins, losses
    tally.unmatched_sells = count - pnl_count
    return tally


def period_start(moment: datetime, period: str) -> datetime:
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    return day


@dataclass(slots=True)
class TradeStatistics:
    overall: Tally = field(default_factory=Tally)
    by_symbol: dict[str, Tally] = field(default_factory=dict)
    by_period: dict[datetime, Tally] = field(default_factory=dict)

    def add(self, symbol: str, start: datetime, tally: Tally) -> None:
        self.overall.add(tally)
        self.by_symbol.setdefault(symbol, Tally()).add(tally)
        self.by_period.setdefault(start, Tally()).add(tally)


async def trade_statistics(connection: AsyncConnection, filters: TradeFilter, period: str) -> TradeStatistics:
    conditions = [*filters.conditions(), TradeRow.status == TradeStatus.COMPLETED]
    stats = TradeStatistics()
    if connection.dialect.name == "postgresql":
        groups = _statistics_groups_sql(connection, conditions, period)
    else:
        groups = _statistics_groups_python(connection, conditions, period)
    async for symbol, start, tally in groups:
        stats.add(symbol, start, tally)
    return stats


async def _statistics_groups_sql(
    connection: AsyncConnection, conditions: list[ColumnElement[bool]], period: str
) -> Any:
    bucket = func.date_trunc(period, func.timezone("UTC", TradeRow.created_at)).label("bucket")
    pnl = TradeRow.realized_pnl
    query = (
        select(
            TradeRow.symbol,
            TradeRow.side,
            bucket,
            func.count(),
            func.sum(TradeRow.total),
            func.sum(TradeRow.amount),
            func.sum(TradeRow.fee),
            func.sum(pnl),
            func.count(pnl),
            func.count().filter(pnl > 0),
            func.count().filter(pnl < 0),
        )
        .where(*conditions)
        .group_by(TradeRow.symbol, TradeRow.side, bucket)
    )
    for symbol, side, start, *sums in await connection.execute(query):
        yield symbol, start.replace(tzinfo=UTC), _tally(Side(side), *sums)


async def _statistics_groups_python(
    connection: AsyncConnection, conditions: list[ColumnElement[bool]], period: str
) -> Any:
    query = select(
        TradeRow.symbol,
        TradeRow.side,
        TradeRow.created_at,
        TradeRow.total,
        TradeRow.amount,
        TradeRow.fee,
        TradeRow.realized_pnl,
    ).where(*conditions)
    for symbol, side, created_at, total, amount, fee, pnl in await connection.execute(query):
        has_pnl = pnl is not None
        won, lost = (pnl > 0, pnl < 0) if pnl is not None else (False, False)
        tally = _tally(Side(side), 1, total, amount, fee, pnl, int(has_pnl), int(won), int(lost))
        yield symbol, period_start(created_at, period), tally
