"""Trades as the API lists them: filters, keyset pages (the asyncpg fast path for serialising) and one trade."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
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
    select,
    tuple_,
    type_coerce,
)
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.sqltypes import Enum

from backend.app.db.driver import Readable, fetch_rows
from backend.app.db.queries.paging import Cursor, Page, Paging, check_range, in_range, page_of, paged
from backend.app.db.types import ExactDecimal, FixedPointText, UTCDateTime
from backend.app.models import TradeRow
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus


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
        conditions = in_range(TradeRow.created_at, self.from_date, self.to_date)
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
    return await paged(connection, query, TradeRow.created_at, TradeRow.id, paging)


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


async def trade_page(connection: Readable, filters: TradeFilter, paging: Paging, columns: tuple[str, ...]) -> Page:
    """``list_trades`` for serialising only: the rows hold ``columns`` (which must include ``created_at`` and
    ``id``) as ``served_columns`` gives them. Keyset pages run on the driver (``driver.fetch_rows``); offset pages
    (``skip``) need an ``AsyncConnection``."""
    dialect = connection.dialect.name
    if paging.skip is not None:
        if not isinstance(connection, AsyncConnection):
            raise TypeError("offset paging runs through SQLAlchemy: pass an AsyncConnection")
        query = select(*served_columns(TradeRow.__table__, columns, dialect)).where(*filters.conditions())
        return await paged(connection, query, TradeRow.created_at, TradeRow.id, paging)
    check_range(filters.from_date, filters.to_date)
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
    return page_of(rows, paging, lambda row: Cursor(row[created_at], row[row_id]))


async def get_trade(connection: AsyncConnection, trade_id: str) -> Row[Any] | None:
    return (await connection.execute(select(TradeRow.__table__).where(TradeRow.trade_id == trade_id))).first()
