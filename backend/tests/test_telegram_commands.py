"""Telegram commands through python-telegram-bot's Application over the fake Bot API, answering from a real
database: the menu (setMyCommands), the allowlist, the read commands in Korean and English, and the control
commands' confirmations (inline buttons, callback queries, answerCallbackQuery, editMessageText)."""

from __future__ import annotations

import asyncio
import json
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
from backend.app.services.telegram_commands import MENU, CommandContext, TelegramCommands
from src.config.system_groups import NotifyLanguage, TelegramConfig
from src.domain.bot import DesiredState
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side
from src.risk.store import PositionRecord
from src.trading.bot_control import DESIRED_STATE_KEY, SAFE_MODE_RESET_KEY
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


_OPEN: list[NotificationService | TelegramCommands] = []
KO, EN = NotifyLanguage.KO, NotifyLanguage.EN


def _service(fake: FakeTelegram, language: NotifyLanguage = KO) -> NotificationService:
    config = TelegramConfig.model_construct(
        bot_token=SecretStr(fake.token),
        chat_ids=[str(ALLOWED)],
        base_url=fake.base_url,
        commands_enabled=True,
        language=language,
    )
    service = NotificationService(config)
    _OPEN.append(service)
    return service


@pytest.fixture(autouse=True)
async def _close_services() -> AsyncIterator[None]:
    """Each test's Applications and senders close their HTTP clients when it ends."""
    yield
    while _OPEN:
        await _OPEN.pop().aclose()


async def _commands(
    fake: FakeTelegram, sessions: async_sessionmaker[AsyncSession], language: NotifyLanguage = KO, **kwargs: object
) -> TelegramCommands:
    """An initialised Application (getMe, setMyCommands) driven by ``poll_once``."""
    commands = TelegramCommands(
        _service(fake, language),
        sessions,
        CommandContext(MODE, "default", 600),
        [str(ALLOWED)],
        poll_timeout_seconds=0,
        **kwargs,  # type: ignore[arg-type]
    )
    _OPEN.append(commands)
    await commands.initialize()
    return commands


async def _drain(fake: FakeTelegram, commands: TelegramCommands) -> None:
    while fake.pending_updates() and await commands.poll_once():
        pass


async def _ask(fake: FakeTelegram, commands: TelegramCommands, *texts: str, chat: int = ALLOWED) -> list[str]:
    before = len(fake.sent_messages())
    for text in texts:
        fake.push_message(chat, text)
    await _drain(fake, commands)
    return [message["text"] for message in fake.sent_messages()[before:]]


async def _press(fake: FakeTelegram, commands: TelegramCommands, label: str) -> dict[str, object]:
    """Press a button on the newest message that has it; returns the bot's message after the answer."""
    before = len(fake.calls("editMessageText"))
    fake.press_button(ALLOWED, label)
    await _drain(fake, commands)
    (edit,) = fake.calls("editMessageText")[before:]
    return fake.bot_message(ALLOWED, int(edit.params["message_id"]))


def _keyboard(message: dict[str, object]) -> list[list[dict[str, str]]]:
    markup = message["reply_markup"]
    assert isinstance(markup, str)  # PTB sends objects as JSON in the form body
    return json.loads(markup)["inline_keyboard"]


async def _audit_rows(sessions: async_sessionmaker[AsyncSession]) -> list[SystemLogRow]:
    async with sessions() as session:
        return list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "control")))


# --- the menu -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("language", "pause_text", "help_text"),
    [(KO, "신규 매수 일시정지 (확인 후)", "명령어 목록"), (EN, "Pause new buys", "The commands")],
)
async def test_the_command_menu_is_registered_in_the_chosen_language(
    fake_telegram: FakeTelegram, db_sessions, language: NotifyLanguage, pause_text: str, help_text: str
) -> None:
    # Given the Application, When it is initialised
    await _commands(fake_telegram, db_sessions, language)
    # Then getMe came first, and setMyCommands registered every command with a description in that language
    methods = [call.method for call in fake_telegram.calls()]
    assert methods.index("getMe") < methods.index("setMyCommands")
    menu = fake_telegram.my_commands()
    assert [entry["command"] for entry in menu] == list(MENU)
    assert {"status", "positions", "pause", "resume", "reset_safe_mode", "help"} <= set(MENU)
    descriptions = {entry["command"]: entry["description"] for entry in menu}
    assert pause_text in descriptions["pause"]
    assert descriptions["help"] == help_text


