"""Alembic is the only way the schema is made: up and down on both databases, and a clear stop when behind."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

import backend.app.models  # noqa: F401
from backend.app.db.base import Base
from backend.app.db.migrations import (
    alembic_config,
    downgrade_to_base,
    ensure_schema_current,
    head_revision,
    upgrade_to_head,
)
from backend.app.db.session import create_engine
from backend.app.db.types import ExactDecimal, JSONType, UTCDateTime
from src.api.interfaces import ExchangeOrderState
from src.domain.bot import BotState
from src.domain.decisions import DecisionSource
from src.domain.exits import STORED_EXIT_REASONS, ExitReason
from src.domain.modes import TradingMode
from src.exceptions import DatabaseNotMigratedError
from src.trading.pipeline.context import CycleStatus, cycle_outcomes


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names


def _fresh_url(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_upgrade_head_then_downgrade_base(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> None:
    # Given a migrated database (the PostgreSQL one is the session's, already at head)
    url = _fresh_url(request, tmp_path, backend)
    upgrade_to_head(url)
    assert set(Base.metadata.tables) <= asyncio.run(_tables(url))
    # When migrated down to base
    downgrade_to_base(url)
    # Then no table of ours is left, and migrating up again restores them
    assert asyncio.run(_tables(url)) & set(Base.metadata.tables) == set()
    upgrade_to_head(url)
    assert set(Base.metadata.tables) <= asyncio.run(_tables(url))


async def test_a_database_behind_head_is_refused_with_the_fix(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DatabaseNotMigratedError) as caught:
        await ensure_schema_current(engine)
    await engine.dispose()
    assert "has no schema yet" in caught.value.message
    assert head_revision() in caught.value.message
    assert "make migrate" in caught.value.message


async def test_a_current_database_passes(db_engine) -> None:  # type: ignore[no-untyped-def]
    await ensure_schema_current(db_engine)


def test_models_and_migrations_agree(tmp_path: Path) -> None:
    """Autogenerate against a migrated database finds nothing to do: the models match the migrations."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    url = f"sqlite+aiosqlite:///{tmp_path / 'cmp.db'}"
    upgrade_to_head(url)

    async def diff() -> list:
        engine = create_engine(url)
        async with engine.connect() as connection:
            result = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        await engine.dispose()
        return result

    assert asyncio.run(diff()) == []


# --- 0006: enum-constrained columns and exit_reason, with rows present ----------------------------------
def _lightweight_tables() -> dict[str, sa.TableClause]:
    """Only the columns a 0005 row needs, typed as the models type them (money, times, JSON)."""
    money, when = ExactDecimal(), UTCDateTime()
    return {
        "ai_decisions": sa.table(
            "ai_decisions", *(sa.column(n) for n in ("symbol", "decision", "final_decision", "source", "purpose"))
        ),
        "positions": sa.table(
            "positions",
            *(sa.column(n) for n in ("symbol", "mode", "status", "exit_reason")),
            *(sa.column(n, money) for n in ("amount", "avg_entry_price", "highest_price")),
            sa.column("entry_at", when),
        ),
        "trading_cycles": sa.table(
            "trading_cycles",
            *(sa.column(n) for n in ("cycle_id", "symbol", "mode", "status", "outcome")),
            sa.column("started_at", when),
            sa.column("stages", JSONType),
        ),
        "bot_state": sa.table(
            "bot_state",
            *(sa.column(n) for n in ("instance_name", "state", "mode")),
            sa.column("symbols", JSONType),
            sa.column("heartbeat_at", when),
        ),
        "paper_orders": sa.table(
            "paper_orders",
            *(sa.column(n) for n in ("account", "uuid", "identifier", "symbol", "state")),
            sa.column("payload", JSONType),
        ),
        "orders": sa.table(
            "orders",
            *(sa.column(n) for n in ("id", "order_id", "identifier", "symbol", "side", "order_type", "status", "mode")),
            sa.column("amount", money),
        ),
        "trades": sa.table(
            "trades",
            *(sa.column(n) for n in ("trade_id", "order_id", "symbol", "side", "status", "mode")),
            *(sa.column(n, money) for n in ("price", "amount", "total")),
        ),
    }


