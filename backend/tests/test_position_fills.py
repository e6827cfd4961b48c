"""Fills reach the positions exactly once on SQLite and PostgreSQL: the position change and its
``position_fills`` marker are one transaction, and reconciliation applies filled orders a crash left out."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.migrations import alembic_config, upgrade_to_head
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.db.session import session_factory
from backend.app.models import PositionFillRow, SystemLogRow
from src.domain.events import EventKind, NullNotifier
from src.domain.exits import ExitPolicy
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, Side
from src.exceptions import PositionConflict
from src.position import PositionService
from src.risk import PositionChange, PositionRecord, PositionStatus
from src.trading.service import TradingService
from tests.support.crashes import ProcessDied
from tests.support.exchange_faults import AnswerFaults
from tests.support.position_rig import MODE, SYMBOL, Rig, make_rig
from tests.support.rows import count_rows

Sessions = async_sessionmaker[AsyncSession]
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
D = Decimal


def rig(sessions: Sessions) -> Rig[SqlTradingRepository, SqlRiskStore]:
    return make_rig(SqlTradingRepository(sessions), SqlRiskStore(sessions))


# --- the store ------------------------------------------------------------------------------------------
async def test_applying_an_order_twice_changes_the_position_once(db_sessions: Sessions) -> None:
    # Given a position opened by order b-1 and partly sold by s-1
    store = SqlRiskStore(db_sessions)
    service = PositionService(store, ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    await service.on_fill(SYMBOL, Side.BUY, D("100000000"), D("0.02"), D("1000"), AT, order_identifier="b-1")
    first = await service.on_fill(SYMBOL, Side.SELL, D("110000000"), D("0.01"), D("550"), AT, order_identifier="s-1")
    # When both orders are applied again
    again_buy = await service.on_fill(
        SYMBOL, Side.BUY, D("100000000"), D("0.02"), D("1000"), AT, order_identifier="b-1"
    )
    again_sell = await service.on_fill(
        SYMBOL, Side.SELL, D("110000000"), D("0.01"), D("550"), AT, order_identifier="s-1"
    )
    # Then nothing changed, the earlier P&L came back, and one marker per order exists
    assert again_buy.already_applied
    assert again_sell.already_applied
    assert again_sell.realized_pnl == first.realized_pnl == D("98950")
    [position] = await service.open_positions()
    assert (position.amount, position.entry_fee, position.realized_pnl) == (D("0.01"), D("500"), D("98950"))
    assert await count_rows(db_sessions, PositionFillRow) == 2
    applied = await store.applied_fill("s-1")
    assert applied is not None
    assert applied.position is not None
    assert (applied.position.id, applied.realized_pnl) == (position.id, D("98950"))


async def test_a_replayed_change_through_the_store_itself_is_a_no_op(db_sessions: Sessions) -> None:
    # Given an order applied through apply_fill
    store = SqlRiskStore(db_sessions)
    change = PositionChange("b-1", MODE, AT, PositionRecord(SYMBOL, MODE, D("1"), D("100"), AT, D("100")))
    first = await store.apply_fill(change)
    # When the same change is applied again (as a second process would)
    second = await store.apply_fill(change)
    # Then it returns the earlier outcome and no second position or marker exists
    assert not first.replayed
    assert second.replayed
    assert second.position == first.position
    assert len(await store.list_open_positions(MODE)) == 1
    assert await count_rows(db_sessions, PositionFillRow) == 1


async def test_a_refused_change_writes_no_marker(db_sessions: Sessions) -> None:
    # Given an open position in the symbol
    store = SqlRiskStore(db_sessions)
    held = PositionRecord(SYMBOL, MODE, D("1"), D("1"), AT, D("1"))
    await store.open_position(held)
    # When a second open position comes with an order, then it is refused and nothing is written
    with pytest.raises(PositionConflict):
        await store.apply_fill(PositionChange("b-2", MODE, AT, held))
    assert await store.applied_fill("b-2") is None
    assert await count_rows(db_sessions, PositionFillRow) == 0


# --- the trading service: crash after the trades, repaired by reconciliation ----------------------------
async def test_a_crash_after_settling_a_buy_is_repaired_once(db_sessions: Sessions) -> None:
    # Given a buy whose process died after its order and trades were committed, before the position
    subject = rig(db_sessions)
    subject.book.crash_before_apply = True
    with pytest.raises(ProcessDied):
        await subject.service().market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    [order] = await subject.repo.list_orders([OrderStatus.FILLED], MODE)
    assert await subject.positions.open_positions() == []
    [(missing, trades)] = await subject.repo.list_filled_orders_without_position(MODE)
    assert missing.identifier == order.identifier
    assert trades
    # When a restarted service reconciles twice
    await subject.service().reconcile()
    await subject.service().reconcile()
    # Then the position holds the bought volume once and nothing is left to repair
    [position] = await subject.positions.open_positions()
    assert (position.amount, position.entry_fee) == (order.filled_amount, order.paid_fee)
    assert await subject.repo.list_filled_orders_without_position(MODE) == []
    assert await count_rows(db_sessions, PositionFillRow) == 1


async def test_buy_then_sell_with_a_crash_after_the_sale_gives_the_same_position_and_pnl(db_sessions: Sessions) -> None:
    # Given a buy and a sale of the whole position whose process died before the position was told
    subject = rig(db_sessions)
    held = await subject.buy_then_die_selling(subject.book.arm_crash, reason="exit: take_profit")
    assert [p.amount for p in await subject.positions.open_positions()] == [held.amount]
    # When a restarted service reconciles twice
    await subject.service().reconcile()
    await subject.service().reconcile()
    # Then the position is closed once with its reason, and the sale's P&L (net of both fees) is on its trades
    [closed] = await subject.store.list_closed_positions(MODE)
    assert closed.status is PositionStatus.CLOSED
    assert closed.exit_reason == "take_profit"
    [sale] = [o for o in await subject.repo.list_orders([OrderStatus.FILLED], MODE) if o.side is Side.SELL]
    expected = sale.executed_funds - sale.paid_fee - held.amount * held.avg_entry_price - held.entry_fee
    assert closed.realized_pnl == expected.quantize(D("0.00000001"))
    sells = [t for t in await subject.repo.list_trades(mode=MODE) if t.side is Side.SELL]
    assert sum((t.realized_pnl or D("0") for t in sells), D("0")) == closed.realized_pnl
    assert all(t.realized_pnl is not None for t in sells)
    assert await subject.repo.list_filled_orders_without_position(MODE) == []


async def test_a_marker_whose_pnl_never_reached_the_trades_is_completed_without_a_second_change(
    db_sessions: Sessions,
) -> None:
    # Given a buy and a sale applied to the position, then the sale's P&L wiped from its trades
    # (the state a crash between the position's transaction and the P&L write leaves)
    subject = rig(db_sessions)
    service = subject.service()
    await service.market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    held = await subject.positions.get(SYMBOL)
    assert held is not None
    await service.market_sell(SYMBOL, held.amount, reason="signal", cycle_id=None)
    [closed] = await subject.store.list_closed_positions(MODE)
    assert await subject.repo.list_filled_orders_without_position(MODE) == []  # nothing to repair without a crash
    async with db_sessions.begin() as session:
        await session.execute(text("UPDATE trades SET realized_pnl = NULL"))
    assert len(await subject.repo.list_filled_orders_without_position(MODE)) == 1
    # When reconciliation runs
    await subject.service().reconcile()
    # Then the P&L is back on the trades and the position is unchanged
    sells = [t for t in await subject.repo.list_trades(mode=MODE) if t.side is Side.SELL]
    assert sum((t.realized_pnl or D("0") for t in sells), D("0")) == closed.realized_pnl
    assert await subject.store.list_closed_positions(MODE) == [closed]
    assert await subject.repo.list_filled_orders_without_position(MODE) == []


async def test_other_modes_are_left_alone(db_sessions: Sessions) -> None:
    # Given a paper buy that crashed before its position
    subject = rig(db_sessions)
    subject.book.crash_before_apply = True
    with pytest.raises(ProcessDied):
        await subject.service().market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    # Then a live reconciliation does not see it
    assert await subject.repo.list_filled_orders_without_position(TradingMode.LIVE) == []


# --- the migration --------------------------------------------------------------------------------------
async def test_the_migration_marks_orders_filled_before_it_as_applied(
    database_url: str, db_engine: AsyncEngine
) -> None:
    """Given a database at 0002 with a filled order (its position updated by the old code) and a pending
    one, when migrated to head, then only the filled order is marked applied, so it is never applied again."""
    await db_engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(database_url), "0002")
    try:
        async with db_engine.begin() as connection:
            for identifier, status in (("old-filled", "filled"), ("old-pending", "pending")):
                await connection.execute(
                    text(
                        "INSERT INTO orders (order_id, identifier, symbol, side, order_type, requested_total, "
                        "status, mode) VALUES (:i, :i, 'KRW-BTC', 'buy', 'price', '10000', :s, 'paper')"
                    ),
                    {"i": identifier, "s": status},
                )
            await connection.execute(
                text(
                    "INSERT INTO trades (trade_id, order_id, symbol, side, price, amount, total, fee, status, mode) "
                    "SELECT 'old-fill', id, 'KRW-BTC', 'buy', '100', '100', '10000', '5', 'completed', 'paper' "
                    "FROM orders WHERE identifier = 'old-filled'"
                )
            )
        await db_engine.dispose()
    finally:
        await asyncio.to_thread(upgrade_to_head, database_url)
    repo = SqlTradingRepository(session_factory(db_engine))
    assert await repo.list_filled_orders_without_position(MODE) == []
    store = SqlRiskStore(session_factory(db_engine))
    marked = await store.applied_fill("old-filled")
    assert marked is not None
    assert (marked.position, marked.realized_pnl) == (None, None)
    assert await store.applied_fill("old-pending") is None


# --- reconciliation: one bad answer is isolated ----------------------------------------------------------
async def test_a_malformed_answer_for_one_order_does_not_stop_the_others_nor_the_repair(db_sessions: Sessions) -> None:
    # Given a filled buy whose process died before the position was updated
    subject = rig(db_sessions)
    subject.book.crash_before_apply = True
    with pytest.raises(ProcessDied):
        await subject.service().market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    # and two buys whose answers were lost (both pending)
    faults = AnswerFaults(subject.exchange)
    faults.lose_answers = True
    notifier = NullNotifier()
    service = TradingService(
        faults,
        subject.repo,
        mode=MODE,
        instance="bot-1",
        clock=lambda: subject.now,
        positions=subject.book,
        notifier=notifier,
    )
    bad = await service.market_buy(SYMBOL, D("200000"), reason="test", cycle_id=None)
    good = await service.market_buy(SYMBOL, D("300000"), reason="test", cycle_id=None)
    assert (bad.status, good.status) == (OrderStatus.PENDING, OrderStatus.PENDING)
    # and the exchange answers the query for the first with valid JSON that is not an order
    faults.lose_answers = False
    faults.malformed[bad.identifier] = {"market": SYMBOL, "state": "done"}

    # When reconciliation runs
    results = await service.reconcile()

    # Then the other order is settled, the bad one stays pending with the answer recorded on its row
    statuses = {result.identifier: result.status for result in results}
    assert statuses == {bad.identifier: OrderStatus.PENDING, good.identifier: OrderStatus.FILLED}
    [pending] = await subject.repo.list_orders([OrderStatus.PENDING], MODE)
    assert pending.identifier == bad.identifier
    assert pending.error_message is not None
    assert pending.error_message.startswith("DataError: unexpected Upbit order object")
    assert "'state': 'done'" in pending.error_message
    # and in system_logs, and an ERROR event was announced
    async with db_sessions() as session:
        logged = [row for row in await session.scalars(select(SystemLogRow)) if row.level == "error"]
    assert [row.context["identifier"] for row in logged] == [bad.identifier]
    [alert] = [event for event in notifier.events if event.kind is EventKind.ERROR]
    assert alert.fields["identifier"] == bad.identifier
    # and the position repair still ran: the crashed buy and the settled one are both in the position
    filled = await subject.repo.list_orders([OrderStatus.FILLED], MODE)
    [position] = await subject.positions.open_positions()
    assert position.amount == sum((order.filled_amount for order in filled), D("0"))
    assert len(filled) == 2
