"""The API's read side: every query the API runs is built here, executed on a Core connection (no ORM
identity map to fill for rows that are only serialised).

Lists are newest first and keyset-paged on ``(created_at, id)`` so a deep page costs what the first does.
Money aggregates are exact ``Decimal`` on both databases: PostgreSQL sums NUMERIC in SQL; SQLite keeps money
as decimal TEXT (``ExactDecimal``), where ``SUM()`` would be float, so those sums are done in Python.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    Text,
    bindparam,
    cast,
    func,
    literal,
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.sqltypes import Enum

from backend.app.db.driver import fetch_one, fetch_rows
from backend.app.db.migrations import current_revision, head_revision
from backend.app.db.types import ExactDecimal, FixedPointText, UTCDateTime
from backend.app.models import (
    AIDecisionRow,
    BotConfigRow,
    BotStateRow,
    OrderRow,
    PortfolioSnapshotRow,
    RiskStateRow,
    TradeRow,
)
from src.domain.bot import DesiredState
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus
from src.exceptions import InvalidInput
from src.trading.bot_control import DESIRED_STATE_KEY

ZERO = Decimal("0")
HUNDRED = Decimal("100")


# --- the times and row ids a request may name -------------------------------------------------------
# Both databases store far wider ranges, but a time outside this window is a typo, not a question: year 1 or
# 9999 with an offset does not even have a UTC form (Python raises OverflowError), and date arithmetic near
# the ends (week buckets, the driver's own conversions) fails. Row ids are INTEGER primary keys on both
# databases, so a cursor id above 2**31 - 1 can name no row (and PostgreSQL refuses it as a parameter).
EARLIEST_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # exclusive
MAX_ROW_ID = 2**31 - 1
TIME_RANGE_RULE = "expected a time from 1970-01-01T00:00:00Z up to (not including) 2200-01-01T00:00:00Z"


def checked_time(moment: datetime) -> datetime:
    """``moment`` in UTC, or ``ValueError`` (with ``TIME_RANGE_RULE``) when it lies outside the window the API
    serves; the one rule for query times (``from_date``, ``to_date``) and cursor times."""
    try:
        utc = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError(TIME_RANGE_RULE) from None
    if not EARLIEST_TIME <= utc < LATEST_TIME:
        raise ValueError(TIME_RANGE_RULE)
    return utc


# --- paging ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f'["{self.created_at.isoformat()}",{self.id}]'.encode()  # the JSON ``decode`` reads; nothing to escape
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            created, row_id = json.loads(raw)
            created_at = datetime.fromisoformat(created)
            if created_at.tzinfo is None or not isinstance(row_id, int) or isinstance(row_id, bool):
                raise ValueError("bad cursor fields")
            if not 0 <= row_id <= MAX_ROW_ID:
                raise ValueError("row id out of range")
            created_at = checked_time(created_at)
        except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidInput("cursor: expected a next_cursor value returned by this endpoint", cursor=token) from exc
        return cls(created_at, row_id)


@dataclass(slots=True)
class Page:
    rows: Sequence[Any]  # Core rows, or driver records for ``trade_page``: cheaper than ORM objects to serialise
    limit: int
    next_cursor: str | None
    total: int | None = None
    page: int | None = None
    page_size: int | None = None


@dataclass(frozen=True, slots=True)
class Paging:
    """``skip`` set: offset paging with a total; otherwise keyset paging from ``cursor`` (or the newest)."""

    limit: int
    cursor: str | None = None
    skip: int | None = None


async def _paged(
    connection: AsyncConnection,
    query: Select[Any],
    created: InstrumentedAttribute[datetime],
    row_id: InstrumentedAttribute[int],
    paging: Paging,
) -> Page:
    if paging.cursor is not None and paging.skip is not None:
        raise InvalidInput("cursor: use either cursor or skip, not both")
    ordered = query.order_by(created.desc(), row_id.desc())
    total = None
    if paging.skip is not None:
        total = await connection.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
        ordered = ordered.offset(paging.skip)
    elif paging.cursor is not None:
        cursor = Cursor.decode(paging.cursor)
        ordered = ordered.where(
            tuple_(created, row_id) < tuple_(literal(cursor.created_at, UTCDateTime()), literal(cursor.id))
        )
    rows = list(await connection.execute(ordered.limit(paging.limit + 1)))
    return _page(rows, paging, lambda row: Cursor(getattr(row, created.key), getattr(row, row_id.key)), total)


def _page(rows: Sequence[Any], paging: Paging, cursor_of: Callable[[Any], Cursor], total: int | None = None) -> Page:
    """The page from up to ``limit + 1`` rows (one more than asked tells whether a next page exists)."""
    next_cursor = None
    if len(rows) > paging.limit:
        rows = rows[: paging.limit]
        next_cursor = cursor_of(rows[-1]).encode()
    if paging.skip is None:
        return Page(rows, paging.limit, next_cursor)
    return Page(rows, paging.limit, next_cursor, total, paging.skip // paging.limit + 1, paging.limit)


def _check_range(from_date: datetime | None, to_date: datetime | None) -> None:
    for name, moment in (("from_date", from_date), ("to_date", to_date)):
        if moment is not None:
            try:
                checked_time(moment)
            except ValueError as exc:
                raise InvalidInput(f"{name}: {exc}") from None
    if from_date is not None and to_date is not None and from_date >= to_date:
        raise InvalidInput("from_date: expected a time before to_date")


def _in_range(
    column: InstrumentedAttribute[datetime], from_date: datetime | None, to_date: datetime | None
) -> list[ColumnElement[bool]]:
    _check_range(from_date, to_date)
    conditions: list[ColumnElement[bool]] = []
    if from_date is not None:
        conditions.append(column >= from_date)
    if to_date is not None:
        conditions.append(column < to_date)
    return conditions


# --- trades ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TradeFilter:
    symbol: str | None = None
    side: Side | None = None
    status: TradeStatus | None = None
    from_date: datetime | None = None
    to_date: datetime | None = None
    mode: TradingMode | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        conditions = _in_range(TradeRow.created_at, self.from_date, self.to_date)
        if self.symbol is not None:
            conditions.append(TradeRow.symbol == self.symbol)
        if self.side is not None:
            conditions.append(TradeRow.side == self.side)
        if self.status is not None:
            conditions.append(TradeRow.status == self.status)
        if self.mode is not None:
            conditions.append(TradeRow.mode == self.mode)
        return conditions


async def list_trades(connection: AsyncConnection, filters: TradeFilter, paging: Paging) -> Page:
    query = select(TradeRow.__table__).where(*filters.conditions())
    return await _paged(connection, query, TradeRow.created_at, TradeRow.id, paging)


def served_columns(table: Any, names: Iterable[str], dialect: str) -> list[ColumnElement[Any]]:
    """``names`` of ``table`` as the API serves them, with no per-value work in Python on PostgreSQL (where
    ``driver.fetch_rows`` skips SQLAlchemy's result processing): money as fixed-point text (NUMERIC's own text
    form there; ``FixedPointText`` on SQLite), ``timestamptz`` as the UTC-aware datetime asyncpg returns, enum
    columns as the plain strings they are stored as."""
    columns: list[ColumnElement[Any]] = []
    for name in names:
        column = table.c[name]
        if isinstance(column.type, ExactDecimal):
            money = cast(column, Text) if dialect == "postgresql" else type_coerce(column, FixedPointText())
            column = money.label(name)
        elif dialect == "postgresql" and isinstance(column.type, UTCDateTime):
            column = type_coerce(column, DateTime(timezone=True)).label(name)
        elif dialect == "postgresql" and isinstance(column.type, Enum):
            column = type_coerce(column, String()).label(name)
        columns.append(column)
    return columns


_TRADE_QUERIES: dict[tuple[Any, ...], Select[Any]] = {}
_TRADE_EQUALS = ("symbol", "side", "status", "mode")


def _keyset_trade_query(shape: tuple[Any, ...]) -> Select[Any]:
    """The keyset statement for one combination of set filters, with bound parameters for every value. Cached
    per shape: building a statement and its cache key cost more CPU per request than PostgreSQL's work."""
    query = _TRADE_QUERIES.get(shape)
    if query is not None:
        return query
    columns, dialect, equals, has_from, has_to, has_cursor = shape
    table = TradeRow.__table__
    query = select(*served_columns(table, columns, dialect))
    for name in equals:
        query = query.where(table.c[name] == bindparam(name))
    if has_from:
        query = query.where(TradeRow.created_at >= bindparam("from_date"))
    if has_to:
        query = query.where(TradeRow.created_at < bindparam("to_date"))
    if has_cursor:
        cursor = tuple_(bindparam("cursor_at", type_=UTCDateTime()), bindparam("cursor_id", type_=Integer()))
        query = query.where(tuple_(TradeRow.created_at, TradeRow.id) < cursor)
    query = query.order_by(TradeRow.created_at.desc(), TradeRow.id.desc()).limit(bindparam("limit", type_=Integer()))
    _TRADE_QUERIES[shape] = query
    return query


