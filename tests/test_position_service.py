"""PositionService over the in-memory store: opening, averaging, exit levels from the strategy's ExitPolicy (the
backtest's own ``exit_levels``), trailing, levels moved by a new policy, realised P&L with fees."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from src.config.trading_groups import RiskConfig
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import Side
from src.exceptions import InvalidInput, PositionConflict
from src.position import PositionService
from src.risk import InMemoryRiskStore, PositionRecord, PositionStatus, RiskManager
from src.risk.exits import exit_levels

MODE = TradingMode.PAPER
AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
D = Decimal
FEE = D("0.0005")
_ORDERS = itertools.count(1)


def _order() -> str:
    """A fresh order identifier: every fill of these tests is a different order."""
    return f"order-{next(_ORDERS)}"


PERCENT = ExitPolicy(stop_loss_pct=5, take_profit_pct=10)


def _service(store: InMemoryRiskStore | None = None, policy: ExitPolicy = PERCENT) -> PositionService:
    return PositionService(store or InMemoryRiskStore(), policy, MODE)


async def _buy(service: PositionService, price: str, volume: str, at: datetime = AT, **kw: Any) -> Any:
    total = D(price) * D(volume)
    kw.setdefault("order_identifier", _order())
    return await service.on_fill("KRW-BTC", Side.BUY, D(price), D(volume), total * FEE, at, **kw)


async def _sell(service: PositionService, price: str, volume: str, **kw: Any) -> Any:
    total = D(price) * D(volume)
    kw.setdefault("order_identifier", _order())
    return await service.on_fill("KRW-BTC", Side.SELL, D(price), D(volume), total * FEE, AT + timedelta(hours=5), **kw)


async def test_a_buy_opens_a_position_with_percent_levels() -> None:
    # Given no position; When 0.02 BTC is bought at 100,000,000 KRW
    service = _service()
    outcome = await _buy(service, "100000000", "0.02")
    # Then a position is open at that price with stop -5% and target +10%, trailing off
    position = outcome.position
    assert outcome.opened
    assert not outcome.closed
    assert outcome.realized_pnl is None
    assert (position.amount, position.avg_entry_price, position.entry_fee) == (D("0.02"), D("100000000"), D("1000"))
    assert (position.stop_price, position.take_profit_price) == (D("95000000"), D("110000000"))
    assert position.trailing_stop_pct is None
    assert [p.symbol for p in await service.open_positions()] == ["KRW-BTC"]
    assert await service.open_positions(TradingMode.LIVE) == []


async def test_adding_averages_the_entry_and_moves_the_levels() -> None:
    service = _service()
    await _buy(service, "100000000", "0.01")
    # When 0.03 more is bought at 120,000,000
    outcome = await _buy(service, "120000000", "0.03")
    # Then the entry is the volume-weighted average and the levels follow it; fees add up
    position = outcome.position
    assert position.amount == D("0.04")
    assert position.avg_entry_price == D("115000000")
    assert position.entry_fee == D("500") + D("1800")
    assert (position.stop_price, position.take_profit_price) == (D("109250000"), D("126500000"))
    assert position.highest_price == D("120000000")
    assert not outcome.opened


async def test_atr_exits_use_atr_multiples_and_keep_distances_when_adding_without_atr() -> None:
    service = _service(policy=ExitPolicy(stop_atr=2, target_atr=3))
    # Given an entry at 100,000,000 with ATR 1,500,000
    opened = await _buy(service, "100000000", "0.01", atr=D("1500000"))
    assert (opened.position.stop_price, opened.position.take_profit_price) == (D("97000000"), D("104500000"))
    assert opened.position.entry_atr == D("1500000")
    # When more is bought at 102,000,000 without an ATR (average 101,000,000)
    grown = await _buy(service, "102000000", "0.01")
    # Then the ATR distances of the entry are kept around the new average, and that is noted
    assert (grown.position.stop_price, grown.position.take_profit_price) == (D("98000000"), D("105500000"))
    assert "ATR of the entry" in grown.notes[0]


async def test_percent_and_atr_rules_together_take_the_tighter_level() -> None:
    # Given a policy with a 2% stop and 2 ATR, a 10% target and 3 ATR
    service = _service(policy=ExitPolicy(stop_loss_pct=2, take_profit_pct=10, stop_atr=2, target_atr=3))
    # When a position opens at 100,000,000 with ATR 1,500,000 (2 ATR = 97,000,000; 3 ATR = 104,500,000)
    outcome = await _buy(service, "100000000", "0.01", atr=D("1500000"))
    # Then the stop is the higher (2% = 98,000,000) and the target the lower (3 ATR)
    assert (outcome.position.stop_price, outcome.position.take_profit_price) == (D("98000000"), D("104500000"))


async def test_levels_are_the_backtests_exit_levels() -> None:
    # Given the backtest's compiled exit_levels for a fill and an ATR
    policy = ExitPolicy(stop_loss_pct=3, take_profit_pct=7, stop_atr=1.5, target_atr=4)
    stop, target = exit_levels(123456789.0, 2345678.0, 3.0, 7.0, 1.5, 4.0)
    # When the live path opens a position at that fill with that ATR
    outcome = await _buy(_service(policy=policy), "123456789", "0.01", atr=D("2345678"))
    # Then its levels are the same numbers
    assert (float(outcome.position.stop_price), float(outcome.position.take_profit_price)) == (stop, target)


async def test_an_atr_policy_without_an_atr_sets_no_atr_level_and_says_so() -> None:
    service = _service(policy=ExitPolicy(stop_loss_pct=5, stop_atr=2, target_atr=3))
    outcome = await _buy(service, "100000000", "0.01")
    assert (outcome.position.stop_price, outcome.position.take_profit_price) == (D("95000000"), None)
    assert "no ATR came with the fill" in outcome.notes[0]


async def test_a_new_policy_moves_the_levels_of_open_positions_from_their_entry_atr() -> None:
    # Given a position entered at 100,000,000 with ATR 1,500,000 under 2/3 ATR exits
    store = InMemoryRiskStore()
    await _buy(_service(store, ExitPolicy(stop_atr=2, target_atr=3)), "100000000", "0.01", atr=D("1500000"))
    # When the strategy's exits change at run time to 1 ATR / 5 ATR with a 4% trailing stop
    moved = await _service(store, ExitPolicy(stop_atr=1, target_atr=5, trailing_stop_pct=4)).apply_exit_levels()
    # Then the open position's levels are set again from its entry and entry ATR, trailing on
    [position] = moved
    assert (position.stop_price, position.take_profit_price) == (D("98500000"), D("107500000"))
    assert position.trailing_stop_pct == D("4")
    # And the same policy again moves nothing
    assert await _service(store, ExitPolicy(stop_atr=1, target_atr=5, trailing_stop_pct=4)).apply_exit_levels() == []


async def test_a_full_exit_realises_pnl_net_of_both_fees() -> None:
    # Given 0.02 BTC bought at 100,000,000 (fee 1,000 KRW)
    service = _service()
    await _buy(service, "100000000", "0.02")
    # When all of it is sold at 110,000,000 (fee 1,100 KRW) by the take-profit
    outcome = await _sell(service, "110000000", "0.02", reason=ExitReason.TAKE_PROFIT)
    # Then P&L = 2,200,000 - 2,000,000 - 1,000 - 1,100, and the position is closed with the reason
    assert outcome.realized_pnl == D("197900")
    assert outcome.closed
    closed = outcome.position
    assert closed.status is PositionStatus.CLOSED
    assert (closed.exit_price, closed.exit_reason, closed.realized_pnl) == (D("110000000"), "take_profit", D("197900"))
    assert await service.open_positions() == []


async def test_partial_exits_take_their_share_of_the_buy_fee() -> None:
    service = _service()
    await _buy(service, "100000000", "0.04")  # buy fee 2,000
    # When a quarter is sold at 90,000,000 (fee 450)
    first = await _sell(service, "90000000", "0.01")
    # Then P&L = 900,000 - 1,000,000 - 500 (buy fee share) - 450 (sell fee)
    assert first.realized_pnl == D("-100950")
    assert not first.closed
    assert (first.position.amount, first.position.entry_fee) == (D("0.03"), D("1500"))
    assert first.position.realized_pnl == D("-100950")
    # When the rest is sold at 120,000,000 (fee 1,800)
    rest = await _sell(service, "120000000", "0.03", reason="signal")
    # Then P&L = 3,600,000 - 3,000,000 - 1,500 - 1,800; the position's total adds both parts
    assert rest.realized_pnl == D("596700")
    assert rest.closed
    assert rest.position.realized_pnl == D("495750")
    assert rest.position.exit_reason == "signal"


async def test_a_remainder_worth_less_than_the_minimum_order_closes_the_position() -> None:
    service = _service()
    await _buy(service, "100000000", "0.01")
    outcome = await _sell(service, "100000000", "0.00996")  # 0.00004 BTC = 4,000 KRW left
    assert outcome.closed
    assert "below the minimum order" in outcome.notes[0]


async def test_a_sell_without_a_position_realises_nothing() -> None:
    outcome = await _sell(_service(), "100000000", "0.01")
    assert outcome.position is None
    assert outcome.realized_pnl is None
    assert "without an open position" in outcome.notes[0]


async def test_selling_more_than_held_counts_only_the_held_volume() -> None:
    service = _service()
    await _buy(service, "100000000", "0.01")  # fee 500
    outcome = await service.on_fill(
        "KRW-BTC", Side.SELL, D("100000000"), D("0.011"), D("500"), AT, order_identifier=_order()
    )
    assert outcome.realized_pnl == D("-1000")
    assert outcome.closed


async def test_the_trailing_stop_ratchets_up_only_and_then_fires() -> None:
    # Given a 5% trailing stop on a position bought at 100,000,000
    store = InMemoryRiskStore()
    service = _service(store, ExitPolicy(trailing_stop_pct=5))
    await _buy(service, "100000000", "0.01")
    # When the price marks 112,000,000 then falls back to 105,000,000
    await service.mark("KRW-BTC", D("112000000"))
    position = await service.mark("KRW-BTC", D("105000000"))
    # Then the highest stays 112,000,000 and the trailing level is 106,400,000
    assert position.highest_price == D("112000000")
    assert position.trailing_stop_price == D("106400000")
    risk = RiskManager(RiskConfig(), store, MODE, policy=ExitPolicy(trailing_stop_pct=5))
    assert risk.exits_due([position], {"KRW-BTC": D("106400001")}, AT) == []
    signals = risk.exits_due(await service.open_positions(), {"KRW-BTC": D("106000000")}, AT)
    assert [(s.reason, s.trigger_price) for s in signals] == [(ExitReason.TRAILING_STOP, D("106400000"))]
    assert await service.mark("KRW-ETH", D("1")) is None


async def test_bad_fills_are_refused_with_the_field_named() -> None:
    service = _service()
    with pytest.raises(InvalidInput, match="price"):
        await service.on_fill("KRW-BTC", Side.BUY, D("0"), D("1"), D("0"), AT, order_identifier="bad")
    with pytest.raises(InvalidInput, match="volume"):
        await service.on_fill("KRW-BTC", Side.BUY, D("1"), 1.0, D("0"), AT, order_identifier="bad")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="timezone-aware"):
        await service.on_fill(
            "KRW-BTC", Side.BUY, D("1"), D("1"), D("0"), AT.replace(tzinfo=None), order_identifier="bad"
        )
    with pytest.raises(InvalidInput, match="side"):
        await service.on_fill("KRW-BTC", "bid", D("1"), D("1"), D("0"), AT, order_identifier="bad")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="atr"):
        await service.on_fill("KRW-BTC", Side.BUY, D("1"), D("1"), D("0"), AT, atr=D("-1"), order_identifier="bad")


async def test_the_store_refuses_a_second_open_position_in_a_symbol() -> None:
    store = InMemoryRiskStore()
    record = PositionRecord("KRW-BTC", MODE, D("1"), D("1"), AT, D("1"))
    await store.open_position(record)
    with pytest.raises(PositionConflict):
        await store.open_position(record)


async def test_positions_survive_a_new_service_over_the_same_store() -> None:
    store = InMemoryRiskStore()
    await _buy(_service(store), "100000000", "0.02")
    restarted = _service(store)
    outcome = await _sell(restarted, "95000000", "0.02", reason=ExitReason.STOP_LOSS)
    assert outcome.realized_pnl == D("-100000") - D("1000") - D("950")
