"""Telegram commands over the fake Bot API (getUpdates + sendMessage), answering from a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.repositories.bot import BotRepository
from backend.app.db.repositories.risk import SqlRiskStore
from backend.app.db.repositories.trading import SqlTradingRepository
from backend.app.models import BotConfigRow, SystemLogRow
from backend.app.services.notification import NotificationService
from backend.app.services.telegram_commands import CommandContext, TelegramCommands
from src.config.system_groups import TelegramConfig
from src.domain.bot import DesiredState
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side
from src.risk.store import PositionRecord
from src.trading.bot_control import DESIRED_STATE_KEY
from src.trading.repository import OrderRecord, PortfolioSnapshotRecord, TradeRecord
from tests.fakes.telegram_server import FakeTelegram, html_parse_error

ALLOWED, STRANGER = 1001, 666
NOW = datetime.now(UTC).replace(microsecond=0)
MODE = TradingMode.PAPER


async def seed_trading_history(sessions: async_sessionmaker[AsyncSession], now: datetime = NOW) -> None:
    """A buy 30 h ago, a sell with +12,345 KRW 2 h ago, snapshots at 10.5 M (peak) and 10.2 M, one open position."""
    repository = SqlTradingRepository(sessions)
    fills = [
        ("o-buy", Side.BUY, now - timedelta(hours=30), Decimal("100000000"), None, Decimal("50")),
        ("o-sell", Side.SELL, now - timedelta(hours=2), Decimal("112345000"), Decimal("12345"), Decimal("56.17")),
    ]
    for identifier, side, at, price, pnl, fee in fills:
        order_type = OrderType.MARKET_BUY if side is Side.BUY else OrderType.MARKET_SELL
        await repository.create_order(
            OrderRecord(
                order_id=identifier,
                identifier=identifier,
                symbol="KRW-BTC",
                side=side,
                order_type=order_type,
                mode=MODE,
                requested_total=price * Decimal("0.001"),
                amount=Decimal("0.001"),
            )
        )
        trade = TradeRecord(
            trade_id=f"t-{identifier}",
            symbol="KRW-BTC",
            side=side,
            price=price,
            amount=Decimal("0.001"),
            total=price * Decimal("0.001"),
            fee=fee,
            mode=MODE,
            realized_pnl=pnl,
            created_at=at,
        )
        await repository.settle_order(identifier, {"status": OrderStatus.FILLED}, [trade])
    for hours_ago, equity in ((26, "10500000"), (1, "10200000")):
        await repository.save_snapshot(
            PortfolioSnapshotRecord(
                total_value_krw=Decimal(equity),
                positions={},
                mode=MODE,
                cash_krw=Decimal("8000000"),
                profit_rate=Decimal(equity) / Decimal("10000000") - 1,
                created_at=now - timedelta(hours=hours_ago),
            )
        )
    await SqlRiskStore(sessions).open_position(
        PositionRecord(
            symbol="KRW-ETH",
            mode=MODE,
            amount=Decimal("0.5"),
            avg_entry_price=Decimal("4000000"),
            entry_at=now - timedelta(hours=3),
            highest_price=Decimal("4100000"),
            stop_price=Decimal("3800000"),
        )
    )
    await BotRepository(sessions).write_heartbeat(
        "default", state="running", mode=MODE.value, symbols=["KRW-BTC"], heartbeat_at=now - timedelta(seconds=30)
    )


_OPEN_SERVICES: list[NotificationService] = []


def _service(fake: FakeTelegram) -> NotificationService:
    config = TelegramConfig.model_construct(
        bot_token=SecretStr(fake.token), chat_ids=[str(ALLOWED)], base_url=fake.base_url, commands_enabled=True
    )
    service = NotificationService(config)
    _OPEN_SERVICES.append(service)
    return service


@pytest.fixture(autouse=True)
async def _close_services() -> AsyncIterator[None]:
    """Each test's senders close their HTTP clients when it ends."""
    yield
    while _OPEN_SERVICES:
        await _OPEN_SERVICES.pop().aclose()


def _commands(fake: FakeTelegram, sessions: async_sessionmaker[AsyncSession]) -> TelegramCommands:
    return TelegramCommands(
        _service(fake), sessions, CommandContext(MODE, "default", 600), [str(ALLOWED)], poll_timeout_seconds=0
    )


async def _ask(fake: FakeTelegram, commands: TelegramCommands, *texts: str, chat: int = ALLOWED) -> list[str]:
    before = len(fake.sent_messages())
    for text in texts:
        fake.push_message(chat, text)
    while fake.pending_updates() and await commands.poll_once():
        pass
    return [message["text"] for message in fake.sent_messages()[before:]]


async def test_messages_from_other_chats_are_ignored_and_logged(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a stranger's chat
    commands = _commands(fake_telegram, db_sessions)
    # When it sends /stop and /status
    replies = await _ask(fake_telegram, commands, "/stop", "/status", chat=STRANGER)
    # Then nothing is answered, the desired state is untouched, and both attempts are in system_logs
    assert replies == []
    assert commands.ignored == 2
    assert await BotRepository(db_sessions).get_config(DESIRED_STATE_KEY) is None
    async with db_sessions() as session:
        rows = list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "telegram")))
    assert [row.context for row in rows] == [
        {"chat_id": str(STRANGER), "command": "/stop"},
        {"chat_id": str(STRANGER), "command": "/status"},
    ]