def _rows_of_every_legal_value() -> dict[str, list[dict[str, object]]]:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    one = Decimal("1")
    position = {"symbol": "KRW-BTC", "mode": "paper", "amount": one, "avg_entry_price": one, "highest_price": one}
    return {
        "ai_decisions": [
            {"symbol": "KRW-BTC", "decision": "buy", "final_decision": "hold", "source": source, "purpose": "decision"}
            for source in DecisionSource
        ],
        "positions": [
            {**position, "symbol": f"KRW-{reason.name[:4]}", "status": "closed", "exit_reason": reason.value}
            for reason in STORED_EXIT_REASONS
            if reason not in (ExitReason.TIME_OUT, ExitReason.MARKET_WARNING)  # allowed from 0007 and 0011 on
        ]
        + [{**position, "status": "open", "exit_reason": None, "entry_at": now}],
        "trading_cycles": [
            {"cycle_id": f"c{i}", "symbol": "KRW-BTC", "mode": "replay", "status": status, "outcome": outcome}
            for i, (status, outcome) in enumerate(
                [(CycleStatus.ERROR, "error")] + [(CycleStatus.OK, outcome) for outcome in cycle_outcomes()]
            )
        ],
        "bot_state": [
            {"instance_name": f"bot-{state}", "state": state, "mode": mode, "symbols": ["KRW-BTC"]}
            for state, mode in zip(BotState, [*TradingMode, *TradingMode], strict=False)
        ],
        "paper_orders": [
            {"account": "paper", "uuid": f"u-{state}", "identifier": f"i-{state}", "symbol": "KRW-BTC", "state": state}
            for state in ExchangeOrderState
            if state is not ExchangeOrderState.PREVENTED  # allowed from 0013 on
        ],
        "orders": [
            {
                "id": 1,
                "order_id": "o1",
                "identifier": "o1",
                "symbol": "KRW-BTC",
                "side": "sell",
                "order_type": "market",
                "status": "filled",
                "mode": "paper",
                "amount": one,
            }
        ],
        "trades": [
            {
                "trade_id": "t1",
                "order_id": 1,
                "symbol": "KRW-BTC",
                "side": "sell",
                "status": "completed",
                "mode": "paper",
                "price": one,
                "amount": one,
                "total": one,
            }
        ],
    }


async def _seed_at_0005(url: str) -> None:
    tables, rows = _lightweight_tables(), _rows_of_every_legal_value()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    engine = create_engine(url)
    async with engine.begin() as connection:
        for name, table in tables.items():
            for row in rows[name]:
                defaults = {"entry_at": now, "started_at": now, "stages": [], "heartbeat_at": now, "payload": {}}
                values = {**{k: v for k, v in defaults.items() if k in table.c}, **row}
                await connection.execute(sa.insert(table).values(**values))
    await engine.dispose()


async def _column_values(url: str) -> dict[str, list[tuple[object, ...]]]:
    queries = {
        "ai_decisions": "SELECT source FROM ai_decisions ORDER BY source",
        "positions": "SELECT status, exit_reason FROM positions ORDER BY symbol",
        "trading_cycles": "SELECT status, outcome FROM trading_cycles ORDER BY cycle_id",
        "bot_state": "SELECT state, mode FROM bot_state ORDER BY instance_name",
        "paper_orders": "SELECT state FROM paper_orders ORDER BY uuid",
        "orders": "SELECT side, status FROM orders",
        "trades": "SELECT side, status FROM trades",
    }
    engine = create_engine(url)
    async with engine.connect() as connection:
        found = {name: [tuple(row) for row in await connection.execute(sa.text(sql))] for name, sql in queries.items()}
    await engine.dispose()
    return found


async def _columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns(table)})
    await engine.dispose()
    return names


async def _insert_refused(url: str, sql: str) -> bool:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.text(sql))
    except IntegrityError:
        return True
    finally:
        await engine.dispose()
    return False