async def trade_page(
    connection: AsyncConnection, filters: TradeFilter, paging: Paging, columns: tuple[str, ...]
) -> Page:
    """``list_trades`` for serialising only: the rows hold ``columns`` (which must include ``created_at`` and
    ``id``) as ``served_columns`` gives them. Keyset pages run on the driver (``driver.fetch_rows``)."""
    dialect = connection.dialect.name
    if paging.skip is not None:
        query = select(*served_columns(TradeRow.__table__, columns, dialect)).where(*filters.conditions())
        return await _paged(connection, query, TradeRow.created_at, TradeRow.id, paging)
    _check_range(filters.from_date, filters.to_date)
    parameters: dict[str, Any] = {"limit": paging.limit + 1}
    equals = tuple(name for name in _TRADE_EQUALS if getattr(filters, name) is not None)
    for name in equals:
        parameters[name] = getattr(filters, name)
    if filters.from_date is not None:
        parameters["from_date"] = filters.from_date
    if filters.to_date is not None:
        parameters["to_date"] = filters.to_date
    if paging.cursor is not None:
        cursor = Cursor.decode(paging.cursor)
        parameters["cursor_at"], parameters["cursor_id"] = cursor.created_at, cursor.id
    shape = (
        columns,
        dialect,
        equals,
        filters.from_date is not None,
        filters.to_date is not None,
        paging.cursor is not None,
    )
    rows = await fetch_rows(connection, _keyset_trade_query(shape), parameters)
    created_at, row_id = columns.index("created_at"), columns.index("id")
    return _page(rows, paging, lambda row: Cursor(row[created_at], row[row_id]))


