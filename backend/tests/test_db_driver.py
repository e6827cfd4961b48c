"""Reads on the driver (``backend.app.db.driver``): the same rows SQLAlchemy would give, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC

import asyncpg
import pytest
from sqlalchemy import bindparam, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.app.db.driver import driver_connection, fetch_one, fetch_rows
from backend.app.db.queries.trades import served_columns
from backend.app.db.session import create_engine
from backend.app.models import TradeRow
from backend.tests.conftest import Seeder, at
from src.domain.orders import Side

COLUMNS = ("id", "side", "price", "amount", "fee", "realized_pnl", "created_at")


def _page_statement(dialect: str):  # type: ignore[no-untyped-def]
    table = TradeRow.__table__
    return (
        select(*served_columns(table, COLUMNS, dialect))
        .where(table.c.side == bindparam("side"))
        .order_by(table.c.created_at.desc())
        .limit(bindparam("limit"))
    )


async def test_rows_serve_money_as_fixed_point_text_and_times_in_utc(db_engine: AsyncEngine, seed: Seeder) -> None:
    # Given sells with a tiny amount, a zero fee and no realised P&L, and a buy
    await seed.add(
        seed.trade(at(0), side=Side.SELL, price="123456789012.12345678", amount="0.00000001", fee="0"),
        seed.trade(at(1), side=Side.SELL, price="100", amount="2.5", fee="0.0000005", realized_pnl="-12.5"),
        seed.trade(at(2), side=Side.BUY),
    )
    async with db_engine.connect() as connection:
        statement = _page_statement(connection.dialect.name)
        # When the newest sells are read twice (the second time from the compiled statement)
        first = await fetch_rows(connection, statement, {"side": Side.SELL, "limit": 5})
        second = await fetch_rows(connection, statement, {"side": Side.SELL, "limit": 5})
    # Then money is the fixed-point text of NUMERIC(20,8) on both databases, and times are UTC-aware
    rows = [dict(zip(COLUMNS, row, strict=True)) for row in first]
    money = [(row["side"], row["price"], row["amount"], row["fee"], row["realized_pnl"]) for row in rows]
    assert money == [
        ("sell", "100.00000000", "2.50000000", "0.00000050", "-12.50000000"),
        ("sell", "123456789012.12345678", "0.00000001", "0.00000000", None),
    ]  # fmt: skip
    assert [row["created_at"] for row in rows] == [at(1), at(0)]
    assert all(row["created_at"].utcoffset() == UTC.utcoffset(None) for row in rows)
    assert [tuple(row) for row in second] == [tuple(row) for row in first]


async def test_one_row_is_read_by_attribute_and_anything_else_is_an_error(db_engine: AsyncEngine, seed: Seeder) -> None:
    # Given one buy
    await seed.add(seed.trade(at(0), side=Side.BUY, price="5000"))
    async with db_engine.connect() as connection:
        statement = _page_statement(connection.dialect.name)
        # When the one buy is read, its columns are attributes
        row = await fetch_one(connection, statement, {"side": Side.BUY, "limit": 5})
        assert (row.side, row.price, row.created_at) == ("buy", "5000.00000000", at(0))
        with pytest.raises(AttributeError):
            _ = row.no_such_column
        # Then no row, or a parameter left out, is an error rather than a silent default
        with pytest.raises(LookupError, match="expected one row, got 0"):
            await fetch_one(connection, statement, {"side": Side.SELL, "limit": 5})
        with pytest.raises(SQLAlchemyError, match="side"):
            await fetch_rows(connection, statement, {"limit": 5})


@pytest.mark.postgres
async def test_a_driver_connection_that_dropped_is_replaced(postgres_url: str) -> None:
    """On PostgreSQL: a pooled asyncpg connection used directly (``driver_connection``, the API's keyset pages)
    that closes under a request fails that request, and the pool hands the next one a working connection."""
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0, pre_ping=False)
    statement = select(literal(1).label("one")).where(literal(1) == bindparam("one"))
    try:
        # Given a read on the driver that works
        async with driver_connection(engine) as connection:
            assert [tuple(row) for row in await fetch_rows(connection, statement, {"one": 1})] == [(1,)]
        # When the pool's only connection is closed under the next request (the server restarted, say)
        async with driver_connection(engine) as connection:
            await connection.driver.close()
            request = fetch_rows(connection, statement, {"one": 1})
            with pytest.raises(asyncpg.InterfaceError):
                await request
        # Then the request after it reads as before, on a new connection
        async with driver_connection(engine) as connection:
            assert not connection.driver.is_closed()
            assert [tuple(row) for row in await fetch_rows(connection, statement, {"one": 1})] == [(1,)]
    finally:
        await engine.dispose()
