"""NotificationService against the fake Telegram Bot API: real python-telegram-bot over loopback HTTP."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from backend.app.db.repositories.bot import BotRepository
from backend.app.models import SystemLogRow
from backend.app.services.notification import (
    MAX_MESSAGE_CHARS,
    NotificationService,
    format_event,
    split_message,
)
from src.config.system_groups import NotifyLanguage, TelegramConfig
from src.domain.events import EventKind, NotificationEvent
from tests.fakes.telegram_server import FakeTelegram, SendFault, html_parse_error

# PTB 22 warns inside RetryAfter.__init__ that retry_after will become a timedelta; the service handles both.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

CHAT_A, CHAT_B = "1001", "-2002"


def _config(
    fake: FakeTelegram, chat_ids: list[str] | None = None, language: NotifyLanguage = NotifyLanguage.KO
) -> TelegramConfig:
    return TelegramConfig.model_construct(
        bot_token=SecretStr(fake.token),
        chat_ids=chat_ids or [CHAT_A],
        base_url=fake.base_url,
        commands_enabled=True,
        language=language,
    )


def _sell_event() -> NotificationEvent:
    return NotificationEvent(
        kind=EventKind.TRADE_EXECUTED,
        title="SELL KRW-BTC",
        fields={
            "symbol": "KRW-BTC",
            "side": "sell",
            "price": Decimal("95000000"),
            "volume": Decimal("0.00105"),
            "total": Decimal("99750"),
            "fee": Decimal("49.88"),
            "pnl": Decimal("-1234.5"),
            "mode": "live",
            "reason": "ai: RSI <30 & falling",
            "identifier": "sell-9f8e7d",
        },
        at=datetime(2026, 1, 2, 0, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (NotifyLanguage.KO, ("매도 체결 · KRW-BTC", "95,000,000원", "0.00105 BTC", "50원", "-1,235원 (-1.22%)")),
        (NotifyLanguage.EN, ("Sold KRW-BTC", "95,000,000 KRW", "0.00105 BTC", "50 KRW", "-1,235 KRW (-1.22%)")),
    ],
    ids=["ko", "en"],
)
async def test_trade_event_reaches_every_chat_as_escaped_html(
    fake_telegram: FakeTelegram, language: NotifyLanguage, expected: tuple[str, ...]
) -> None:
    # Given a service for two chats in the language of NOTIFY_LANGUAGE
    service = NotificationService(_config(fake_telegram, [CHAT_A, CHAT_B], language))
    await service.start()
    try:
        # When a sell is announced
        service.notify(_sell_event())
        await asyncio.wait_for(service.drain(), timeout=10)
    finally:
        await service.aclose()
    # Then both chats got one HTML message with every figure for people, the reason escaped, in KST,
    # and no internal order identifier
    sent = fake_telegram.sent_messages()
    assert sorted(message["chat_id"] for message in sent) == sorted([CHAT_A, CHAT_B])
    text = sent[0]["text"]
    assert sent[0]["parse_mode"] == "HTML"
    assert "RSI &lt;30 &amp; falling" in text
    for fragment in (*expected, "2026-01-02 09:30 KST"):
        assert fragment in text
    assert "sell-9f8e7d" not in text
    assert html_parse_error(text) is None


async def test_notify_returns_at_once_while_telegram_is_unreachable() -> None:
    # Given a service pointed at a port nobody listens on
    with FakeTelegram() as fake:
        config = _config(fake)
    service = NotificationService(config, max_attempts=1)
    await service.start()
    try:
        # When many events are announced, notify never blocks nor raises
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(200):
            service.notify(_sell_event())
        enqueue_seconds = loop.time() - started
        await asyncio.wait_for(service.drain(), timeout=30)
    finally:
        await service.aclose()
    # Then every event was tried and counted as failed, and enqueueing did not wait for the network
    assert service.failed == 200
    assert enqueue_seconds < 1.0


async def test_disabled_service_ignores_events() -> None:
    # Given no token configured
    service = NotificationService(TelegramConfig.model_construct(bot_token=None, chat_ids=[], base_url="x"))
    await service.start()
    # When an event is announced, Then nothing is queued and nothing fails
    service.notify(_sell_event())
    await service.aclose()
    assert (service.delivered, service.failed, service.dropped) == (0, 0, 0)


async def test_long_message_is_split_under_the_limit(fake_telegram: FakeTelegram) -> None:
    # Given a reply far longer than one Telegram message
    reason = "\n".join(f"<b>line {i}</b>: RSI&lt;70 &amp; MACD&gt;0 " + "x" * 80 for i in range(150))
    service = NotificationService(_config(fake_telegram))
    try:
        # When it is sent
        await service.send(CHAT_A, reason)
    finally:
        await service.aclose()
    # Then it arrives in several valid HTML messages under 4,096 characters that together hold all of it
    sent = [message["text"] for message in fake_telegram.sent_messages()]
    assert len(sent) >= 4
    assert all(len(text) <= MAX_MESSAGE_CHARS and html_parse_error(text) is None for text in sent)
    assert "<b>line 149</b>: RSI&lt;70 &amp; MACD&gt;0" in "".join(sent)


def test_long_free_text_in_an_event_is_cut_for_people() -> None:
    # Given an AI decision whose reason runs to pages
    reason = "\n".join(f"line {i}: RSI<70 & MACD>0 " + "x" * 80 for i in range(150))
    event = NotificationEvent(EventKind.AI_DECISION, "AI decision", {"symbol": "KRW-ETH", "reason": reason})
    # When formatted, Then one message carries its start, cut with an ellipsis
    text = format_event(event, NotifyLanguage.EN)
    assert len(text) < MAX_MESSAGE_CHARS
    assert "line 0: RSI&lt;70 &amp; MACD&gt;0" in text
    assert "…" in text
    assert html_parse_error(text) is None


def test_split_never_cuts_inside_a_tag_or_entity() -> None:
    # Given one overlong line full of entities and tags
    text = "<b>x</b>: " + "&amp;<i>y</i>" * 2000
    # When it is split, Then every chunk is short and parses on its own
    chunks = split_message(text, limit=500)
    assert "".join(chunks) == text
    assert all(len(chunk) <= 500 for chunk in chunks)
    assert all(html_parse_error(chunk) is None for chunk in chunks)


async def test_flood_control_waits_retry_after_then_delivers(fake_telegram: FakeTelegram) -> None:
    # Given Telegram answers the first send with 429 retry_after=1
    fake_telegram.fail_next_sends(SendFault("flood", retry_after=1))
    service = NotificationService(_config(fake_telegram))
    await service.start()
    try:
        service.notify(_sell_event())
        await asyncio.wait_for(service.drain(), timeout=10)
    finally:
        await service.aclose()
    # Then the message is sent again no sooner than retry_after, and delivered once
    attempts = fake_telegram.calls("sendMessage")
    assert len(attempts) == 2
    assert attempts[1].at - attempts[0].at >= 1.0
    assert len(fake_telegram.sent_messages()) == 1
    assert service.failed == 0


async def test_html_rejected_by_telegram_is_resent_as_plain_text(fake_telegram: FakeTelegram) -> None:
    # Given a text whose HTML Telegram cannot parse
    service = NotificationService(_config(fake_telegram))
    try:
        # When it is sent
        await service.send(CHAT_A, "<b>unclosed & broken")
    finally:
        await service.aclose()
    # Then the 400 is answered by a plain-text resend of the same words
    attempts = fake_telegram.calls("sendMessage")
    assert [call.params.get("parse_mode") for call in attempts] == ["HTML", None]
    assert fake_telegram.sent_messages()[0]["text"] == "unclosed & broken"


async def test_final_failure_is_recorded_in_system_logs(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given Telegram fails with 502 on every attempt for the first event and "chat not found" for the second
    fake_telegram.fail_next_sends(*[SendFault("server_error")] * 3, SendFault("bad_request"))
    service = NotificationService(
        _config(fake_telegram), BotRepository(db_sessions), max_attempts=3, backoff_seconds=0.01
    )
    await service.start()
    try:
        service.notify(_sell_event())
        service.notify(NotificationEvent(EventKind.SAFE_MODE_ENTERED, "Safe mode", {"reason": "daily loss 10%"}))
        await asyncio.wait_for(service.drain(), timeout=10)
    finally:
        await service.aclose()
    # Then both failures are rows in system_logs, without the token, and nothing was delivered
    async with db_sessions() as session:
        rows = list(await session.scalars(select(SystemLogRow).where(SystemLogRow.source == "notification")))
    assert [row.context["kind"] for row in rows] == ["trade_executed", "safe_mode_entered"]
    assert "gave up after 3 attempts" in rows[0].context["error"]
    assert "chat not found" in rows[1].context["error"].lower()
    assert all(fake_telegram.token not in str(row.context) for row in rows)
    assert fake_telegram.sent_messages() == []


@pytest.mark.parametrize("language", list(NotifyLanguage))
@pytest.mark.parametrize("kind", list(EventKind))
def test_every_event_kind_formats_to_valid_html(kind: EventKind, language: NotifyLanguage) -> None:
    # Given an event of each kind with hostile text, When formatted, Then Telegram would accept it
    fields = {"reason": "a<b & c>d", "reasons": ["rsi > 70", "<adx>"], "error": "<boom> & bust", "symbol": "KRW-BTC"}
    text = format_event(NotificationEvent(kind, "<title>", fields), language)
    assert html_parse_error(text) is None
    assert "<title>" not in text


async def test_daily_report_carries_the_database_figures(fake_telegram: FakeTelegram, db_sessions) -> None:
    # Given a day of trading in the database
    from backend.app.services.reporting import build_daily_report
    from backend.tests.test_telegram_commands import MODE, NOW, seed_trading_history

    await seed_trading_history(db_sessions)
    report = await build_daily_report(db_sessions, MODE, NOW)
    service = NotificationService(_config(fake_telegram))
    await service.start()
    try:
        # When the 09:00 job announces the report
        service.notify(report.to_event())
        await asyncio.wait_for(service.drain(), timeout=10)
    finally:
        await service.aclose()
    # Then the message holds the real P&L, trade count, fees and equity from the database, in Korean
    (message,) = fake_telegram.sent_messages()
    text = message["text"]
    assert "<b>평가금액</b>: 10,200,000원" in text
    assert "<b>실현 손익</b>: +12,345원" in text
    assert "<b>거래</b>: 1건 (매수 0, 매도 1)" in text
    assert "<b>수수료</b>: 56원" in text
    assert html_parse_error(text) is None


async def test_notify_from_another_thread_is_delivered(fake_telegram: FakeTelegram) -> None:
    # Given a started service, When a worker thread announces an event
    service = NotificationService(_config(fake_telegram))
    await service.start()
    try:
        await asyncio.to_thread(service.notify, _sell_event())
        async with asyncio.timeout(10):
            while not fake_telegram.sent_messages():
                await asyncio.sleep(0.02)
        await service.drain()
    finally:
        await service.aclose()
    # Then it is delivered like any other
    assert len(fake_telegram.sent_messages()) == 1


def test_a_full_queue_drops_and_counts_instead_of_blocking(fake_telegram: FakeTelegram) -> None:
    # Given a queue of one and no sender draining it
    service = NotificationService(_config(fake_telegram), max_queue=1)
    # When three events are announced, Then notify returns each time and the overflow is counted
    for _ in range(3):
        service.notify(_sell_event())
    assert service.dropped == 2


def test_fake_telegram_runs_as_a_process() -> None:
    """Given ``python -m tests.fakes.telegram_server``, When started, Then it prints its base URL and answers getMe."""
    import subprocess
    import sys

    import httpx

    from tests.fakes.telegram_server import DEFAULT_TOKEN

    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.telegram_server", "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        base_url = line.removeprefix("listening on ")
        answer = httpx.get(f"{base_url}{DEFAULT_TOKEN}/getMe", timeout=5).json()
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert answer["ok"] is True
    assert answer["result"]["is_bot"] is True


async def test_a_real_stop_loss_sell_reads_as_words_with_its_holding_time(
    db_engine, db_sessions, make_settings, fake_upbit, fake_fear_greed, fake_telegram: FakeTelegram
) -> None:
    """Given the trading engine on the fake Upbit announcing to the fake Telegram (with the position lookup the
    scheduler wires), when a bought position is sold by its stop, then the sell message names the stop in words,
    shows the profit in KRW and %, the entry price and the holding time, and no order identifier."""
    from sqlalchemy import select as sql_select

    from backend.app.db.queries.positions import SqlTradeDetails
    from backend.app.models import OrderRow, PositionRow
    from backend.app.services.trading_engine import TradingEngine
    from src.domain.modes import TradingMode
    from tests.support.strategies import AlwaysBuy

    fake_upbit.seed_demo()
    settings = make_settings(
        UPBIT_BASE_URL=fake_upbit.base_url,
        FEAR_GREED_URL=fake_fear_greed.url,
        MIN_TRADE_INTERVAL_HOURS="0",
        TRADING_SYMBOLS="KRW-BTC",
    )
    service = NotificationService(_config(fake_telegram), trade_details=SqlTradeDetails(db_sessions))
    await service.start()
    engine = await TradingEngine.create(settings, db_engine, mode=TradingMode.PAPER, notifier=service)
    engine.pipeline.analyzer.strategy = AlwaysBuy()
    engine.pipeline.analyzer.quick_filter = None  # the message is under test, not the filter's verdict
    try:
        await engine.start_up()
        await engine.trading_job()
        async with db_sessions.begin() as session:  # the market is now below the stop
            position = await session.scalar(sql_select(PositionRow))
            position.stop_price = position.avg_entry_price * 10
        await engine.position_job()
        await asyncio.wait_for(service.drain(), timeout=10)
    finally:
        await engine.aclose()
        await service.aclose()
    async with db_sessions() as session:
        identifiers = list(await session.scalars(sql_select(OrderRow.identifier)))
    (sold,) = [message["text"] for message in fake_telegram.sent_messages() if "매도 체결" in message["text"]]
    assert "<b>사유</b>: 손절 (기준가 " in sold
    assert "<b>손익</b>: " in sold
    assert "%)" in sold
    assert "<b>매수 평균가</b>: " in sold
    assert "<b>보유 기간</b>: 1분 미만" in sold
    assert "exit:" not in sold
    assert all(identifier not in sold for identifier in identifiers)
    assert html_parse_error(sold) is None


def test_the_fake_checks_the_new_calls_like_telegram(fake_telegram: FakeTelegram) -> None:
    """Given the fake Bot API, when a client sends what Telegram refuses, then it answers Telegram's 400s."""
    import json

    import httpx

    base = f"{fake_telegram.base_url}{fake_telegram.token}"

    def call(method: str, **params: object) -> tuple[int, dict[str, object]]:
        body = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in params.items()}
        answer = httpx.post(f"{base}/{method}", data=body, timeout=5)
        return answer.status_code, answer.json()

    # setMyCommands: a command Telegram cannot show, an empty description
    assert call("setMyCommands", commands=[{"command": "Pause-Now", "description": "x"}])[0] == 400
    assert call("setMyCommands", commands=[{"command": "pause", "description": ""}])[0] == 400
    assert call("setMyCommands", commands=[{"command": "pause", "description": "Pause"}]) == (
        200,
        {"ok": True, "result": True},
    )
    assert fake_telegram.my_commands() == [{"command": "pause", "description": "Pause"}]
    # sendMessage: callback_data over 64 bytes
    too_long = {"inline_keyboard": [[{"text": "ok", "callback_data": "x" * 65}]]}
    status, body = call("sendMessage", chat_id=CHAT_A, text="?", reply_markup=too_long)
    assert (status, body["description"]) == (400, "Bad Request: BUTTON_DATA_INVALID")
    keyboard = {"inline_keyboard": [[{"text": "✅", "callback_data": "ok:1"}]]}
    status, body = call("sendMessage", chat_id=CHAT_A, text="Sure?", reply_markup=keyboard)
    assert status == 200
    message_id = body["result"]["message_id"]  # type: ignore[index]
    # answerCallbackQuery: once per query the fake issued
    query_id = fake_telegram.press_button(int(CHAT_A), "✅")
    assert call("answerCallbackQuery", callback_query_id=query_id, text="Done")[0] == 200
    assert call("answerCallbackQuery", callback_query_id=query_id)[0] == 400
    assert call("answerCallbackQuery", callback_query_id="never-issued")[0] == 400
    # editMessageText: only the bot's own message, and only when something changes
    assert call("editMessageText", chat_id=CHAT_A, message_id=999, text="x")[0] == 400
    assert call("editMessageText", chat_id=CHAT_A, message_id=message_id, text="Done")[0] == 200
    status, body = call("editMessageText", chat_id=CHAT_A, message_id=message_id, text="Done")
    assert status == 400
    assert "message is not modified" in str(body["description"])
    assert "reply_markup" not in fake_telegram.bot_message(int(CHAT_A), int(message_id))
