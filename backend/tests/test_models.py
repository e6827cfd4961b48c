"""Models on SQLite and PostgreSQL: exact money, aware timestamps, JSON, constraints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.models import AIDecisionRow, BotConfigRow, OrderRow, PortfolioSnapshotRow, PositionRow, TradeRow
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side, TradeStatus

Sessions = async_sessionmaker[AsyncSession]


def _order(identifier: str = "bot-1", **overrides: object) -> OrderRow:
    values: dict[str, object] = {
        "order_id": f"ord-{identifier}",
        "identifier": identifier,
        "symbol": "KRW-BTC",
        "side": Side.BUY,
        "order_type": OrderType.MARKET_BUY,
        "requested_total": Decimal("100000"),
        "status": OrderStatus.PENDING,
        "mode": TradingMode.PAPER,
    }
    values.update(overrides)
    return OrderRow(**values)


def _trade(trade_id: str, order: OrderRow | None = None, **overrides: object) -> TradeRow:
    values: dict[str, object] = {
        "trade_id": trade_id,
        "order_id": order.id if order else None,
        "symbol": "KRW-BTC",
        "side": Side.BUY,
        "price": Decimal("95000000"),
        "amount": Decimal("0.00105263"),
        "total": Decimal("99999.85"),
        "fee": Decimal("49.999925"),
        "status": TradeStatus.COMPLETED,
        "mode": TradingMode.PAPER,
    }
    values.update(overrides)
    return TradeRow(**values)


async def test_money_round_trips_with_all_twenty_digits(db_sessions: Sessions) -> None:
    # Given amounts that a float would corrupt
    price = Decimal("123456789012.12345678")
    async with db_sessions.begin() as session:
        order = _order()
        session.add(order)
        await session.flush()
        session.add(_trade("t-1", order, price=price, amount=Decimal("0.00000001"), total=Decimal("1.23456789")))
    # When read back
    async with db_sessions() as session:
        trade = await session.scalar(select(TradeRow).where(TradeRow.trade_id == "t-1"))
    # Then every digit is intact, as Decimal
    assert trade is not None
    assert trade.price == price
    assert isinstance(trade.price, Decimal)
    assert trade.amount == Decimal("0.00000001")
    assert trade.total == Decimal("1.23456789")
    assert trade.order_id is not None


async def test_floats_are_refused_for_money(db_sessions: Sessions) -> None:
    with pytest.raises(StatementError, match="money must be Decimal"):
        async with db_sessions.begin() as session:
            session.add(_trade("t-float", price=95000000.1))


async def test_timestamps_are_timezone_aware_utc(db_sessions: Sessions) -> None:
    kst = timezone(timedelta(hours=9))
    async with db_sessions.begin() as session:
        session.add(_trade("t-time", created_at=datetime(2024, 1, 1, 9, 0, tzinfo=kst)))
        session.add(_order("server-default"))
    async with db_sessions() as session:
        trade = await session.scalar(select(TradeRow).where(TradeRow.trade_id == "t-time"))
        order = await session.scalar(select(OrderRow))
    assert trade is not None
    assert order is not None
    assert trade.created_at == datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
    assert trade.created_at.tzinfo is UTC
    assert order.created_at.tzinfo is UTC
    assert abs(order.created_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_naive_datetimes_are_refused(db_sessions: Sessions) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with db_sessions.begin() as session:
            session.add(_trade("t-naive", created_at=datetime(2024, 1, 1)))


@pytest.mark.parametrize(
    "duplicate",
    [
        lambda: [_order("same"), _order("same", order_id="other")],
        lambda: [_order("a", order_id="dup"), _order("b", order_id="dup")],
        lambda: [_order("c", exchange_uuid="u-1"), _order("d", exchange_uuid="u-1")],
        lambda: [_trade("t-dup"), _trade("t-dup")],
        lambda: [BotConfigRow(key="k", value=1), BotConfigRow(key="k", value=2)],
    ],
)
async def test_unique_constraints(db_sessions: Sessions, duplicate) -> None:  # type: ignore[no-untyped-def]
    first, second = duplicate()
    async with db_sessions.begin() as session:
        session.add(first)
    with pytest.raises(IntegrityError):
        async with db_sessions.begin() as session:
            session.add(second)


async def test_order_needs_a_quantity_and_a_known_status(db_sessions: Sessions) -> None:
    with pytest.raises(IntegrityError):
        async with db_sessions.begin() as session:
            session.add(_order("no-qty", requested_total=None, amount=None))
    with pytest.raises(StatementError):
        async with db_sessions.begin() as session:
            session.add(_order("bad-status", status="exploded"))


async def test_only_one_open_position_per_symbol_and_mode(db_sessions: Sessions) -> None:
    def position(status: str) -> PositionRow:
        return PositionRow(
            symbol="KRW-BTC",
            mode=TradingMode.PAPER,
            status=status,
            amount=Decimal("0.1"),
            avg_entry_price=Decimal("95000000"),
            entry_at=datetime.now(UTC),
            highest_price=Decimal("95000000"),
        )

    async with db_sessions.begin() as session:
        session.add_all([position("closed"), position("closed"), position("open")])
    with pytest.raises(IntegrityError):
        async with db_sessions.begin() as session:
            session.add(position("open"))


async def test_json_columns_and_small_decimals(db_sessions: Sessions) -> None:
    market = {"indicators": {"rsi_14": 55.5, "atr_pct": 1.2}, "signals": ["breakout"], "orderbook": None}
    async with db_sessions.begin() as session:
        session.add(
            AIDecisionRow(
                symbol="KRW-BTC",
                decision="buy",
                final_decision="hold",
                overridden=True,
                override_reasons=["rsi 75.0 > 70"],
                confidence=Decimal("87.25"),
                market_data=market,
                source="ai",
            )
        )
        session.add(
            PortfolioSnapshotRow(
                total_value_krw=Decimal("10000000.12"),
                positions={"KRW-BTC": {"amount": "0.1"}},
                mode=TradingMode.PAPER,
            )
        )
    async with db_sessions() as session:
        decision = await session.scalar(select(AIDecisionRow))
        snapshot = await session.scalar(select(PortfolioSnapshotRow))
    assert decision is not None
    assert snapshot is not None
    assert decision.market_data == market
    assert decision.confidence == Decimal("87.25")
    assert decision.override_reasons == ["rsi 75.0 > 70"]
    assert snapshot.total_value_krw == Decimal("10000000.12")


async def test_ai_decision_rejects_unknown_decision(db_sessions: Sessions) -> None:
    # The model's enum refuses it before the database is asked...
    with pytest.raises(StatementError, match="not among the defined enum values"):
        async with db_sessions.begin() as session:
            session.add(AIDecisionRow(symbol="KRW-BTC", decision="moon", final_decision="hold", source="ai"))
    # ...and the database's CHECK constraint refuses it from any other writer
    with pytest.raises(IntegrityError):
        async with db_sessions.begin() as session:
            await session.execute(
                text(
                    "INSERT INTO ai_decisions (symbol, decision, final_decision, source) "
                    "VALUES ('KRW-BTC', 'moon', 'hold', 'ai')"
                )
            )
