"""The repository: the order lifecycle primitives of 'exactly once', bot control data, and the scheduler lock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.app.db.lock import SchedulerLock
from backend.app.db.repositories.bot import BotRepository, ConfigWrite
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.models import SystemLogRow, TradeRow
from src.domain.bot import BotAction, DesiredState
from src.domain.modes import TradingMode
from src.domain.orders import IllegalOrderTransition, OrderStatus, OrderType, Side
from src.exceptions import SchedulerLockHeld, SchedulerLockLost
from src.trading.bot_control import DESIRED_STATE_KEY
from src.trading.repository import AIDecisionRecord, CycleRecord, OrderRecord, StageRecord, TradeRecord
from tests.support.rows import count_rows

Sessions = async_sessionmaker[AsyncSession]


def _pending(identifier: str) -> OrderRecord:
    return OrderRecord(
        order_id=f"ord-{identifier}",
        identifier=identifier,
        symbol="KRW-BTC",
        side=Side.BUY,
        order_type=OrderType.MARKET_BUY,
        mode=TradingMode.PAPER,
        requested_total=Decimal("100000"),
    )


def _fill(trade_id: str) -> TradeRecord:
    return TradeRecord(
        trade_id=trade_id,
        symbol="KRW-BTC",
        side=Side.BUY,
        price=Decimal("95000000"),
        amount=Decimal("0.00105207"),
        total=Decimal("99946.65"),
        fee=Decimal("49.973325"),
        mode=TradingMode.PAPER,
    )


async def test_settling_an_order_writes_its_trades_once(db_sessions: Sessions) -> None:
    # Given a pending order row, written before any request
    repo = SqlTradingRepository(db_sessions)
    await repo.create_order(_pending("bot-1"))
    changes = {"status": OrderStatus.FILLED, "exchange_uuid": "u-1", "filled_amount": Decimal("0.00105207")}
    # When it is settled twice with the same fill (a retry after a crash)
    await repo.settle_order("bot-1", changes, [_fill("u-1-f1")])
    settled = await repo.settle_order("bot-1", {}, [_fill("u-1-f1")])
    # Then the order is filled and exactly one trade exists, linked to it
    assert settled.status is OrderStatus.FILLED
    trades = await repo.list_trades(mode=TradingMode.PAPER)
    assert [(t.trade_id, t.order_identifier) for t in trades] == [("u-1-f1", "bot-1")]
    assert await repo.list_orders([OrderStatus.PENDING]) == []


async def test_illegal_transition_is_refused_and_nothing_changes(db_sessions: Sessions) -> None:
    repo = SqlTradingRepository(db_sessions)
    await repo.create_order(_pending("bot-2"))
    await repo.update_order("bot-2", status=OrderStatus.FAILED, error_message="insufficient_funds_bid")
    with pytest.raises(IllegalOrderTransition):
        await repo.settle_order("bot-2", {"status": OrderStatus.FILLED}, [_fill("x")])
    order = await repo.get_order("bot-2")
    assert order is not None
    assert order.status is OrderStatus.FAILED
    async with db_sessions() as session:
        assert await session.scalar(select(func.count()).select_from(TradeRow)) == 0


async def test_pending_orders_are_listed_for_reconciliation(db_sessions: Sessions) -> None:
    repo = SqlTradingRepository(db_sessions)
    for identifier in ("p-1", "p-2", "p-3"):
        await repo.create_order(_pending(identifier))
    await repo.update_order("p-2", status=OrderStatus.OPEN)
    pending = await repo.list_orders([OrderStatus.PENDING], mode=TradingMode.PAPER)
    assert [order.identifier for order in pending] == ["p-1", "p-3"]


async def test_ai_decision_cache_lookup_by_prompt_hash(db_sessions: Sessions) -> None:
    repo = SqlTradingRepository(db_sessions)
    base = {"symbol": "KRW-BTC", "decision": "buy", "final_decision": "buy", "prompt_hash": "h1"}
    await repo.save_ai_decision(AIDecisionRecord(**base, source="fallback", confidence=Decimal("0")))
    assert await repo.find_ai_decision_by_prompt_hash("h1") is None  # failures are never a cache hit
    await repo.save_ai_decision(AIDecisionRecord(**base, source="ai", confidence=Decimal("71.5")))
    hit = await repo.find_ai_decision_by_prompt_hash("h1")
    assert hit is not None
    assert hit.confidence == Decimal("71.5")


async def test_cycle_and_log_are_recorded(db_sessions: Sessions) -> None:
    repo = SqlTradingRepository(db_sessions)
    started = datetime(2024, 1, 1, tzinfo=UTC)
    stage = StageRecord(stage="risk", outcome="passed", duration_ms=1.5, detail={"safe_mode": False})
    await repo.save_cycle(
        CycleRecord(
            cycle_id="c-1", symbol="KRW-BTC", mode=TradingMode.PAPER, started_at=started, status="ok", stages=[stage]
        )
    )
    await repo.log_event("warning", "fear_greed.unavailable", {"error": "timeout"})
    async with db_sessions() as session:
        log = await session.scalar(select(SystemLogRow))
    assert log is not None
    assert log.context == {"error": "timeout"}
    assert log.source == "scheduler"


async def test_desired_state_defaults_to_running_and_control_is_audited(db_sessions: Sessions) -> None:
    bot = BotRepository(db_sessions)
    assert await bot.desired_state() is DesiredState.RUNNING
    await bot.set_config(DESIRED_STATE_KEY, "paused", updated_by="api:admin", audit="bot.control pause: maintenance")
    await bot.set_config(DESIRED_STATE_KEY, "stopped", updated_by="telegram:42", audit="bot.control stop")
    assert await bot.desired_state() is DesiredState.STOPPED
    async with db_sessions() as session:
        audits = list(await session.scalars(select(SystemLogRow).order_by(SystemLogRow.id)))
    assert [(a.message, a.context["by"]) for a in audits] == [
        ("bot.control pause: maintenance", "api:admin"),
        ("bot.control stop", "telegram:42"),
    ]
    assert [(a.context["previous"], a.context["value"]) for a in audits] == [(None, "paused"), ("paused", "stopped")]


async def test_several_config_keys_are_written_all_or_none(db_sessions: Sessions) -> None:
    # Given a key already set
    bot = BotRepository(db_sessions)
    await bot.set_config("trade.max_position_pct", 10, updated_by="api-key")
    # When two keys are written together and the second cannot be stored (its audit context is not JSON)
    writes = [
        ConfigWrite("trade.max_position_pct", 20, audit="max position 10 -> 20"),
        ConfigWrite("trade.min_confidence", 70, audit="min confidence -> 70", audit_context={"bad": object()}),
    ]
    with pytest.raises(Exception, match="JSON serializable"):
        await bot.set_configs(writes, updated_by="api-key")
    # Then neither key nor any audit row was written
    assert await bot.get_config("trade.max_position_pct") == 10
    assert await bot.get_config("trade.min_confidence") is None
    assert await count_rows(db_sessions, SystemLogRow) == 0

    # When the same keys are written with storable values, both are, each with its audit row
    writes[1] = ConfigWrite("trade.min_confidence", 70, audit="min confidence -> 70")
    await bot.set_configs(writes, updated_by="api-key")
    assert (await bot.get_config("trade.max_position_pct"), await bot.get_config("trade.min_confidence")) == (20, 70)
    async with db_sessions() as session:
        audits = list(await session.scalars(select(SystemLogRow).order_by(SystemLogRow.id)))
    assert [(a.context["key"], a.context["previous"], a.context["value"]) for a in audits] == [
        ("trade.max_position_pct", 10, 20),
        ("trade.min_confidence", None, 70),
    ]


async def test_request_state_is_the_one_audited_control_write(db_sessions: Sessions) -> None:
    # Given a running bot / When an operator pauses it with a reason
    bot = BotRepository(db_sessions)
    desired = await bot.request_state(BotAction.PAUSE, by="api:admin", reason="exchange maintenance")
    # Then the desired state is paused and the audit row says who, why, and what it was before
    assert desired is DesiredState.PAUSED
    assert await bot.desired_state() is DesiredState.PAUSED
    async with db_sessions() as session:
        audit = await session.scalar(select(SystemLogRow))
    assert audit is not None
    assert audit.source == "control"
    assert audit.context == {
        "key": DESIRED_STATE_KEY,
        "previous": None,
        "value": "paused",
        "by": "api:admin",
        "action": "pause",
        "reason": "exchange maintenance",
    }


async def test_heartbeat_upserts(db_sessions: Sessions) -> None:
    bot = BotRepository(db_sessions)
    now = datetime.now(UTC)
    await bot.write_heartbeat("default", state="running", mode="paper", symbols=["KRW-BTC"], heartbeat_at=now)
    await bot.write_heartbeat("default", state="paused", last_error="boom")
    row = await bot.get_heartbeat("default")
    assert row is not None
    assert row.state == "paused"
    assert row.last_error == "boom"
    assert row.symbols == ["KRW-BTC"]
    assert row.heartbeat_at >= now


async def test_only_one_scheduler_holds_the_lock(db_engine: AsyncEngine) -> None:
    # Given one scheduler holding the lock
    first = SchedulerLock(db_engine, "default")
    await first.acquire()
    # When a second one starts for the same account
    second = SchedulerLock(db_engine, "default")
    with pytest.raises(SchedulerLockHeld):
        await second.acquire()
    # Then another account is free, and the first one's release frees the lock
    other = SchedulerLock(db_engine, "other-account")
    await other.acquire()
    await other.release()
    await first.renew()
    await first.release()
    await second.acquire()
    await second.release()


async def test_sqlite_lease_of_a_dead_holder_expires(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from backend.app.db.migrations import upgrade_to_head
    from backend.app.db.session import create_engine

    url = f"sqlite+aiosqlite:///{tmp_path / 'lease.db'}"
    await asyncio.to_thread(upgrade_to_head, url)
    engine = create_engine(url)
    dead = SchedulerLock(engine, "default", lease_seconds=0)
    await dead.acquire()  # never renewed: the process "died"
    await asyncio.sleep(0.01)
    survivor = SchedulerLock(engine, "default")
    await survivor.acquire()
    with pytest.raises(SchedulerLockLost) as lost:  # the "dead" one, still running after all, must stop
        await dead.renew()
    assert lost.value.taken_over
    await survivor.release()
    await engine.dispose()