async def _empty_all(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(table.delete())
    await engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_0006_keeps_every_legal_value_and_refuses_others(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    # Given a database at 0005 holding a row for every value the code writes into the columns 0006 constrains
    url = _fresh_url(request, tmp_path, backend)
    upgrade_to_head(url)
    asyncio.run(_empty_all(url))
    command.downgrade(alembic_config(url), "0005")
    asyncio.run(_seed_at_0005(url))
    before = asyncio.run(_column_values(url))
    try:
        # When migrated up to 0006
        command.upgrade(alembic_config(url), "0006")
        # Then every row is kept as it was, sells gain an (empty) exit_reason, and an illegal value is refused
        assert asyncio.run(_column_values(url)) == before
        assert "exit_reason" in asyncio.run(_columns(url, "orders")) & asyncio.run(_columns(url, "trades"))
        for sql in (
            "UPDATE positions SET exit_reason = 'manual'",
            "UPDATE trading_cycles SET outcome = 'sell_maybe'",
            "UPDATE ai_decisions SET source = 'oracle'",
            "UPDATE bot_state SET state = 'asleep'",
            "UPDATE paper_orders SET state = 'lost'",
            "UPDATE orders SET exit_reason = 'panic'",
            "UPDATE trades SET exit_reason = 'panic'",
            "UPDATE positions SET status = 'ajar'",
        ):
            assert asyncio.run(_insert_refused(url, sql)), sql
        # And down again, the rows are still there and exit_reason is gone
        command.downgrade(alembic_config(url), "0005")
        assert asyncio.run(_column_values(url)) == before
        assert "exit_reason" not in asyncio.run(_columns(url, "orders")) | asyncio.run(_columns(url, "trades"))
    finally:
        command.upgrade(alembic_config(url), "head")
        asyncio.run(_empty_all(url))


# --- 0007: the time_out exit reason and positions.entry_atr ------------------------------------------------------
async def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        for sql in statements:
            await connection.execute(sa.text(sql))
    await engine.dispose()


async def _exit_reasons(url: str) -> dict[str, set[object]]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        found = {
            table: {row[0] for row in await connection.execute(sa.text(f"SELECT exit_reason FROM {table}"))}
            for table in ("positions", "orders", "trades")
        }
    await engine.dispose()
    return found


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_0007_allows_time_out_on_positions_orders_and_trades(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    # Given a database at 0006 with a closed position, its sell order and trade, each closed by a stop-loss
    url = _fresh_url(request, tmp_path, backend)
    upgrade_to_head(url)
    asyncio.run(_empty_all(url))
    command.downgrade(alembic_config(url), "0006")
    asyncio.run(_seed_at_0005(url))
    asyncio.run(
        _execute(url, *(f"UPDATE {t} SET exit_reason = 'stop_loss'" for t in ("positions", "orders", "trades")))
    )
    assert asyncio.run(_insert_refused(url, "UPDATE trades SET exit_reason = 'time_out'"))
    try:
        # When migrated up to 0007
        command.upgrade(alembic_config(url), "0007")
        # Then the rows are kept, time_out is a legal exit reason of all three, and others are still refused
        assert asyncio.run(_exit_reasons(url)) == {t: {"stop_loss"} for t in ("positions", "orders", "trades")}
        assert "entry_atr" in asyncio.run(_columns(url, "positions"))
        asyncio.run(
            _execute(url, *(f"UPDATE {t} SET exit_reason = 'time_out'" for t in ("positions", "orders", "trades")))
        )
        assert asyncio.run(_exit_reasons(url)) == {t: {"time_out"} for t in ("positions", "orders", "trades")}
        for table in ("positions", "orders", "trades"):
            assert asyncio.run(_insert_refused(url, f"UPDATE {table} SET exit_reason = 'panic'")), table
        # And down again, a time-out becomes a plain sell (0006 cannot say time_out) and entry_atr is gone
        command.downgrade(alembic_config(url), "0006")
        assert asyncio.run(_exit_reasons(url)) == {t: {"sell"} for t in ("positions", "orders", "trades")}
        assert "entry_atr" not in asyncio.run(_columns(url, "positions"))
    finally:
        command.upgrade(alembic_config(url), "head")
        asyncio.run(_empty_all(url))
