"""The Telegram message catalogue: every event kind in Korean and English, numbers for people, no internal strings."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from backend.app.services.reporting import DailyReport
from backend.app.services.telegram_messages import (
    CATALOGUE,
    PHRASES,
    coin_amount,
    duration,
    krw,
    percent,
    price,
    render_event,
)
from src.config.system_groups import NotifyLanguage, TelegramConfig
from src.domain.events import EventKind, NotificationEvent
from src.domain.modes import TradingMode
from src.exceptions import ConfigurationError
from tests.fakes.telegram_server import html_parse_error

KO, EN = NotifyLanguage.KO, NotifyLanguage.EN
AT = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)  # 09:30 KST
HANGUL = re.compile(r"[\uac00-\ud7a3]")
# What a person must never read: raw decimals with trailing zeros, order identifiers, reason codes.
INTERNAL = re.compile(r"\d\.\d*0{4,}\b|identifier|sell-7c1d|exit:|stop_loss|\bNone\b|spent_day_usd|final_decision")


def _events() -> dict[EventKind, NotificationEvent]:
    """One event of each kind, with the fields its producer gives (settlement, analysis stage, risk manager,
    scheduler, daily report, AI budget)."""
    report = DailyReport(
        mode=TradingMode.PAPER,
        since=AT - timedelta(days=1),
        until=AT,
        equity_krw=Decimal("10234567.89"),
        equity_change_pct=Decimal("-1.25"),
        profit_rate=Decimal("0.0234567"),
        trades=3,
        buys=2,
        sells=1,
        volume_krw=Decimal("1500000"),
        fees_krw=Decimal("750.5"),
        realized_pnl_krw=Decimal("12345.6"),
        open_positions=["KRW-ETH"],
        decisions={"ai": 3, "rules": 1},
        errors=0,
        drawdown_pct=Decimal("3.10"),
    )
    return {
        EventKind.TRADE_EXECUTED: NotificationEvent(
            EventKind.TRADE_EXECUTED,
            "SELL KRW-BTC",
            {
                "symbol": "KRW-BTC",
                "side": "sell",
                "price": Decimal("56904000.0"),
                "volume": Decimal("0.00175700"),
                "total": Decimal("99980.33"),
                "fee": Decimal("49.99"),
                "pnl": Decimal("-1520.12"),
                "mode": "live",
                "reason": "exit: stop_loss (price 56904000.0, level 56982900.00000000)",
                "identifier": "sell-7c1d",
                "entry_at": AT - timedelta(hours=26, minutes=5),
            },
            at=AT,
        ),
        EventKind.AI_DECISION: NotificationEvent(
            EventKind.AI_DECISION,
            "BUY KRW-ETH decided",
            {"symbol": "KRW-ETH", "decision": "buy", "confidence": 0.72, "source": "ai", "reason": "RSI rebounds"},
            at=AT,
        ),
        EventKind.VALIDATOR_OVERRIDE: NotificationEvent(
            EventKind.VALIDATOR_OVERRIDE,
            "Buy of KRW-ETH turned into hold",
            {
                "symbol": "KRW-ETH",
                "decision": "buy",
                "final_decision": "hold",
                "reasons": ["RSI 74 above 70"],
                "source": "ai",
            },
            at=AT,
        ),
        EventKind.ERROR: NotificationEvent(
            EventKind.ERROR,
            "Job trading_cycle failed",
            {"job": "trading_cycle", "error": "DatabaseUnavailable: gone"},
            at=AT,
        ),
        EventKind.SAFE_MODE_ENTERED: NotificationEvent(
            EventKind.SAFE_MODE_ENTERED,
            "Safe mode: no new buys",
            {
                "mode": "paper",
                "reason": "daily loss 5.20% from 10,000,000 KRW reached the limit 5%",
                "until": (AT + timedelta(hours=15)).isoformat(),
                "equity": Decimal("9480000.00000000"),
                "peak_equity": Decimal("10000000"),
                "extended": False,
            },
            at=AT,
        ),
        EventKind.SAFE_MODE_LEFT: NotificationEvent(
            EventKind.SAFE_MODE_LEFT,
            "Safe mode ended: buys allowed again",
            {"mode": "paper", "why": "reset by telegram:1001: ok", "was": "daily loss"},
            at=AT,
        ),
        EventKind.BOT_STATE_CHANGED: NotificationEvent(
            EventKind.BOT_STATE_CHANGED,
            "Bot paused",
            {"previous": "running", "state": "paused", "instance": "default"},
            at=AT,
        ),
        EventKind.DAILY_REPORT: report.to_event(),
        EventKind.AI_BUDGET_REACHED: NotificationEvent(
            EventKind.AI_BUDGET_REACHED,
            "AI budget reached: AI off",
            {
                "reason": "daily AI budget 1.00 USD reached",
                "spent_day_usd": "1.0012",
                "daily_budget_usd": "1.00",
                "spent_month_usd": "12.5",
                "monthly_budget_usd": "30",
            },
            at=AT,
        ),
        EventKind.AI_BUDGET_RESTORED: NotificationEvent(
            EventKind.AI_BUDGET_RESTORED,
            "AI adviser back on (budget)",
            {"spent_day_usd": "0", "daily_budget_usd": "1.00", "spent_month_usd": "12.5", "monthly_budget_usd": "30"},
            at=AT,
        ),
        EventKind.ANNOUNCEMENT: NotificationEvent(
            EventKind.ANNOUNCEMENT,
            "[Trading] End of trading support for Abc (ABC)",
            {
                "uuid": "a-1",
                "category": "trade",
                "title": "[Trading] End of trading support for Abc (ABC)",
                "url": "https://upbit.com/service_center/notice?id=1",
                "markets": ["KRW-ABC"],
                "maintenance": False,
            },
            at=AT,
        ),
        EventKind.MARKET_WARNING: NotificationEvent(
            EventKind.MARKET_WARNING,
            "KRW-ABC: market_caution",
            {"symbol": "KRW-ABC", "reason": "market_caution", "action": "tighten_stop", "mode": "live"},
            at=AT,
        ),
    }


def test_the_catalogue_covers_every_event_kind() -> None:
    assert set(CATALOGUE) == set(EventKind)
    assert set(_events()) == set(EventKind)


def test_every_phrase_has_both_languages_with_the_same_placeholders() -> None:
    def names(template: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}

    for key, phrase in PHRASES.items():
        assert phrase.ko.strip(), key
        assert phrase.en.strip(), key
        assert names(phrase.ko) == names(phrase.en), key


@pytest.mark.parametrize("language", [KO, EN], ids=["ko", "en"])
@pytest.mark.parametrize("kind", list(EventKind))
def test_every_kind_reads_as_words_for_people(kind: EventKind, language: NotifyLanguage) -> None:
    # Given the event its producer builds, When rendered in each language
    text = render_event(_events()[kind], language)
    # Then Telegram accepts it, it is in that language, in KST, and nothing internal shows
    assert html_parse_error(text) is None
    assert bool(HANGUL.search(text)) is (language is KO)
    assert "2026-03-02 09:30 KST" in text
    assert INTERNAL.search(text) is None, text


@pytest.mark.parametrize(
    ("language", "lines"),
    [
        (
            KO,
            [
                "🔴 <b>매도 체결 · KRW-BTC</b>",
                "<b>가격</b>: 56,904,000원",
                "<b>수량</b>: 0.001757 BTC",
                "<b>금액</b>: 99,980원",
                "<b>수수료</b>: 50원",
                "<b>손익</b>: -1,520원 (-1.50%)",
                "<b>보유 기간</b>: 1일 2시간",
                "<b>사유</b>: 손절 (기준가 56,983,000원)",
                "<i>2026-03-02 09:30 KST</i>",
            ],
        ),
        (
            EN,
            [
                "🔴 <b>Sold KRW-BTC</b>",
                "<b>Price</b>: 56,904,000 KRW",
                "<b>Amount</b>: 0.001757 BTC",
                "<b>Value</b>: 99,980 KRW",
                "<b>Fee</b>: 50 KRW",
                "<b>Profit</b>: -1,520 KRW (-1.50%)",
                "<b>Held for</b>: 1 d 2 h",
                "<b>Reason</b>: stop loss (trigger 56,983,000 KRW)",
                "<i>2026-03-02 09:30 KST</i>",
            ],
        ),
    ],
    ids=["ko", "en"],
)
def test_a_sell_shows_profit_in_percent_and_krw_and_the_holding_time(
    language: NotifyLanguage, lines: list[str]
) -> None:
    # Given the stop-loss sell that used to read "exit: stop_loss (price 56904000.0, level 56982900.00000000)"
    text = render_event(_events()[EventKind.TRADE_EXECUTED], language)
    # Then it reads, line for line, as a person would write it
    assert text.split("\n") == lines


def test_a_buy_names_who_decided_and_shows_no_profit_line() -> None:
    event = NotificationEvent(
        EventKind.TRADE_EXECUTED,
        "BUY KRW-XRP",
        {
            "symbol": "KRW-XRP",
            "side": "buy",
            "price": Decimal("3123.4567"),
            "volume": Decimal("32.01"),
            "total": Decimal("99990"),
            "fee": Decimal("49.995"),
            "pnl": None,
            "mode": "paper",
            "reason": "rules: close broke above the range",
            "identifier": "buy-1",
        },
        at=AT,
    )
    text = render_event(event, KO)
    assert "🟢 <b>매수 체결 · KRW-XRP [모의투자]</b>" in text
    assert "<b>가격</b>: 3,123원" in text  # the 1-won tick from 2025-07-31
    assert "<b>판단</b>: 전략 규칙" in text
    assert "<b>사유</b>: close broke above the range" in text
    assert "손익" not in text


def test_the_daily_report_in_both_languages() -> None:
    event = _events()[EventKind.DAILY_REPORT]
    ko, en = render_event(event, KO), render_event(event, EN)
    assert "📊 <b>일일 리포트 (2026-03-02) [모의투자]</b>" in ko
    assert "<b>평가금액</b>: 10,234,568원" in ko
    assert "<b>24시간 변동</b>: -1.25%" in ko
    assert "<b>누적 수익률</b>: +2.35%" in ko
    assert "<b>최고점 대비</b>: -3.10%" in ko
    assert "<b>거래</b>: 3건 (매수 2, 매도 1)" in ko
    assert "<b>판단</b>: AI 3, 전략 규칙 1" in ko
    assert "<b>Realised P&amp;L</b>: +12,346 KRW" in en
    assert "<b>Trades</b>: 3 (buys 2, sells 1)" in en
    assert "<b>Decisions</b>: AI 3, strategy rules 1" in en


def test_ai_budget_and_safe_mode_in_words() -> None:
    events = _events()
    assert "<b>내용</b>: 예약 작업 실패: 거래 사이클" in render_event(events[EventKind.ERROR], KO)
    assert "<b>What</b>: Scheduled job failed: trading cycle" in render_event(events[EventKind.ERROR], EN)
    assert "<b>신뢰도</b>: 72%" in render_event(events[EventKind.AI_DECISION], KO)
    assert "<b>오늘</b>: $1.00 / $1.00" in render_event(events[EventKind.AI_BUDGET_REACHED], KO)
    assert "<b>This month</b>: $12.50 of $30.00" in render_event(events[EventKind.AI_BUDGET_REACHED], EN)
    safe = render_event(events[EventKind.SAFE_MODE_ENTERED], KO)
    assert "<b>종료 예정</b>: 2026-03-03 00:30 KST" in safe
    assert "<b>평가금액</b>: 9,480,000원" in safe
    assert "⚙️ <b>봇 상태: 일시정지</b>" in render_event(events[EventKind.BOT_STATE_CHANGED], KO)


@pytest.mark.parametrize(
    ("value", "at", "ko", "en"),
    [
        (Decimal("56904321.5"), AT, "56,904,000원", "56,904,000 KRW"),  # tick 1,000
        (Decimal("56904321.5"), datetime(2025, 1, 1, tzinfo=UTC), "56,904,000원", "56,904,000 KRW"),
        (Decimal("1234.5678"), datetime(2025, 1, 1, tzinfo=UTC), "1,235원", "1,235 KRW"),  # tick 1
        (Decimal("512.3456"), datetime(2025, 1, 1, tzinfo=UTC), "512.3원", "512.3 KRW"),  # tick 0.1
        (Decimal("0.56789"), AT, "0.568원", "0.568 KRW"),  # tick 0.001
    ],
)
def test_prices_sit_on_their_tick(value: Decimal, at: datetime, ko: str, en: str) -> None:
    assert (price(value, KO, at), price(value, EN, at)) == (ko, en)


def test_numbers_for_people() -> None:
    assert krw(Decimal("1234567.5"), KO) == "1,234,568원"
    assert krw(Decimal("-1234.4"), EN, signed=True) == "-1,234 KRW"
    assert krw(Decimal("12345"), KO, signed=True) == "+12,345원"
    assert krw(None, KO) == "-"
    assert coin_amount(Decimal("1234.50000000"), "KRW-XRP") == "1,234.5 XRP"
    assert percent(Decimal("0.0123"), signed=True, fraction=True) == "+1.23%"
    assert percent(Decimal("-4.5")) == "-4.50%"
    assert duration(30, KO) == "1분 미만"
    assert duration(3 * 3600 + 5 * 60, KO) == "3시간 5분"
    assert duration(3 * 3600 + 5 * 60, EN) == "3 h 5 min"
    assert duration(2 * 86400 + 3 * 3600 + 59 * 60, EN) == "2 d 3 h"


def test_notify_language_defaults_to_korean_and_refuses_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    from src.config.settings import load_settings

    monkeypatch.delenv("NOTIFY_LANGUAGE", raising=False)
    assert TelegramConfig(_env_file=None).language is KO
    monkeypatch.setenv("NOTIFY_LANGUAGE", " EN ")
    assert load_settings(env_file=None).telegram.language is EN
    monkeypatch.setenv("NOTIFY_LANGUAGE", "kr")
    with pytest.raises(ConfigurationError) as error:
        load_settings(env_file=None)
    assert (
        error.value.message
        == "Invalid configuration: NOTIFY_LANGUAGE='kr': expected ko (Korean) or en (English), got 'kr'"
    )


def _fields(**extra: Any) -> dict[str, Any]:
    return {"symbol": "KRW-BTC", "side": "sell", "price": Decimal("100000000"), **extra}


def test_holding_time_from_held_seconds_or_entry_at() -> None:
    for fields in (_fields(held_seconds=5400), _fields(entry_at=(AT - timedelta(minutes=90)).isoformat())):
        text = render_event(NotificationEvent(EventKind.TRADE_EXECUTED, "SELL", fields, at=AT), EN)
        assert "<b>Held for</b>: 1 h 30 min" in text


def test_an_error_names_no_order_identifier() -> None:
    # Given the reconciliation's error event, whose title carries the order's identifier
    fields = {"identifier": "buy-5a6b7c", "symbol": "KRW-BTC", "side": "buy", "error": "ExchangeError: 502"}
    event = NotificationEvent(EventKind.ERROR, "Reconciling order buy-5a6b7c failed", fields, at=AT)
    # When rendered, Then the identifier is gone and the symbol names the order
    text = render_event(event, KO)
    assert "buy-5a6b7c" not in text
    assert "<b>내용</b>: Reconciling order failed" in text
    assert "<b>종목</b>: KRW-BTC" in text


def test_a_misspelt_notify_language_is_warned_about() -> None:
    from src.config.unknown_keys import unknown_key_warnings

    warnings = unknown_key_warnings(env_file=None, environ={"NOTIFY_LANG": "en", "NOTIFY_LANGUAGE": "en"})
    assert warnings == ["NOTIFY_LANG in the environment is not a setting and is ignored; did you mean NOTIFY_LANGUAGE?"]
