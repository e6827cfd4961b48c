"""The 30-level split and the prevented state on SQLite and PostgreSQL: the live client against the fake Upbit,
the SQL trading repository and the SQL position store (each part an order row before its request)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from src.api.upbit_client import UpbitClient
from src.domain.exits import ExitPolicy, ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, Side
from src.position import PositionService
from src.trading.pipeline.positions import ServicePositionBook
from src.trading.service import TradingService
from tests.fakes.upbit_server import FakeUpbit

Sessions = async_sessionmaker[AsyncSession]
BTC = "KRW-BTC"
MODE = TradingMode.LIVE
D = Decimal


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def client(fake_upbit: FakeUpbit) -> AsyncIterator[UpbitClient]:
    fake_upbit.set_balance("KRW", "100000000")
    fake_upbit.set_orderbook(
        BTC,
        asks=[(95_001_000 + 1000 * i, "0.01") for i in range(100)],
        bids=[(95_000_000 - 1000 * i, "0.01") for i in range(100)],
    )
    upbit = UpbitClient(fake_upbit.base_url, fake_upbit.access_key, fake_upbit.secret_key, timeout=2.0)
    yield upbit
    await upbit.close()


def _rig(client: UpbitClient, sessions: Sessions) -> tuple[TradingService, SqlTradingRepository, PositionService]:
    repo = SqlTradingRepository(sessions)
    positions = PositionService(SqlRiskStore(sessions), ExitPolicy(stop_loss_pct=5, take_profit_pct=10), MODE)
    service = TradingService(
        client,
        repo,
        mode=MODE,
        instance="sql",
        positions=ServicePositionBook(positions),
        poll_delay_seconds=0,
        sleep=_no_sleep,
    )
    return service, repo, positions


async def test_a_split_stop_loss_sell_is_three_orders_that_close_the_position_with_its_reason(
    db_sessions: Sessions, fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given a position of about 0.63 BTC and 0.3 BTC within the first 30 bids
    service, repo, positions = _rig(client, db_sessions)
    await service.market_buy(BTC, D("60000000"), reason="test", cycle_id=None)
    held = await positions.get(BTC)
    assert held is not None
    # When it is sold on a stop loss
    sold = await service.market_sell(
        BTC, held.amount, reason="exit: stop_loss (test)", cycle_id=None, exit_reason=ExitReason.STOP_LOSS
    )
    # Then three sell orders were written and filled, each sent once, with the exit reason on rows and trades
    assert sold.filled
    sells = [o for o in await repo.list_orders([OrderStatus.FILLED], MODE) if o.side is Side.SELL]
    assert len(sells) == len(sold.parts) == 3
    assert {o.exit_reason for o in sells} == {"stop_loss"}
    assert {t.exit_reason for t in sold.trades} == {"stop_loss"}
    assert sum((t.amount for t in sold.trades), D(0)) == held.amount
    posts = fake_upbit.requests_to("/v1/orders", "POST")
    assert len({p.json["identifier"] for p in posts}) == len(posts) == 6  # 3 buy parts, 3 sell parts
    # and the position is closed with the reason and the P&L of all parts
    assert await positions.get(BTC) is None
    [closed] = await positions.store.list_closed_positions(MODE)
    assert closed.exit_reason == "stop_loss"
    booked = sum((t.realized_pnl or D(0) for t in sold.trades), D(0))
    assert abs(booked - closed.realized_pnl) <= D("1")


async def test_a_prevented_sell_is_filled_for_what_executed_and_keeps_the_rest_open(
    db_sessions: Sessions, fake_upbit: FakeUpbit, client: UpbitClient
) -> None:
    # Given a position of about 0.105 BTC
    service, repo, positions = _rig(client, db_sessions)
    await service.market_buy(BTC, D("10000000"), reason="test", cycle_id=None)
    held = await positions.get(BTC)
    assert held is not None
    # When self-match prevention stops the sell after half executed
    fake_upbit.inject_prevented(executed_share="0.5")
    sold = await service.market_sell(BTC, held.amount, reason="exit: signal", cycle_id=None)
    # Then the row is filled for the executed half, marked prevented, and the other half is still a position
    [row] = [o for o in await repo.list_orders([OrderStatus.FILLED], MODE) if o.side is Side.SELL]
    assert row.identifier == sold.identifier
    assert row.exchange_state == "prevented"
    assert "self-match prevention" in (row.error_message or "")
    position = await positions.get(BTC)
    assert position is not None
    assert position.amount == held.amount - row.filled_amount