async def get_trade(connection: AsyncConnection, trade_id: str) -> Row[Any] | None:
    return (await connection.execute(select(TradeRow.__table__).where(TradeRow.trade_id == trade_id))).first()


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
        for name in self.__slots__:  # type: ignore[attr-defined]
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
        tally = _tally(
            Side(side), 1, total, amount, fee, pnl, int(has_pnl), int(has_pnl and pnl > 0), int(has_pnl and pnl < 0)
        )
        yield symbol, period_start(created_at, period), tally


# --- orders, AI decisions, portfolio ---------------------------------------------------------------
async def list_orders(
    connection: AsyncConnection,
    paging: Paging,
    *,
    status: str | None = None,
    symbol: str | None = None,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
) -> Page:
    query = select(OrderRow.__table__).where(*_in_range(OrderRow.created_at, from_date, to_date))
    if status is not None:
        query = query.where(OrderRow.status == status)
    if symbol is not None:
        query = query.where(OrderRow.symbol == symbol)
    return await _paged(connection, query, OrderRow.created_at, OrderRow.id, paging)


async def list_ai_decisions(
    connection: AsyncConnection,
    paging: Paging,
    *,
    symbol: str | None = None,
    decision: str | None = None,
    final_decision: str | None = None,
    overridden: bool | None = None,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
    purpose: str | None = "decision",
) -> Page:
    """The trading cycle's decisions by default; ``purpose='filter'`` lists the quick filter's model calls."""
    query = select(AIDecisionRow.__table__).where(*_in_range(AIDecisionRow.created_at, from_date, to_date))
    if purpose is not None:
        query = query.where(AIDecisionRow.purpose == purpose)
    if symbol is not None:
        query = query.where(AIDecisionRow.symbol == symbol)
    if decision is not None:
        query = query.where(AIDecisionRow.decision == decision)
    if final_decision is not None:
        query = query.where(AIDecisionRow.final_decision == final_decision)
    if overridden is not None:
        query = query.where(AIDecisionRow.overridden.is_(overridden))
    return await _paged(connection, query, AIDecisionRow.created_at, AIDecisionRow.id, paging)