async def test_control_commands_write_the_desired_state_like_the_api(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given an allowed chat
    commands = _commands(fake_telegram, db_sessions)
    bot = BotRepository(db_sessions)
    # When it pauses (with a reason), Then bot_config says paused, by this chat, with an audit row
    replies = await _ask(fake_telegram, commands, "/pause volatile market")
    assert "Pause" in replies[0]
    assert "paused" in replies[0]
    assert await bot.desired_state() is DesiredState.PAUSED
    async with db_sessions() as session:
        row = await session.scalar(select(BotConfigRow).where(BotConfigRow.key == DESIRED_STATE_KEY))
        audit = list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "control")))
    assert row is not None
    assert row.updated_by == f"telegram:{ALLOWED}"
    assert "volatile market" in audit[0].message
    assert audit[0].context["value"] == "paused"
    # And stop, start and resume map to the same states as the API's actions
    await _ask(fake_telegram, commands, "/stop")
    assert await bot.desired_state() is DesiredState.STOPPED
    await _ask(fake_telegram, commands, "/start@trade_bot")
    assert await bot.desired_state() is DesiredState.RUNNING
    await _ask(fake_telegram, commands, "/pause", "/resume")
    assert await bot.desired_state() is DesiredState.RUNNING


async def test_read_commands_answer_with_database_figures(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a trading history in the database
    await seed_trading_history(db_sessions)
    commands = _commands(fake_telegram, db_sessions)
    # When each read command is asked
    status, balance, positions, trades, profit, report, help_text = await _ask(
        fake_telegram, commands, "/status", "/balance", "/positions", "/trades", "/profit", "/report", "/help"
    )
    # Then each answer is valid HTML carrying the stored figures
    for text in (status, balance, positions, trades, profit, report, help_text):
        assert html_parse_error(text) is None
    assert "running" in status
    assert "Safe mode</b>: off" in status
    assert "10,200,000 KRW" in balance
    assert "2.00 %" in balance
    assert "KRW-ETH: 0.5 @ 4,000,000" in positions
    assert "stop 3,800,000" in positions
    assert "SELL KRW-BTC" in trades
    assert "P&amp;L 12,345" in trades
    assert "BUY KRW-BTC" in trades
    assert "24 h</b>: P&amp;L 12,345 KRW, fees 56 KRW, 1 trades" in profit
    assert "all time</b>: P&amp;L 12,345 KRW, fees 106 KRW, 2 trades, win rate 100.00 %" in profit
    assert "Daily report" in report
    assert "12,345 KRW" in report
    assert "10,200,000 KRW" in report
    assert "/positions" in help_text


def _acknowledged(fake_telegram: FakeTelegram) -> bool:
    """The poller has asked for updates past the ones it handled (that poll may come after its answers)."""
    return any(call.params.get("offset") not in (None, "") for call in fake_telegram.calls("getUpdates"))


async def test_poller_acknowledges_updates_and_keeps_answering(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given the background poller
    commands = _commands(fake_telegram, db_sessions)
    await commands.start()
    try:
        # When two commands arrive one after the other
        fake_telegram.push_message(ALLOWED, "/balance")
        fake_telegram.push_message(ALLOWED, "/pause")
        async with asyncio.timeout(10):
            while len(fake_telegram.sent_messages()) < 2 or not _acknowledged(fake_telegram):
                await asyncio.sleep(0.05)
    finally:
        await commands.aclose()
    # Then both were answered once and acknowledged through getUpdates' offset
    assert commands.handled == 2
    assert await BotRepository(db_sessions).desired_state() is DesiredState.PAUSED
    offsets = [call.params.get("offset") for call in fake_telegram.calls("getUpdates")]
    assert any(offset not in (None, "") for offset in offsets)
    assert fake_telegram.pending_updates() == 0


async def test_start_telegram_runs_sender_and_poller_from_settings(
    fake_telegram: FakeTelegram, db_sessions, monkeypatch
) -> None:
    # Given settings that point Telegram at the fake with one allowed chat
    from backend.app.services.telegram_commands import start_telegram
    from src.config.settings import load_settings
    from src.domain.events import EventKind, NotificationEvent

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake_telegram.token)
    monkeypatch.setenv("TELEGRAM_CHAT_IDS", str(ALLOWED))
    monkeypatch.setenv("TELEGRAM_BASE_URL", fake_telegram.base_url)
    runtime = await start_telegram(load_settings(env_file=None), db_sessions)
    try:
        # When an event is announced and a command arrives
        runtime.notifier.notify(NotificationEvent(EventKind.BOT_STATE_CHANGED, "Bot paused", {"state": "paused"}))
        fake_telegram.push_message(ALLOWED, "/status")
        async with asyncio.timeout(10):
            while len(fake_telegram.sent_messages()) < 2:
                await asyncio.sleep(0.05)
    finally:
        await runtime.aclose()
    # Then both went out: the alert and the answer
    texts = [message["text"] for message in fake_telegram.sent_messages()]
    assert any("Bot paused" in text for text in texts)
    assert any("Bot status" in text for text in texts)


async def test_status_shows_safe_mode_and_a_stale_heartbeat(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a heartbeat 20 minutes old and a daily loss breaker in force
    from src.risk.store import RiskState

    await BotRepository(db_sessions).write_heartbeat(
        "default", state="running", mode=MODE.value, symbols=["KRW-BTC"], heartbeat_at=NOW - timedelta(minutes=20)
    )
    await SqlRiskStore(db_sessions).save_risk_state(
        RiskState(mode=MODE, safe_mode=True, safe_mode_reason="daily loss 10.2% >= 10%", safe_mode_since=NOW)
    )
    commands = TelegramCommands(
        _service(fake_telegram), db_sessions, CommandContext(MODE, "default", 600), [str(ALLOWED)], clock=lambda: NOW
    )
    # When /status is asked
    (status,) = await _ask(fake_telegram, commands, "/status")
    # Then it says the heartbeat is stale and why no new buys happen
    assert "1200 s ago (stale)" in status
    assert "ON: daily loss 10.2% &gt;= 10%" in status
