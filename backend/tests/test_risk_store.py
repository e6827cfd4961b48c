"""SqlRiskStore on SQLite and PostgreSQL: positions, risk state and the trade history the spacing rules read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from src.config.trading_groups import RiskConfig
from src.domain.exits import ExitPolicy
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side, TradeStatus
from src.exceptions import PositionConflict
from src.position import PositionService
from src.risk import (
    EntryRule,
    InMemoryRiskStore,
    PortfolioView,
    PositionRecord,
    PositionStatus,
    RiskManager,
    RiskState,
    RiskStore,
)
from src.trading.pipeline.memory import InMemoryTradingRepository
from src.trading.repository import ITradingRepository, OrderRecord, TradeRecord

Sessions = async_sessionmaker[AsyncSession]
MODE = TradingMode.PAPER
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
D = Decimal


def _position(symbol: str = "KRW-BTC", mode: TradingMode = MODE) -> PositionRecord:
    return PositionRecord(
        symbol=symbol,
        mode=mode,
        amount=D("0.01234567"),
        avg_entry_price=D("98765432.12345678"),
        entry_at=NOW,
        highest_price=D("98765432.12345678"),
        entry_fee=D("609.65"),
        stop_price=D("93827160.51728394"),
        take_profit_price=D("108641975.33580246"),
        trailing_stop_pct=D("3.5"),
    )


async def _fill(
    repo: SqlTradingRepository, identifier: str, at: datetime, pieces: int = 1, mode: TradingMode = MODE
) -> None:
    await repo.create_order(
        OrderRecord(
            order_id=f"ord-{identifier}",
            identifier=identifier,
            symbol="KRW-BTC",
            side=Side.BUY,
            order_type=OrderType.MARKET_BUY,
            mode=mode,
            requested_total=D("100000"),
        )
    )
    trades = [
        TradeRecord(
            trade_id=f"{identifier}-f{piece}",
            symbol="KRW-BTC",
            side=Side.BUY,
            price=D("100000000"),
            amount=D("0.0005"),
            total=D("50000"),
            fee=D("25"),
            mode=mode,
            status=TradeStatus.COMPLETED,
            created_at=at + timedelta(seconds=piece),
        )
        for piece in range(pieces)
    ]
    await repo.settle_order(identifier, {"status": OrderStatus.FILLED}, trades)


async def test_positions_round_trip_exactly(db_sessions: Sessions) -> None:
    # Given a position with 8-decimal amounts
    store = SqlRiskStore(db_sessions)
    opened = await store.open_position(_position())
    # When it is read back, listed, updated and its highest price raised
    assert opened.id is not None
    assert await store.get_open_position(MODE, "KRW-BTC") == opened
    assert await store.list_open_positions(MODE) == [opened]
    assert await store.list_open_positions(TradingMode.LIVE) == []
    opened.amount = D("0.02")
    opened.realized_pnl = D("-12.5")
    updated = await store.update_position(opened)
    raised = await store.raise_highest_price(opened.id, D("99000000"))
    lower = await store.raise_highest_price(opened.id, D("98000000"))
    # Then every value is exact, timestamps are UTC, and the highest price never goes down
    assert (updated.amount, updated.realized_pnl, updated.entry_fee) == (D("0.02"), D("-12.5"), D("609.65"))
    assert updated.entry_at == NOW
    assert updated.entry_at.tzinfo is not None
    assert raised.highest_price == lower.highest_price == D("99000000")
    assert updated.trailing_stop_pct == D("3.5")


async def test_one_open_position_per_symbol_and_mode(db_sessions: Sessions) -> None:
    store = SqlRiskStore(db_sessions)
    first = await store.open_position(_position())
    await store.open_position(_position(mode=TradingMode.LIVE))
    with pytest.raises(PositionConflict):
        await store.open_position(_position())
    # After closing, the symbol may be opened again
    closed = await store.close_position(
        first.id, exit_price=D("105000000"), reason="take_profit", realized_pnl=D("7890.12"), closed_at=NOW
    )
    assert (closed.status, closed.exit_reason, closed.realized_pnl) == (
        PositionStatus.CLOSED,
        "take_profit",
        D("7890.12"),
    )
    assert closed.closed_at == NOW
    await store.open_position(_position())
    with pytest.raises(PositionConflict):
        await store.update_position(closed)
    with pytest.raises(PositionConflict):
        await store.close_position(first.id, exit_price=D("1"), reason="stop_loss", realized_pnl=D("0"), closed_at=NOW)


async def test_closed_positions_newest_first(db_sessions: Sessions) -> None:
    store = SqlRiskStore(db_sessions)
    for index, pnl in enumerate(["100", "-50", "30"]):
        opened = await store.open_position(_position(f"KRW-C{index}"))
        await store.close_position(
            opened.id,
            exit_price=D("1"),
            reason="stop_loss",
            realized_pnl=D(pnl),
            closed_at=NOW + timedelta(hours=index),
        )
    closed = await store.list_closed_positions(MODE)
    assert [p.realized_pnl for p in closed] == [D("30"), D("-50"), D("100")]
    assert [p.symbol for p in await store.list_closed_positions(MODE, limit=1)] == ["KRW-C2"]


async def test_risk_state_is_saved_and_replaced(db_sessions: Sessions) -> None:
    store = SqlRiskStore(db_sessions)
    assert await store.load_risk_state(MODE) == RiskState(mode=MODE)
    state = RiskState(
        mode=MODE,
        safe_mode=True,
        safe_mode_reason="daily loss 10.00%",
        safe_mode_since=NOW,
        safe_mode_until=NOW + timedelta(hours=14),
        peak_equity=D("10000000"),
        day_anchor_at=NOW,
        day_anchor_equity=D("10000000.5"),
        week_anchor_at=NOW - timedelta(days=2),
        week_anchor_equity=D("10500000"),
    )
    await store.save_risk_state(state)
    assert await store.load_risk_state(MODE) == state
    state.safe_mode, state.safe_mode_until = False, None
    await store.save_risk_state(state)
    assert await store.load_risk_state(MODE) == state
    assert await store.load_risk_state(TradingMode.LIVE) == RiskState(mode=TradingMode.LIVE)


async def test_trade_spacing_reads_the_trades_table(db_sessions: Sessions) -> None:
    # Given today: one order filled in three pieces and one single fill; yesterday one; one live order
    repo = SqlTradingRepository(db_sessions)
    store = SqlRiskStore(db_sessions)
    midnight = NOW.replace(hour=0)
    await _fill(repo, "yesterday", midnight - timedelta(hours=1))
    await _fill(repo, "split", midnight + timedelta(hours=1), pieces=3)
    await _fill(repo, "single", NOW - timedelta(hours=2))
    await _fill(repo, "live", NOW - timedelta(minutes=1), mode=TradingMode.LIVE)
    # Then the day counts two executed orders and the last trade is the single fill
    assert await store.count_trades_since(MODE, midnight) == 2
    assert await store.count_trades_since(MODE, midnight - timedelta(days=1)) == 3
    assert await store.last_trade_at(MODE) == NOW - timedelta(hours=2)
    assert await store.last_trade_at(TradingMode.REPLAY) is None


async def test_rules_and_positions_survive_a_restart(db_sessions: Sessions, db_engine) -> None:  # type: ignore[no-untyped-def]
    """Given safe mode and a position written through one stack, a new stack over the same database sees both."""
    from backend.app.db.session import session_factory

    config, policy = RiskConfig(), ExitPolicy(stop_loss_pct=5, take_profit_pct=10)
    risk = RiskManager(config, SqlRiskStore(db_sessions), MODE, policy=policy)
    positions = PositionService(SqlRiskStore(db_sessions), policy, MODE)
    await positions.on_fill("KRW-BTC", Side.BUY, D("100000000"), D("0.02"), D("1000"), NOW, order_identifier="b-1")
    await risk.on_equity(D("10000000"), NOW.replace(hour=0))
    await risk.on_equity(D("8900000"), NOW)
    # When a new session factory, store and manager are built (a restarted process)
    fresh_store = SqlRiskStore(session_factory(db_engine))
    restarted = RiskManager(config, fresh_store, MODE)
    verdict = await restarted.evaluate_entry("KRW-ETH", PortfolioView.of(D("8900000")), NOW + timedelta(hours=1))
    # Then safe mode still blocks buys, and the position with its levels is still managed
    assert verdict.blocked_by(EntryRule.SAFE_MODE)
    held = await PositionService(fresh_store, policy, MODE).open_positions()
    assert [(p.symbol, p.stop_price, p.entry_fee) for p in held] == [("KRW-BTC", D("95000000"), D("1000"))]
    outcome = await PositionService(fresh_store, policy, MODE).on_fill(
        "KRW-BTC",
        Side.SELL,
        D("95000000"),
        D("0.02"),
        D("950"),
        NOW + timedelta(hours=2),
        order_identifier="s-1",
        reason="stop_loss",
    )
    assert outcome.realized_pnl == D("-101950")


async def test_sql_and_memory_stores_agree(db_sessions: Sessions) -> None:
    """The same fills through both stores give the same positions, levels and P&L (to the 8th decimal)."""
    results = []
    for store in (InMemoryRiskStore(), SqlRiskStore(db_sessions)):
        policy = ExitPolicy(stop_loss_pct=3, stop_atr=2, target_atr=3, trailing_stop_pct=2.5)
        service = PositionService(store, policy, MODE)
        await service.on_fill(
            "KRW-ETH", Side.BUY, D("4123456"), D("0.33333333"), D("687.2"), NOW, D("61234.5"), order_identifier="b1"
        )
        await service.on_fill("KRW-ETH", Side.BUY, D("4200001"), D("0.1"), D("210"), NOW, order_identifier="b2")
        partial = await service.on_fill(
            "KRW-ETH", Side.SELL, D("4300000"), D("0.2"), D("430"), NOW, order_identifier="s1"
        )
        (position,) = await service.open_positions()
        levels = (position.stop_price, position.take_profit_price, position.trailing_stop_pct, position.entry_atr)
        results.append((partial.realized_pnl, position.amount, position.avg_entry_price, position.entry_fee, levels))
    assert results[0] == results[1]


# --- unsettled orders count until they are settled -------------------------------------------------------
async def _unsettled(
    repo: ITradingRepository, identifier: str, symbol: str, side: Side, at: datetime, total: str | None = None
) -> None:
    """An order written and sent whose answer was lost: ``pending``, no trade."""
    await repo.create_order(
        OrderRecord(
            order_id=identifier,
            identifier=identifier,
            symbol=symbol,
            side=side,
            order_type=OrderType.MARKET_BUY if side is Side.BUY else OrderType.MARKET_SELL,
            mode=MODE,
            status=OrderStatus.PENDING,
            requested_total=None if total is None else D(total),
            amount=None if side is Side.BUY else D("0.01"),
            created_at=at,
        )
    )


CASH_10M = PortfolioView.of(D("10000000"))
UNSETTLED_CASES = {
    # rule: (config, unsettled order (symbol, side, age, total), evaluated symbol, portfolio)
    "spacing": ({}, ("KRW-ETH", Side.SELL, timedelta(hours=1), None), "KRW-BTC", CASH_10M),
    "daily_cap": (
        {"MIN_TRADE_INTERVAL_HOURS": "0", "MAX_TRADES_PER_DAY": "1"},
        ("KRW-ETH", Side.SELL, timedelta(hours=1), None),
        "KRW-BTC",
        CASH_10M,
    ),
    "position_count": (
        {"MIN_TRADE_INTERVAL_HOURS": "0", "MAX_POSITIONS": "1"},
        ("KRW-ETH", Side.BUY, timedelta(hours=9), "1000000"),
        "KRW-BTC",
        CASH_10M,
    ),
    "exposure": (
        {"MIN_TRADE_INTERVAL_HOURS": "0"},
        ("KRW-BTC", Side.BUY, timedelta(hours=9), "4000000"),
        "KRW-BTC",
        CASH_10M,
    ),
    "already_held": (
        {"MIN_TRADE_INTERVAL_HOURS": "0"},
        ("KRW-BTC", Side.BUY, timedelta(hours=9), "1000000"),
        "KRW-BTC",
        CASH_10M,
    ),
}
RULE_OF_CASE = {
    "spacing": EntryRule.MIN_TRADE_INTERVAL,
    "daily_cap": EntryRule.MAX_TRADES_PER_DAY,
    "position_count": EntryRule.MAX_POSITIONS,
    "exposure": EntryRule.MAX_POSITION_PCT,
    "already_held": EntryRule.ALREADY_HELD,
}


@pytest.mark.parametrize("case", list(UNSETTLED_CASES))
async def test_an_unsettled_order_counts_as_a_trade_until_it_is_settled(db_sessions: Sessions, case: str) -> None:
    """Given an order whose answer was lost (pending, no trade row) and reconciliation that cannot settle it,
    when a buy is evaluated, then the order counts: for the spacing and the trades of the day (any side), and a
    buy as a position (count) worth its requested total (exposure) in its coin; once settled it counts no more.
    The SQL store (orders table) and the in-memory one (over the trading repository) agree."""
    overrides, (symbol, side, age, total), evaluated, portfolio = UNSETTLED_CASES[case]
    memory_repo = InMemoryTradingRepository()
    stores: list[tuple[ITradingRepository, RiskStore]] = [
        (memory_repo, InMemoryRiskStore(orders=memory_repo)),
        (SqlTradingRepository(db_sessions), SqlRiskStore(db_sessions)),
    ]
    for repo, store in stores:
        risk = RiskManager(RiskConfig.model_validate(overrides), store, MODE)
        assert (await risk.evaluate_entry(evaluated, portfolio, NOW)).allowed
        await _unsettled(repo, f"lost-{case}", symbol, side, NOW - age, total)

        refused = await risk.evaluate_entry(evaluated, portfolio, NOW)

        assert not refused.allowed
        assert refused.blocked_by(RULE_OF_CASE[case]), refused.reasons
        [unsettled] = await store.list_unsettled_orders(MODE)
        assert (unsettled.identifier, unsettled.symbol, unsettled.side) == (f"lost-{case}", symbol, side)
        assert unsettled.created_at == NOW - age
        # When reconciliation finally settles it (here: the request never arrived), it counts no more
        await repo.update_order(f"lost-{case}", status=OrderStatus.FAILED)
        assert (await risk.evaluate_entry(evaluated, portfolio, NOW)).allowed
        assert await store.list_unsettled_orders(MODE) == []


async def test_an_unsettled_buy_of_the_coin_makes_it_held(db_sessions: Sessions) -> None:
    # Given 10,000,000 KRW equity (cap 40% = 4,000,000) and a lost 1,500,000 KRW buy of BTC, not yet settled
    repo = SqlTradingRepository(db_sessions)
    risk = RiskManager(RiskConfig(MIN_TRADE_INTERVAL_HOURS="0"), SqlRiskStore(db_sessions), MODE)
    await _unsettled(repo, "lost-btc", "KRW-BTC", Side.BUY, NOW - timedelta(hours=9), "1500000")
    # When more BTC is evaluated
    verdict = await risk.evaluate_entry("KRW-BTC", CASH_10M, NOW)
    # Then it is refused as held, though the cap would leave room: the strategy buys only when flat
    assert not verdict.allowed
    assert verdict.max_krw == 0
    assert verdict.reasons == [
        "already_held: KRW-BTC is already held (unsettled buy order); the strategy buys only when flat"
    ]