async def latest_snapshot(connection: AsyncConnection, mode: TradingMode) -> Row[Any] | None:
    query = (
        select(PortfolioSnapshotRow.__table__)
        .where(PortfolioSnapshotRow.mode == mode)
        .order_by(PortfolioSnapshotRow.created_at.desc(), PortfolioSnapshotRow.id.desc())
        .limit(1)
    )
    return (await connection.execute(query)).first()


async def snapshot_history(
    connection: AsyncConnection,
    mode: TradingMode,
    paging: Paging,
    *,
    from_date: datetime | None = None,
    to_date: datetime | None = None,
) -> Page:
    query = select(PortfolioSnapshotRow.__table__).where(
        PortfolioSnapshotRow.mode == mode, *_in_range(PortfolioSnapshotRow.created_at, from_date, to_date)
    )
    return await _paged(connection, query, PortfolioSnapshotRow.created_at, PortfolioSnapshotRow.id, paging)


# --- bot status and config -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SafeMode:
    active: bool
    reason: str | None
    since: datetime | None


@dataclass(slots=True)
class BotStatusData:
    heartbeat: Any | None  # bot_state columns by attribute (``driver.fetch_one``), None if never written
    desired_state: DesiredState
    risk: SafeMode | None  # from risk_state of the trading mode, None without a row


def _build_bot_status_query() -> Select[Any]:
    heartbeat, risk = BotStateRow.__table__, RiskStateRow.__table__
    desired = select(BotConfigRow.value).where(BotConfigRow.key == DESIRED_STATE_KEY).scalar_subquery()
    anchor = select(literal(1).label("one")).subquery()
    return select(
        heartbeat,
        desired.label("desired_state"),
        risk.c.id.label("risk_id"),
        risk.c.safe_mode.label("risk_safe_mode"),
        risk.c.safe_mode_reason.label("risk_safe_mode_reason"),
        risk.c.safe_mode_since.label("risk_safe_mode_since"),
    ).select_from(
        anchor.outerjoin(heartbeat, heartbeat.c.instance_name == bindparam("instance_name")).outerjoin(
            risk, risk.c.mode == bindparam("mode")
        )
    )


# Built once: constructing the statement and its cache key cost more CPU than running it.
_BOT_STATUS_QUERY = _build_bot_status_query()


async def bot_status(connection: AsyncConnection, instance_name: str, mode: TradingMode) -> BotStatusData:
    """Heartbeat, desired state and safe mode in one round trip (left joins on a one-row anchor)."""
    row = await fetch_one(connection, _BOT_STATUS_QUERY, {"instance_name": instance_name, "mode": mode})
    safe_mode = (
        SafeMode(bool(row.risk_safe_mode), row.risk_safe_mode_reason, row.risk_safe_mode_since)
        if row.risk_id is not None
        else None
    )
    desired_state = DesiredState(row.desired_state) if row.desired_state is not None else DesiredState.RUNNING
    return BotStatusData(row if row.instance_name is not None else None, desired_state, safe_mode)


async def config_rows(connection: AsyncConnection, keys: Iterable[str]) -> dict[str, Row[Any]]:
    rows = await connection.execute(select(BotConfigRow.__table__).where(BotConfigRow.key.in_(list(keys))))
    return {row.key: row for row in rows}


def applied_settings_of(details: Any) -> dict[str, Any] | None:
    """The run-time settings the scheduler reported with its heartbeat (``details.settings``), if any."""
    settings = (details or {}).get("settings") if isinstance(details, dict) else None
    return settings if isinstance(settings, dict) else None


async def applied_settings(connection: AsyncConnection, instance_name: str) -> dict[str, Any] | None:
    details = await connection.scalar(select(BotStateRow.details).where(BotStateRow.instance_name == instance_name))
    return applied_settings_of(details)


