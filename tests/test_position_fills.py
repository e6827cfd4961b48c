"""Fills reach the positions exactly once: the position change and its marker are one store write, a
second application changes nothing, and reconciliation applies filled orders a crash left out."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from src.domain.exits import ExitPolicy
from src.domain.orders import OrderStatus, Side
from src.exceptions import InvalidInput, PositionConflict
from src.position import PositionService
from src.risk import InMemoryRiskStore, PositionChange, PositionRecord, PositionStatus
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.repository import TradeRecord
from tests.support.crashes import ProcessDied
from tests.support.position_rig import MODE, SYMBOL, Rig, make_rig

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
D = Decimal


class CrashingRepository(InMemoryTradingRepository):
    """Dies once when the realised P&L is written (after the position and its marker were)."""

    crash_on_pnl = False

    def arm_crash(self) -> None:
        self.crash_on_pnl = True

    async def record_realized_pnl(self, pnl_by_trade_id: dict[str, Decimal]) -> None:
        if self.crash_on_pnl:
            self.crash_on_pnl = False
            raise ProcessDied
        await super().record_realized_pnl(pnl_by_trade_id)


InMemoryRig = Rig[CrashingRepository, InMemoryRiskStore]


def rig() -> InMemoryRig:
    return make_rig(CrashingRepository(), InMemoryRiskStore())


async def _buy_then_sell(subject: InMemoryRig) -> tuple[PositionRecord, list[TradeRecord]]:
    service = subject.service()
    bought = await service.market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    held = await subject.positions.get(SYMBOL)
    assert held is not None
    sold = await service.market_sell(SYMBOL, held.amount, reason="exit: take_profit", cycle_id=None)
    assert bought.filled
    assert sold.filled
    [closed] = await subject.store.list_closed_positions(MODE)
    return closed, [t for t in subject.repo.trades.values() if t.side is Side.SELL]


# --- PositionService and the in-memory store -----------------------------------------------------------
async def test_the_same_order_applied_twice_changes_the_position_once() -> None:
    # Given a position opened by order b-1
    service = PositionService(InMemoryRiskStore(), ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    opened = await service.on_fill(SYMBOL, Side.BUY, D("100000000"), D("0.02"), D("1000"), AT, order_identifier="b-1")
    # When b-1 is applied again, then nothing changes and the earlier outcome comes back
    again = await service.on_fill(SYMBOL, Side.BUY, D("100000000"), D("0.02"), D("1000"), AT, order_identifier="b-1")
    assert again.already_applied
    assert "already applied" in again.notes[0]
    assert again.position == opened.position
    [position] = await service.open_positions()
    assert (position.amount, position.entry_fee) == (D("0.02"), D("1000"))
    # When a partial sell s-1 is applied twice, then it reduces the position once and both return its P&L
    first = await service.on_fill(SYMBOL, Side.SELL, D("110000000"), D("0.01"), D("550"), AT, order_identifier="s-1")
    second = await service.on_fill(SYMBOL, Side.SELL, D("110000000"), D("0.01"), D("550"), AT, order_identifier="s-1")
    assert first.realized_pnl == second.realized_pnl == D("98950")
    assert second.already_applied
    assert not first.already_applied
    [position] = await service.open_positions()
    assert position.amount == D("0.01")
    assert position.realized_pnl == D("98950")


async def test_a_sell_without_a_position_is_marked_applied_too() -> None:
    # Given a sell of a holding the bot does not track
    store = InMemoryRiskStore()
    service = PositionService(store, ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    await service.on_fill(SYMBOL, Side.SELL, D("100000000"), D("0.01"), D("500"), AT, order_identifier="s-x")
    # When a position is opened later and the old sell is applied again, then it does not touch that position
    await service.on_fill(SYMBOL, Side.BUY, D("100000000"), D("0.02"), D("1000"), AT, order_identifier="b-1")
    replayed = await service.on_fill(SYMBOL, Side.SELL, D("100000000"), D("0.01"), D("500"), AT, order_identifier="s-x")
    assert replayed.already_applied
    assert replayed.position is None
    assert replayed.realized_pnl is None
    [position] = await service.open_positions()
    assert position.amount == D("0.02")


async def test_a_refused_change_writes_no_marker() -> None:
    # Given an open position in the symbol
    store = InMemoryRiskStore()
    held = PositionRecord(SYMBOL, MODE, D("1"), D("1"), AT, D("1"))
    await store.open_position(held)
    # When another open is applied with an order, then it is refused and the order is not marked applied
    with pytest.raises(PositionConflict):
        await store.apply_fill(PositionChange("b-2", MODE, AT, held))
    assert await store.applied_fill("b-2") is None


async def test_an_order_identifier_is_required() -> None:
    service = PositionService(InMemoryRiskStore(), ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    with pytest.raises(InvalidInput, match="order_identifier"):
        await service.on_fill(SYMBOL, Side.BUY, D("1"), D("1"), D("0"), AT, order_identifier=" ")


# --- TradingService: crash after the trades, repaired by reconciliation ---------------------------------
async def test_buy_then_sell_updates_the_position_and_writes_the_pnl() -> None:
    # Given no crash; When a buy and a sell of the whole position run
    subject = rig()
    closed, sells = await _buy_then_sell(subject)
    # Then the position is closed with the sale's P&L on its trades, and reconciliation finds nothing to do
    assert closed.status is PositionStatus.CLOSED
    assert closed.exit_reason == "take_profit"
    assert sum((t.realized_pnl for t in sells if t.realized_pnl is not None), D("0")) == closed.realized_pnl
    assert await subject.service().reconcile() == []
    assert subject.repo.logs == []


async def test_a_crash_after_the_buy_settled_is_repaired_by_reconciliation_once() -> None:
    # Given a buy whose process died after its order and trades were written, before the position
    subject = rig()
    subject.book.crash_before_apply = True
    with pytest.raises(ProcessDied):
        await subject.service().market_buy(SYMBOL, D("1000000"), reason="test", cycle_id=None)
    [order] = subject.repo.orders.values()
    assert order.status is OrderStatus.FILLED
    assert await subject.positions.open_positions() == []
    # When a restarted service reconciles, twice
    restarted = subject.service()
    await restarted.reconcile()
    await restarted.reconcile()
    # Then the position holds the bought volume once, and the repair was logged once
    [position] = await subject.positions.open_positions()
    assert position.amount == order.filled_amount
    assert position.entry_fee == order.paid_fee
    assert [message for _, message, _ in subject.repo.logs] == ["filled order applied to positions by reconciliation"]


async def test_a_crash_after_the_sell_settled_is_repaired_with_the_same_pnl() -> None:
    # Given the reference: buy then sell without a crash
    reference, reference_sells = await _buy_then_sell(rig())
    # Given the same buy, then a sell whose process died before the position was told
    subject = rig()
    held = await subject.buy_then_die_selling(subject.book.arm_crash, reason="exit: take_profit")
    assert [p.amount for p in await subject.positions.open_positions()] == [held.amount]
    # When a restarted service reconciles twice
    await subject.service().reconcile()
    await subject.service().reconcile()
    # Then the position is closed exactly as without the crash, and the P&L is on the sell's trades
    [closed] = await subject.store.list_closed_positions(MODE)
    assert (closed.realized_pnl, closed.exit_price, closed.exit_reason) == (
        reference.realized_pnl,
        reference.exit_price,
        "take_profit",
    )
    sells = [t for t in subject.repo.trades.values() if t.side is Side.SELL]
    assert [t.realized_pnl for t in sells] == [t.realized_pnl for t in reference_sells]
    assert await subject.positions.open_positions() == []


async def test_a_crash_between_the_position_and_the_pnl_write_is_repaired_without_a_second_change() -> None:
    # Given a sell whose position was closed (marker written) but whose P&L never reached its trades
    subject = rig()
    await subject.buy_then_die_selling(subject.repo.arm_crash, reason="exit: stop_loss")
    [closed] = await subject.store.list_closed_positions(MODE)
    sells = [t for t in subject.repo.trades.values() if t.side is Side.SELL]
    assert all(t.realized_pnl is None for t in sells)
    # When reconciliation runs
    await subject.service().reconcile()
    # Then the P&L is on the trades and the position is unchanged
    sells = [t for t in subject.repo.trades.values() if t.side is Side.SELL]
    assert sum((t.realized_pnl or D("0") for t in sells), D("0")) == closed.realized_pnl
    assert await subject.store.list_closed_positions(MODE) == [closed]