# --- the allowlist --------------------------------------------------------------------------------------------
async def test_messages_from_other_chats_are_ignored_and_logged(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a stranger's chat
    commands = await _commands(fake_telegram, db_sessions)
    # When it sends /stop, /status and /reset_safe_mode
    replies = await _ask(fake_telegram, commands, "/stop", "/status", "/reset_safe_mode now", chat=STRANGER)
    # Then nothing is answered (no message, no button), nothing is written, and each attempt is in system_logs
    assert replies == []
    assert fake_telegram.calls("sendMessage") == []
    assert commands.ignored == 3
    assert await BotRepository(db_sessions).get_config(DESIRED_STATE_KEY) is None
    assert await BotRepository(db_sessions).get_config(SAFE_MODE_RESET_KEY) is None
    async with db_sessions() as session:
        rows = list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "telegram")))
    assert [row.context for row in rows] == [
        {"chat_id": str(STRANGER), "command": "/stop"},
        {"chat_id": str(STRANGER), "command": "/status"},
        {"chat_id": str(STRANGER), "command": "/reset_safe_mode"},
    ]


# --- control with a confirmation ------------------------------------------------------------------------------
async def test_pause_asks_first_and_acts_on_confirm_like_the_api(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given an allowed chat
    commands = await _commands(fake_telegram, db_sessions)
    bot = BotRepository(db_sessions)
    # When it sends /pause with a reason
    (question,) = await _ask(fake_telegram, commands, "/pause 변동성 큼")
    # Then it is asked to confirm, with two buttons, and nothing is written yet
    assert "신규 매수를 일시정지할까요?" in question
    assert "변동성 큼" in question
    (asked,) = fake_telegram.sent_messages()
    assert [[button["text"] for button in row] for row in _keyboard(asked)] == [["✅ 확인", "✖ 취소"]]
    assert await bot.get_config(DESIRED_STATE_KEY) is None
    # When the confirm button is pressed
    edited = await _press(fake_telegram, commands, "확인")
    # Then the query is answered, the question becomes the outcome without buttons, and bot_config says paused,
    # by this chat, with the API's audit row
    (answer,) = fake_telegram.calls("answerCallbackQuery")
    assert answer.params["text"] == "확인했습니다"
    assert "요청했습니다: 봇 일시정지" in str(edited["text"])
    assert "reply_markup" not in edited
    assert html_parse_error(str(fake_telegram.calls("editMessageText")[0].params["text"])) is None
    assert await bot.desired_state() is DesiredState.PAUSED
    async with db_sessions() as session:
        row = await session.scalar(select(BotConfigRow).where(BotConfigRow.key == DESIRED_STATE_KEY))
    assert row is not None
    assert row.updated_by == f"telegram:{ALLOWED}"
    (audit,) = await _audit_rows(db_sessions)
    assert "변동성 큼" in audit.message
    assert f"telegram:{ALLOWED}" in audit.message
    assert audit.context["value"] == "paused"


async def test_cancel_changes_nothing(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a safe-mode reset waiting for its confirmation, in English
    commands = await _commands(fake_telegram, db_sessions, EN)
    (question,) = await _ask(fake_telegram, commands, "/reset_safe_mode losses understood")
    assert "End safe mode now?" in question
    # When cancel is pressed
    edited = await _press(fake_telegram, commands, "Cancel")
    # Then the query is answered, the message says so, and no request or audit row was written
    assert [call.params["text"] for call in fake_telegram.calls("answerCallbackQuery")] == ["Cancelled"]
    assert edited["text"] == "✖ Cancelled. Nothing changed."
    assert await BotRepository(db_sessions).safe_mode_reset_request() is None
    assert await _audit_rows(db_sessions) == []
    # And pressing the old confirm button afterwards does nothing either: the confirmation is gone
    (asked,) = fake_telegram.sent_messages()
    fake_telegram.push_callback_query(ALLOWED, int(asked["_message_id"]), _keyboard(asked)[0][0]["callback_data"])
    await _drain(fake_telegram, commands)
    assert fake_telegram.calls("answerCallbackQuery")[-1].params["text"] == "This confirmation has expired"
    assert await BotRepository(db_sessions).safe_mode_reset_request() is None


async def test_reset_safe_mode_on_confirm_writes_the_api_request(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given an allowed chat, When it asks for a safe-mode reset and confirms
    commands = await _commands(fake_telegram, db_sessions, EN)
    await _ask(fake_telegram, commands, "/reset_safe_mode losses understood")
    edited = await _press(fake_telegram, commands, "Confirm")
    # Then the request the scheduler reads is there, by this chat, with the API's audit row
    request = await BotRepository(db_sessions).safe_mode_reset_request()
    assert request is not None
    assert request[:2] == (f"telegram:{ALLOWED}", "losses understood")
    (audit,) = await _audit_rows(db_sessions)
    assert audit.message == f"safe mode reset requested by telegram:{ALLOWED}: losses understood"
    assert "Safe mode reset requested" in str(edited["text"])


async def test_every_control_maps_to_the_apis_states(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given an allowed chat, When stop, start (addressed to the bot by name), pause and resume are each confirmed
    commands = await _commands(fake_telegram, db_sessions, EN)
    bot = BotRepository(db_sessions)
    for command, state in (
        ("/stop", DesiredState.STOPPED),
        ("/start@trade_bot", DesiredState.RUNNING),
        ("/pause", DesiredState.PAUSED),
        ("/resume", DesiredState.RUNNING),
    ):
        await _ask(fake_telegram, commands, command)
        edited = await _press(fake_telegram, commands, "Confirm")
        # Then each lands on the state the API's action gives
        assert await bot.desired_state() is state
        assert f"Requested: bot {state.value}" in str(edited["text"])
    assert len(await _audit_rows(db_sessions)) == 4


async def test_a_confirmation_expires(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given confirmations that live no time at all
    commands = await _commands(fake_telegram, db_sessions, confirm_ttl_seconds=0)
    await _ask(fake_telegram, commands, "/stop")
    # When confirm is pressed, Then it is refused as expired and nothing is written
    edited = await _press(fake_telegram, commands, "확인")
    assert "만료된 확인입니다" in str(edited["text"])
    assert await BotRepository(db_sessions).get_config(DESIRED_STATE_KEY) is None


# --- read commands --------------------------------------------------------------------------------------------
async def _ticker(symbols: list[str]) -> dict[str, Decimal]:
    return {symbol: Decimal("4100000") for symbol in symbols}


async def test_read_commands_answer_in_korean_with_database_figures(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a trading history in the database and the exchange's ticker at 4,100,000 for ETH
    await seed_trading_history(db_sessions)
    commands = await _commands(fake_telegram, db_sessions, KO, prices=_ticker)
    # When each read command is asked
    status, balance, positions, trades, profit, report, help_text = await _ask(
        fake_telegram, commands, "/status", "/balance", "/positions", "/trades", "/profit", "/report", "/help"
    )
    # Then each answer is valid HTML, in Korean, carrying the stored figures formatted for people
    for text in (status, balance, positions, trades, profit, report, help_text):
        assert html_parse_error(text) is None
    assert "<b>스케줄러</b>: 실행 중" in status
    assert "<b>안전 모드</b>: 꺼짐" in status
    assert "<b>평가금액</b>: 10,200,000원" in balance
    assert "<b>누적 수익률</b>: +2.00%" in balance
    assert "<b>KRW-ETH</b> 0.5 ETH" in positions
    assert "<b>매수 평균가</b>: 4,000,000원" in positions
    assert "<b>현재가</b>: 4,100,000원" in positions
    assert "<b>평가손익</b>: +50,000원 (+2.50%)" in positions
    assert "<b>손절가</b>: 3,800,000원" in positions
    assert "<b>보유 기간</b>: 3시간" in positions
    assert "매도 KRW-BTC 0.001 BTC @ 112,345,000원 (수수료 56원, 손익 +12,345원)" in trades
    assert "매수 KRW-BTC" in trades
    assert "<b>24시간</b>: 손익 +12,345원, 수수료 56원, 거래 1건" in profit
    assert "<b>전체</b>: 손익 +12,345원, 수수료 106원, 거래 2건, 승률 100.00%" in profit
    assert "일일 리포트" in report
    assert "<b>실현 손익</b>: +12,345원" in report
    assert "<b>평가금액</b>: 10,200,000원" in report
    assert "/positions: 보유 포지션, 현재가, 평가손익" in help_text


async def test_read_commands_answer_in_english(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given the same history, English, and no live ticker (the snapshot has no price for ETH)
    await seed_trading_history(db_sessions)
    commands = await _commands(fake_telegram, db_sessions, EN)
    status, balance, positions, trades, profit = await _ask(
        fake_telegram, commands, "/status", "/balance", "/positions", "/trades", "/profit"
    )
    assert "<b>Scheduler</b>: running" in status
    assert "<b>Safe mode</b>: off" in status
    assert "<b>Equity</b>: 10,200,000 KRW" in balance
    assert "<b>Current price</b>: unknown" in positions
    assert "<b>Held for</b>: 3 h" in positions
    assert "SELL KRW-BTC 0.001 BTC @ 112,345,000 KRW (fee 56 KRW, P&amp;L +12,345 KRW)" in trades
    assert "<b>All time</b>: P&amp;L +12,345 KRW, fees 106 KRW, 2 trades, win rate 100.00%" in profit


async def test_positions_fall_back_to_the_snapshot_price(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given an open ETH position and a snapshot that priced ETH at 3,900,000, and a ticker that fails
    await seed_trading_history(db_sessions)
    at = NOW - timedelta(minutes=5)
    await SqlTradingRepository(db_sessions).save_snapshot(
        PortfolioSnapshotRecord(
            total_value_krw=Decimal("10150000"),
            positions={"KRW-ETH": {"amount": "0.5", "price": "3900000", "avg_buy_price": "4000000"}},
            mode=MODE,
            cash_krw=Decimal("8200000"),
            created_at=at,
        )
    )

    async def broken(symbols: list[str]) -> dict[str, Decimal]:
        raise ConnectionError("exchange down")

    commands = await _commands(fake_telegram, db_sessions, EN, prices=broken)
    # When /positions is asked, Then the snapshot's price and its time are shown, with the unrealised loss
    (positions,) = await _ask(fake_telegram, commands, "/positions")
    assert "<b>Current price</b>: 3,900,000 KRW (snapshot " in positions
    assert "<b>Unrealised P&amp;L</b>: -50,000 KRW (-2.50%)" in positions


async def test_status_shows_safe_mode_and_a_stale_heartbeat(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a heartbeat 20 minutes old and a daily loss breaker in force
    from src.risk.store import RiskState

    await BotRepository(db_sessions).write_heartbeat(
        "default", state="running", mode=MODE.value, symbols=["KRW-BTC"], heartbeat_at=NOW - timedelta(minutes=20)
    )
    await SqlRiskStore(db_sessions).save_risk_state(
        RiskState(mode=MODE, safe_mode=True, safe_mode_reason="daily loss 10.2% >= 10%", safe_mode_since=NOW)
    )
    commands = await _commands(fake_telegram, db_sessions, EN, clock=lambda: NOW)
    # When /status is asked
    (status,) = await _ask(fake_telegram, commands, "/status")
    # Then it says the heartbeat is stale and why no new buys happen
    assert "<b>Heartbeat</b>: 20 min ago (stale)" in status
    assert "ON: daily loss 10.2% &gt;= 10%" in status


async def test_unknown_text_gets_the_help(fake_telegram: FakeTelegram, db_sessions) -> None:
    commands = await _commands(fake_telegram, db_sessions, EN)
    unknown, text = await _ask(fake_telegram, commands, "/bogus", "hello")
    assert "/reset_safe_mode" in unknown
    assert unknown == text


# --- the running Application --------------------------------------------------------------------------------------
def _acknowledged(fake_telegram: FakeTelegram) -> bool:
    """The poller has asked for updates past the ones it handled (that poll may come after its answers)."""
    return any(call.params.get("offset") not in (None, "") for call in fake_telegram.calls("getUpdates"))


async def _wait_for(condition: object, seconds: float = 10) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.05)


async def test_the_polling_application_answers_and_confirms(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given the Application polling in the background (PTB's Updater)
    commands = TelegramCommands(
        _service(fake_telegram),
        db_sessions,
        CommandContext(MODE, "default", 600),
        [str(ALLOWED)],
        poll_timeout_seconds=0,
    )
    _OPEN.append(commands)
    await commands.start()
    # When a read command and a control command arrive, and the control is confirmed
    fake_telegram.push_message(ALLOWED, "/balance")
    fake_telegram.push_message(ALLOWED, "/pause")
    await _wait_for(lambda: len(fake_telegram.sent_messages()) >= 2)
    fake_telegram.press_button(ALLOWED, "확인")
    await _wait_for(lambda: fake_telegram.calls("editMessageText") and _acknowledged(fake_telegram))
    await commands.aclose()
    # Then the menu was registered, both were answered, the pause applied, and every update acknowledged
    assert fake_telegram.my_commands()
    assert commands.handled == 2
    assert await BotRepository(db_sessions).desired_state() is DesiredState.PAUSED
    assert fake_telegram.pending_updates() == 0
    allowed = fake_telegram.calls("getUpdates")[-1].params.get("allowed_updates")
    assert json.loads(str(allowed)) == ["message", "callback_query"]


async def test_start_telegram_runs_sender_and_commands_from_settings(
    fake_telegram: FakeTelegram, db_sessions, monkeypatch
) -> None:
    # Given settings that point Telegram at the fake with one allowed chat, in English
    from backend.app.services.telegram_commands import start_telegram
    from src.config.settings import load_settings
    from src.domain.events import EventKind, NotificationEvent

    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", fake_telegram.token)
    monkeypatch.setenv("TELEGRAM_CHAT_IDS", str(ALLOWED))
    monkeypatch.setenv("TELEGRAM_BASE_URL", fake_telegram.base_url)
    monkeypatch.setenv("NOTIFY_LANGUAGE", "en")
    runtime = await start_telegram(load_settings(env_file=None), db_sessions)
    try:
        # When an event is announced and a command arrives
        runtime.notifier.notify(NotificationEvent(EventKind.BOT_STATE_CHANGED, "Bot paused", {"state": "paused"}))
        fake_telegram.push_message(ALLOWED, "/status")
        await _wait_for(lambda: len(fake_telegram.sent_messages()) >= 2)
    finally:
        await runtime.aclose()
    # Then both went out in English: the alert and the answer
    texts = [message["text"] for message in fake_telegram.sent_messages()]
    assert any("Bot paused" in text for text in texts)
    assert any("Bot status" in text for text in texts)


async def test_a_rejected_token_stops_the_commands_without_printing_it(
    fake_telegram: FakeTelegram, db_sessions, capsys
) -> None:
    # Given a token Telegram rejects
    config = TelegramConfig.model_construct(
        bot_token=SecretStr("999:wrong"), chat_ids=[str(ALLOWED)], base_url=fake_telegram.base_url, language=EN
    )
    sender = NotificationService(config)
    _OPEN.append(sender)
    commands = TelegramCommands(sender, db_sessions, CommandContext(MODE, "default", 600), [str(ALLOWED)])
    _OPEN.append(commands)
    # When it starts, Then it gives up after getMe's 401, without polling and without the token in the output
    await commands.start()
    await _wait_for(lambda: commands._task is not None and commands._task.done())
    assert fake_telegram.calls("getUpdates") == []
    assert "999:wrong" not in capsys.readouterr().out


async def test_positions_use_the_engines_exchange_ticker(
    fake_telegram: FakeTelegram, db_engine, db_sessions, make_settings, fake_upbit, fake_fear_greed
) -> None:
    """Given the prices the scheduler wires (``ticker_prices`` of the engine's exchange, here paper on the fake
    Upbit), when /positions is asked, then the current price is the exchange's ticker, on its tick."""
    from backend.app.services.telegram_commands import ticker_prices
    from backend.app.services.trading_engine import TradingEngine

    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url, FEAR_GREED_URL=fake_fear_greed.url, TRADING_SYMBOLS="KRW-ETH"
    )
    await seed_trading_history(db_sessions)
    engine = await TradingEngine.create(settings, db_engine, mode=MODE)
    try:
        prices = ticker_prices(engine.pipeline.exchange)
        (ticker,) = await engine.pipeline.exchange.get_tickers(["KRW-ETH"])
        commands = await _commands(fake_telegram, db_sessions, EN, prices=prices)
        (positions,) = await _ask(fake_telegram, commands, "/positions")
    finally:
        await engine.aclose()
    from backend.app.services.telegram_messages import price

    assert f"<b>Current price</b>: {price(ticker.trade_price, EN)}" in positions
    assert "(snapshot" not in positions
    assert "<b>Unrealised P&amp;L</b>: " in positions


async def test_a_button_pressed_in_a_chat_not_allowed_is_ignored(fake_telegram: FakeTelegram, db_sessions) -> None:
    """Given a question with buttons in a chat that is not (or no longer) in TELEGRAM_CHAT_IDS, when its
    confirm button is pressed, then nothing is answered or written, and the attempt is in system_logs."""
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup

    commands = await _commands(fake_telegram, db_sessions)
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("✅ 확인", callback_data="ok:abc")]])
    await commands.app.bot.send_message(chat_id=STRANGER, text="?", reply_markup=keyboard)
    fake_telegram.press_button(STRANGER, "확인")
    await _drain(fake_telegram, commands)
    assert fake_telegram.calls("answerCallbackQuery") == []
    assert fake_telegram.calls("editMessageText") == []
    assert commands.ignored == 1
    assert await BotRepository(db_sessions).get_config(DESIRED_STATE_KEY) is None
    async with db_sessions() as session:
        rows = list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "telegram")))
    assert [row.context for row in rows] == [{"chat_id": str(STRANGER), "command": "button ok:abc"}]


async def test_a_confirmed_control_that_cannot_be_written_says_so(
    fake_telegram: FakeTelegram, db_sessions, monkeypatch
) -> None:
    # Given a pause waiting for its confirmation, and a database that refuses the write
    commands = await _commands(fake_telegram, db_sessions, EN)
    await _ask(fake_telegram, commands, "/pause")

    async def refuse(*_args: object, **_kwargs: object) -> None:
        raise ConnectionError("database restarting")

    monkeypatch.setattr(BotRepository, "request_state", refuse)
    # When confirm is pressed, Then the button is answered and the question says the pause failed
    edited = await _press(fake_telegram, commands, "Confirm")
    assert fake_telegram.calls("answerCallbackQuery")[-1].params["text"] == "/pause failed: ConnectionError"
    assert edited["text"] == "⚠️ /pause failed: ConnectionError"


async def test_commands_keep_trying_while_telegram_is_unreachable(db_sessions) -> None:
    # Given a Bot API nobody answers at (a fake that has stopped)
    with FakeTelegram() as fake:
        pass
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await asyncio.sleep(0)

    commands = TelegramCommands(
        _service(fake), db_sessions, CommandContext(MODE, "default", 600), [str(ALLOWED)], sleep=sleep
    )
    _OPEN.append(commands)
    # When the commands start, Then they wait and try again instead of failing the process
    await commands.start()
    await _wait_for(lambda: len(waits) >= 2)
    await commands.aclose()
    assert waits[:2] == [5.0, 5.0]