# --- readiness -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Readiness:
    database: bool
    current: str | None
    head: str
    detail: str | None

    @property
    def ready(self) -> bool:
        return self.database and self.current == self.head


async def readiness(connection: AsyncConnection) -> Readiness:
    head = head_revision()
    try:
        current = await current_revision(connection.engine)
    except Exception as exc:  # any driver error means "not reachable"; the type is enough to say why
        return Readiness(False, None, head, f"database unreachable ({type(exc).__name__})")
    detail = None if current == head else f"database at migration {current}, newest is {head}"
    return Readiness(True, current, head, detail)


# --- metrics: totals derived from the database ------------------------------------------------------
@dataclass(slots=True)
class TradeTotals:
    count: int = 0
    volume_krw: Decimal = ZERO
    fee_krw: Decimal = ZERO


TradeKey = tuple[str, str, str]  # symbol, side, mode


async def max_ids(connection: AsyncConnection) -> tuple[int, int]:
    trades = await connection.scalar(select(func.coalesce(func.max(TradeRow.id), 0)))
    decisions = await connection.scalar(select(func.coalesce(func.max(AIDecisionRow.id), 0)))
    return int(trades or 0), int(decisions or 0)


async def trade_totals_between(
    connection: AsyncConnection, after_id: int, up_to_id: int
) -> dict[TradeKey, TradeTotals]:
    """Totals of completed trades with ``after_id < id <= up_to_id``, by symbol, side and mode."""
    where = (TradeRow.id > after_id, TradeRow.id <= up_to_id, TradeRow.status == TradeStatus.COMPLETED)
    keys = (TradeRow.symbol, TradeRow.side, TradeRow.mode)
    totals: dict[TradeKey, TradeTotals] = {}
    if connection.dialect.name == "postgresql":
        query = select(*keys, func.count(), func.sum(TradeRow.total), func.sum(TradeRow.fee)).where(*where)
        for symbol, side, mode, count, volume, fee in await connection.execute(query.group_by(*keys)):
            totals[(symbol, str(side), str(mode))] = TradeTotals(count, volume or ZERO, fee or ZERO)
        return totals
    for symbol, side, mode, total, fee in await connection.execute(
        select(*keys, TradeRow.total, TradeRow.fee).where(*where)
    ):
        entry = totals.setdefault((symbol, str(side), str(mode)), TradeTotals())
        entry.count += 1
        entry.volume_krw += total
        entry.fee_krw += fee
    return totals


async def decision_counts_between(
    connection: AsyncConnection, after_id: int, up_to_id: int
) -> dict[tuple[str, str], int]:
    """The cycle's AI decisions with ``after_id < id <= up_to_id``, counted by symbol and final decision."""
    keys = (AIDecisionRow.symbol, AIDecisionRow.final_decision)
    where = (AIDecisionRow.id > after_id, AIDecisionRow.id <= up_to_id, AIDecisionRow.purpose == "decision")
    query = select(*keys, func.count()).where(*where).group_by(*keys)
    return {(symbol, decision): count for symbol, decision, count in await connection.execute(query)}


async def latest_confidence_between(connection: AsyncConnection, after_id: int, up_to_id: int) -> dict[str, Decimal]:
    """The confidence of the newest decision per symbol among ``after_id < id <= up_to_id``."""
    newest = (
        select(func.max(AIDecisionRow.id))
        .where(AIDecisionRow.id > after_id, AIDecisionRow.id <= up_to_id, AIDecisionRow.purpose == "decision")
        .group_by(AIDecisionRow.symbol)
    )
    query = select(AIDecisionRow.symbol, AIDecisionRow.confidence).where(AIDecisionRow.id.in_(newest))
    return {symbol: confidence for symbol, confidence in await connection.execute(query) if confidence is not None}


def merge_counts(target: dict[Any, Any], increments: dict[Any, Any]) -> None:
    for key, value in increments.items():
        if isinstance(value, TradeTotals):
            entry = target.setdefault(key, TradeTotals())
            entry.count += value.count
            entry.volume_krw += value.volume_krw
            entry.fee_krw += value.fee_krw
        else:
            target[key] = target.get(key, 0) + value
