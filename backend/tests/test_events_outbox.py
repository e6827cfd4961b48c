"""The ``events`` outbox on SQLite and PostgreSQL: each repository write brings its event in the same transaction
(and none when the write fails), and ids become visible in commit order even when writers overlap."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.outbox import add_event
from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.models import EventRow
from src.domain.events import EventKind, EventType
from src.domain.modes import TradingMode
from src.domain.orders import IllegalOrderTransition, OrderStatus, OrderType, Side
from src.risk.store import RiskState
from src.trading.repository import OrderRecord

Sessions = async_sessionmaker[AsyncSession]


async def events(sessions: Sessions) -> list[tuple[EventType, str | None, dict[str, Any]]]:
    async with sessions() as session:
        rows = await session.scalars(select(EventRow).order_by(EventRow.id))
        return [(row.type, row.symbol, row.data) for row in rows]


async def test_safe_mode_transitions_are_events_and_a_resave_is_not(db_sessions: Sessions) -> None:
    store = SqlRiskStore(db_sessions)
    since = datetime(2026, 12, 5, 9, tzinfo=UTC)
    # Given a risk state saved without safe mode
    await store.save_risk_state(RiskState(mode=TradingMode.PAPER, peak_equity=Decimal("1000000")))
    # When safe mode is entered, saved again unchanged, then left
    entered = RiskState(TradingMode.PAPER, True, "daily loss 5.2% >= 5%", since, peak_equity=Decimal("1000000"))
    await store.save_risk_state(entered)
    await store.save_risk_state(entered)
    await store.save_risk_state(RiskState(mode=TradingMode.PAPER, peak_equity=Decimal("1000000")))
    # Then exactly one event each way, with the reason
    assert await events(db_sessions) == [
        (EventType.SAFE_MODE_ON, None, {"reason": "daily loss 5.2% >= 5%", "since": since.isoformat()}),
        (EventType.SAFE_MODE_OFF, None, {}),
    ]


async def test_a_failed_order_and_a_refused_transition(db_sessions: Sessions) -> None:
    repository = SqlTradingRepository(db_sessions, TradingMode.PAPER)
    order = OrderRecord(
        "o1", "bot-1", "KRW-ETH", Side.BUY, OrderType.MARKET_BUY, TradingMode.PAPER, requested_total=Decimal("5000")
    )
    # Given a placed order that the exchange refused
    await repository.create_order(order)
    await repository.update_order("bot-1", status=OrderStatus.FAILED, error_message="insufficient funds")
    # When something tries to mark it filled afterwards
    with pytest.raises(IllegalOrderTransition):
        await repository.update_order("bot-1", status=OrderStatus.FILLED)
    # Then there is the placement and the failure, and no event of the refused change
    recorded = await events(db_sessions)
    assert [(kind, symbol) for kind, symbol, _ in recorded] == [
        (EventType.ORDER_PLACED, "KRW-ETH"),
        (EventType.ORDER_FAILED, "KRW-ETH"),
    ]
    assert recorded[0][2]["requested_total"] == "5000"
    assert recorded[1][2]["error"] == "insufficient funds"
    assert recorded[1][2]["status"] == "failed"


async def test_applied_settings_are_an_event_with_their_audit_line(db_sessions: Sessions) -> None:
    bot = BotRepository(db_sessions, TradingMode.LIVE)
    changes = {"ai.min_confidence": {"from": "60", "to": "70"}}
    await bot.record_settings_applied(changes, "settings applied: ai.min_confidence '60' -> '70'")
    [(kind, symbol, data)] = await events(db_sessions)
    assert (kind, symbol, data) == (EventType.SETTINGS_APPLIED, None, {"changes": changes})
    async with db_sessions() as session:
        mode = await session.scalar(select(EventRow.mode))
    assert mode is TradingMode.LIVE


async def test_ids_become_visible_in_commit_order_when_writers_overlap(db_sessions: Sessions) -> None:
    # Given a writer that inserted its event and has not committed yet
    inserted = asyncio.Event()
    release = asyncio.Event()

    async def slow_writer() -> int:
        async with db_sessions.begin() as session:
            event_id = await add_event(session, EventType.HEARTBEAT, mode="paper", data={"writer": "slow"})
            inserted.set()
            await release.wait()
            return event_id

    async def fast_writer() -> int:
        async with db_sessions.begin() as session:
            return await add_event(session, EventType.HEARTBEAT, mode="paper", data={"writer": "fast"})

    slow = asyncio.create_task(slow_writer())
    await inserted.wait()
    # When a second writer commits meanwhile (it waits for the first: the advisory lock, or SQLite's one writer)
    fast = asyncio.create_task(fast_writer())
    await asyncio.sleep(0.3)
    assert not fast.done()
    release.set()
    slow_id, fast_id = await slow, await fast
    # Then the later commit has the larger id: a reader that saw it cannot miss the earlier one
    assert fast_id > slow_id


def test_notification_kinds_name_their_stream_type() -> None:
    assert EventKind.TRADE_EXECUTED.event_type is EventType.TRADE
    assert EventKind.SAFE_MODE_ENTERED.event_type is EventType.SAFE_MODE_ON
    assert EventKind.BOT_STATE_CHANGED.event_type is EventType.BOT_STATE
    assert EventKind.DAILY_REPORT.event_type is None


async def test_old_heartbeat_events_are_pruned_and_the_rest_kept(db_sessions: Sessions) -> None:
    # Given old heartbeats, an old error, and a recent heartbeat
    bot = BotRepository(db_sessions, TradingMode.PAPER)
    old = datetime(2026, 11, 1, tzinfo=UTC)
    async with db_sessions.begin() as session:
        for n in range(3):
            await add_event(session, EventType.HEARTBEAT, mode="paper", data={"n": n}, at=old)
        await add_event(session, EventType.ERROR, mode="paper", data={"message": "kept"}, at=old)
        await add_event(session, EventType.HEARTBEAT, mode="paper", data={"n": 3})
    # When the daily housekeeping prunes heartbeats older than a week
    pruned = await bot.prune_heartbeat_events(datetime(2026, 11, 28, tzinfo=UTC))
    # Then only the old heartbeats are gone
    assert pruned == 3
    assert [(kind, data) for kind, _, data in await events(db_sessions)] == [
        (EventType.ERROR, {"message": "kept"}),
        (EventType.HEARTBEAT, {"n": 3}),
    ]
