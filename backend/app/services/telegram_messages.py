"""The Telegram message catalogue: every text the bot sends, in Korean and English (``NOTIFY_LANGUAGE``).

Events (``src.domain.events``) are rendered per kind by ``CATALOGUE``; command replies and buttons use
``PHRASES``. Numbers are for people: KRW with thousands separators (``1,234,567원`` / ``1,234,567 KRW``),
prices at their Upbit tick, coin amounts without trailing zeros, signed percentages, durations in days,
hours and minutes, times in KST. Nothing internal is shown: no order identifiers, no raw reason strings
such as ``exit: stop_loss (price 56904000.0, level 56982900.00000000)``. Every value is HTML-escaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, NamedTuple

from src.config.system_groups import NotifyLanguage
from src.domain.events import EventKind, NotificationEvent
from src.domain.exits import ExitReason
from src.domain.market_rules import krw_tick_size
from src.utils.logger import redactor

KST = timedelta(hours=9)
MAX_FREE_TEXT = 500
MAX_AI_REASON = 1500  # the adviser's reasoning: a screen, not pages


class Phrase(NamedTuple):
    """One text in both languages; ``{name}`` placeholders are filled by ``text``."""

    ko: str
    en: str

    def text(self, language: NotifyLanguage, **values: Any) -> str:
        template = self.ko if language is NotifyLanguage.KO else self.en
        return template.format(**values) if values else template


# --- numbers for people ------------------------------------------------------------------------------------
def as_decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def krw(value: Any, language: NotifyLanguage, *, signed: bool = False) -> str:
    """``1,234,567원`` / ``1,234,567 KRW`` (whole won); ``+``/``-`` in front when ``signed``."""
    amount = as_decimal(value)
    if amount is None:
        return "-"
    whole = amount.quantize(Decimal("1"), rounding=ROUND_HALF_UP)
    text = f"{whole:+,.0f}" if signed and whole != 0 else f"{whole:,.0f}"
    return f"{text}원" if language is NotifyLanguage.KO else f"{text} KRW"


def price(value: Any, language: NotifyLanguage, at: datetime | None = None) -> str:
    """A KRW price at its Upbit tick (the table in force at ``at``): ``56,904,000원``, ``1,234.5 KRW``."""
    amount = as_decimal(value)
    if amount is None:
        return "-"
    tick = krw_tick_size(abs(amount), at)
    on_grid = (amount / tick).to_integral_value(rounding=ROUND_HALF_UP) * tick
    places = max(0, -int(tick.normalize().as_tuple().exponent))
    text = f"{on_grid:,.{places}f}"
    return f"{text}원" if language is NotifyLanguage.KO else f"{text} KRW"


def coin_amount(value: Any, symbol: str | None = None) -> str:
    """``0.00105 BTC``: at most 8 decimals, no trailing zeros, the base coin of ``KRW-BTC``."""
    amount = as_decimal(value)
    if amount is None:
        return "-"
    text = f"{amount.quantize(Decimal('0.00000001')).normalize():,f}"
    unit = symbol.split("-", 1)[1] if symbol and "-" in symbol else ""
    return f"{text} {unit}".rstrip()


def percent(value: Any, *, signed: bool = False, fraction: bool = False) -> str:
    """``+1.23%``; ``fraction`` when the value is a ratio (0.0123)."""
    number = as_decimal(value)
    if number is None:
        return "-"
    if fraction:
        number *= 100
    return f"{number:+.2f}%" if signed and number != 0 else f"{number:.2f}%"


def usd(value: Any) -> str:
    number = as_decimal(value)
    return "-" if number is None else f"${number:,.2f}"


def duration(seconds: float | None, language: NotifyLanguage) -> str:
    """``2일 3시간``, ``3시간 5분``, ``12분`` / ``2 d 3 h``, ``3 h 5 min``, ``12 min``."""
    if seconds is None:
        return "-"
    minutes = max(0, int(seconds // 60))
    days, hours, mins = minutes // 1440, minutes % 1440 // 60, minutes % 60
    ko = language is NotifyLanguage.KO
    if minutes == 0:
        return "1분 미만" if ko else "under 1 min"
    units = (
        (days, "일" if ko else " d"),
        (hours, "시간" if ko else " h"),
        (0 if days else mins, "분" if ko else " min"),
    )
    return " ".join(f"{count}{unit}" for count, unit in units if count)


def kst(moment: datetime | str | None) -> str:
    """``2026-01-02 09:30 KST``."""
    if isinstance(moment, str):
        text = moment
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment.astimezone(UTC) + KST).strftime("%Y-%m-%d %H:%M KST")


def free_text(value: Any, limit: int = MAX_FREE_TEXT) -> str:
    """Text written by someone else (an AI reason, an error): secrets scrubbed, cut at ``limit``."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(item) for item in value)
    text = redactor.scrub_text(str(value)).strip() or "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- phrases ----------------------------------------------------------------------------------------------
P = Phrase
PHRASES: dict[str, Phrase] = {
    # field labels
    "price": P("가격", "Price"),
    "amount": P("수량", "Amount"),
    "value": P("금액", "Value"),
    "fee": P("수수료", "Fee"),
    "profit": P("손익", "Profit"),
    "entry_price": P("매수 평균가", "Entry price"),
    "held": P("보유 기간", "Held for"),
    "reason": P("사유", "Reason"),
    "decided_by": P("판단", "Decided by"),
    "confidence": P("신뢰도", "Confidence"),
    "proposed": P("제안", "Proposed"),
    "done": P("실행", "Done"),
    "symbol": P("종목", "Symbol"),
    "job": P("작업", "Job"),
    "stage": P("단계", "Stage"),
    "error": P("오류", "Error"),
    "until": P("종료 예정", "Until"),
    "until_reset": P("수동 해제 시까지", "until reset by hand"),
    "equity": P("평가금액", "Equity"),
    "peak_equity": P("최고 평가금액", "Peak equity"),
    "previous_state": P("이전 상태", "Previous state"),
    "instance": P("인스턴스", "Instance"),
    "today": P("오늘", "Today"),
    "this_month": P("이번 달", "This month"),
    "change_24h": P("24시간 변동", "Change 24 h"),
    "profit_rate": P("누적 수익률", "Total return"),
    "drawdown": P("최고점 대비", "Drawdown"),
    "realised_pnl": P("실현 손익", "Realised P&L"),
    "trades": P("거래", "Trades"),
    "trade_counts": P("{trades}건 (매수 {buys}, 매도 {sells})", "{trades} (buys {buys}, sells {sells})"),
    "volume": P("거래대금", "Traded value"),
    "open_positions": P("보유 종목", "Open positions"),
    "decisions": P("판단", "Decisions"),
    "errors": P("오류", "Errors"),
    "none": P("없음", "none"),
    "used_of": P("{spent} / {limit}", "{spent} of {limit}"),
    # modes, sides, states, decisions, sources, exit reasons
    "mode.paper": P("모의투자", "paper"),
    "mode.live": P("실거래", "live"),
    "mode.replay": P("리플레이", "replay"),
    "decision.buy": P("매수", "buy"),
    "decision.sell": P("매도", "sell"),
    "decision.hold": P("보류", "hold"),
    "state.running": P("실행 중", "running"),
    "state.paused": P("일시정지", "paused"),
    "state.stopped": P("정지", "stopped"),
    "state.starting": P("시작 중", "starting"),
    "source.ai": P("AI", "AI"),
    "source.cache": P("AI (이전 답변)", "AI (earlier answer)"),
    "source.fallback": P("AI 실패로 보류", "AI failed: hold"),
    "source.disabled": P("AI 꺼짐", "AI off"),
    "source.rules": P("전략 규칙", "strategy rules"),
    "source.filter": P("사전 필터", "quick filter"),
    "exit.stop_loss": P("손절", "stop loss"),
    "exit.take_profit": P("익절", "take profit"),
    "exit.trailing_stop": P("트레일링 스톱", "trailing stop"),
    "exit.time_out": P("최대 보유 시간 도달", "maximum holding time reached"),
    "exit.signal": P("전략 매도 신호", "strategy sell signal"),
    "exit.sell": P("매도", "sale"),
    "exit.end": P("기간 종료", "end of data"),
    "exit.market_warning": P("업비트 유의/경고 종목 지정", "flagged by Upbit (warning or caution)"),
    "exit_level": P("{reason} (기준가 {level})", "{reason} (trigger {level})"),
    # event titles
    "title.bought": P("매수 체결 · {symbol}", "Bought {symbol}"),
    "title.sold": P("매도 체결 · {symbol}", "Sold {symbol}"),
    "title.decision": P("{decision} 판단 · {symbol}", "Decision: {decision} {symbol}"),
    "title.override": P("매수 보류 · {symbol}", "Buy of {symbol} held back"),
    "title.error": P("오류 발생", "Error"),
    "title.safe_mode": P("안전 모드: 신규 매수 중단", "Safe mode: no new buys"),
    "title.safe_mode_extended": P("안전 모드 연장: 신규 매수 중단", "Safe mode extended: no new buys"),
    "title.safe_mode_left": P("안전 모드 해제: 매수 재개", "Safe mode ended: buys allowed again"),
    "title.bot_state": P("봇 상태: {state}", "Bot {state}"),
    "title.lock_retaken": P("스케줄러 잠금 재획득: 거래 계속", "Scheduler lock re-taken: trading continues"),
    "title.daily_report": P("일일 리포트 ({date})", "Daily report ({date})"),
    "title.ai_budget_reached": P("AI 예산 소진: 전략 규칙으로 판단", "AI budget reached: rules decide"),
    "title.ai_budget_restored": P("AI 판단 재개 (예산 여유)", "AI adviser back on (budget)"),
    "title.announcement": P("업비트 공지", "Upbit announcement"),
    "title.market_warning": P("보유 종목 경고 · {symbol}", "Held coin flagged · {symbol}"),
    "announcement.category": P("분류", "Category"),
    "announcement.markets": P("관련 종목", "Markets"),
    "announcement.link": P("링크", "Link"),
    "announcement.maintenance": P(
        "점검: 다음 주문 전에 주문 가능 여부를 먼저 확인합니다", "Maintenance: the next orders are tested first"
    ),
    "category.notice": P("공지", "notice"),
    "category.trade": P("거래", "trading"),
    "category.trading": P("거래", "trading"),
    "category.wallet": P("입출금", "deposits and withdrawals"),
    "category.maintenance": P("점검", "maintenance"),
    "category.digital_asset": P("디지털 자산", "digital assets"),
    "category.disclosure": P("공시", "disclosure"),
    "flag.market_warning": P("투자경고 종목", "investment warning"),
    "flag.market_caution": P("투자유의 종목", "caution"),
    "flag": P("지정", "Flag"),
    "action": P("조치", "Action"),
    "action.alert": P("알림만 (매도 안 함)", "alert only (nothing sold)"),
    "action.tighten_stop": P("손절가 상향", "stop raised"),
    "action.exit": P("전량 매도", "position sold"),
    "market.no_buys": P("신규 매수 중단", "No new buys"),
    "market.no_buys_yes": P("이 종목은 지정이 풀릴 때까지 매수하지 않습니다", "this coin is not bought while flagged"),
    "what": P("내용", "What"),
    "job.position_check": P("포지션 점검", "position check"),
    "job.trading_cycle": P("거래 사이클", "trading cycle"),
    "job.portfolio_snapshot": P("포트폴리오 스냅샷", "portfolio snapshot"),
    "job.daily_report": P("일일 리포트", "daily report"),
    "job.market_status": P("유의/경고 종목 점검", "market warning check"),
    "job_failed": P("예약 작업 실패: {job}", "Scheduled job failed: {job}"),
    "mode_tag": P("[{mode}]", "[{mode}]"),
    # the command menu (setMyCommands) and /help
    "menu.status": P("봇 상태, 하트비트, 안전 모드", "Bot state, heartbeat, safe mode"),
    "menu.balance": P("평가금액과 현금", "Equity and cash"),
    "menu.positions": P("보유 포지션, 현재가, 평가손익", "Open positions, current price, unrealised P&L"),
    "menu.trades": P("최근 거래 10건", "The last 10 trades"),
    "menu.profit": P("실현 손익과 수수료", "Realised P&L and fees"),
    "menu.report": P("지금 일일 리포트 보기", "The daily report now"),
    "menu.pause": P("신규 매수 일시정지 (확인 후)", "Pause new buys (after a confirmation)"),
    "menu.resume": P("거래 재개 (확인 후)", "Resume trading (after a confirmation)"),
    "menu.stop": P("봇 정지 (확인 후)", "Stop the bot (after a confirmation)"),
    "menu.start": P("봇 시작 (확인 후)", "Start the bot (after a confirmation)"),
    "menu.reset_safe_mode": P("안전 모드 해제 (확인 후)", "End safe mode (after a confirmation)"),
    "menu.help": P("명령어 목록", "The commands"),
    "help.title": P("명령어", "Commands"),
    "help.reason": P(
        "제어 명령 뒤의 글은 사유로 기록됩니다. 예: /pause 변동성 큼",
        "Text after a control command is recorded as the reason, e.g. /pause volatile market",
    ),
    # confirmations
    "confirm.pause": P(
        "신규 매수를 일시정지할까요? (청산과 스냅샷은 계속됩니다)", "Pause new buys? (exits and snapshots keep running)"
    ),
    "confirm.resume": P("거래를 재개할까요?", "Resume trading?"),
    "confirm.stop": P("봇을 정지할까요? (거래 작업이 모두 멈춥니다)", "Stop the bot? (no trading jobs at all)"),
    "confirm.start": P("봇을 시작할까요?", "Start the bot?"),
    "confirm.reset_safe_mode": P(
        "안전 모드를 지금 해제할까요? (신규 매수가 다시 허용됩니다)", "End safe mode now? (new buys are allowed again)"
    ),
    "button.confirm": P("✅ 확인", "✅ Confirm"),
    "button.cancel": P("✖ 취소", "✖ Cancel"),
    "toast.confirmed": P("확인했습니다", "Confirmed"),
    "toast.cancelled": P("취소했습니다", "Cancelled"),
    "toast.expired": P("만료된 확인입니다", "This confirmation has expired"),
    "done.state": P("요청했습니다: 봇 {state}", "Requested: bot {state}"),
    "done.reset_safe_mode": P("안전 모드 해제를 요청했습니다", "Safe mode reset requested"),
    "done.applied": P(
        "스케줄러가 다음 작업 전에 적용합니다 (SCHEDULER_CONTROL_POLL_SECONDS 이내).",
        "The scheduler applies it before its next job (within SCHEDULER_CONTROL_POLL_SECONDS).",
    ),
    "done.by": P("요청자", "Requested by"),
    "cancelled": P("취소했습니다. 바뀐 것은 없습니다.", "Cancelled. Nothing changed."),
    "expired": P(
        "만료된 확인입니다. 명령을 다시 보내 주세요.", "This confirmation has expired; send the command again."
    ),
    "failed": P("{command} 실패: {error}", "{command} failed: {error}"),
    # read commands
    "status.title": P("봇 상태", "Bot status"),
    "status.desired": P("요청 상태", "Desired state"),
    "status.mode": P("모드", "Mode"),
    "status.scheduler": P("스케줄러", "Scheduler"),
    "status.never_seen": P("아직 실행된 적 없음", "never seen"),
    "status.heartbeat": P("하트비트", "Heartbeat"),
    "status.ago": P("{age} 전", "{age} ago"),
    "status.stale": P("{age} 전 (응답 없음)", "{age} ago (stale)"),
    "status.last_run": P("마지막 실행", "Last run"),
    "status.next_run": P("다음 실행", "Next run"),
    "status.last_error": P("마지막 오류", "Last error"),
    "status.safe_mode": P("안전 모드", "Safe mode"),
    "status.safe_mode_on": P("켜짐: {reason}", "ON: {reason}"),
    "status.safe_mode_off": P("꺼짐", "off"),
    "balance.title": P("잔고", "Balance"),
    "balance.none": P("아직 포트폴리오 스냅샷이 없습니다.", "No portfolio snapshot yet."),
    "balance.cash": P("현금", "Cash"),
    "as_of": P("기준 시각", "As of"),
    "positions.title": P("보유 포지션 ({count})", "Open positions ({count})"),
    "positions.none": P("보유 포지션이 없습니다.", "No open positions."),
    "positions.current": P("현재가", "Current price"),
    "positions.current_at": P("{price} ({at} 스냅샷)", "{price} (snapshot {at})"),
    "positions.unknown": P("알 수 없음", "unknown"),
    "positions.unrealised": P("평가손익", "Unrealised P&L"),
    "positions.stop": P("손절가", "Stop"),
    "positions.target": P("익절가", "Target"),
    "trades.title": P("최근 거래 {count}건", "Last {count} trades"),
    "trades.none": P("아직 거래가 없습니다.", "No trades yet."),
    "trades.buy": P("매수", "BUY"),
    "trades.sell": P("매도", "SELL"),
    "trades.line": P("{at} {side} {symbol} {amount} @ {price}", "{at} {side} {symbol} {amount} @ {price}"),
    "trades.fee_pnl": P("수수료 {fee}, 손익 {pnl}", "fee {fee}, P&L {pnl}"),
    "trades.fee": P("수수료 {fee}", "fee {fee}"),
    "profit.title": P("손익", "Profit"),
    "profit.24h": P("24시간", "24 h"),
    "profit.7d": P("7일", "7 days"),
    "profit.all": P("전체", "All time"),
    "profit.line": P(
        "손익 {pnl}, 수수료 {fee}, 거래 {count}건, 승률 {win}", "P&L {pnl}, fees {fee}, {count} trades, win rate {win}"
    ),
}


def phrase(key: str, language: NotifyLanguage, **values: Any) -> str:
    return PHRASES[key].text(language, **values)


def _named(prefix: str, value: Any, language: NotifyLanguage) -> str:
    """A known enum value in words (``state.paused`` -> ``일시정지``); anything else as it is."""
    key = f"{prefix}.{value}"
    return phrase(key, language) if key in PHRASES else str(value)


# --- messages -------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Message:
    """A title and ``label: value`` lines; ``html()`` escapes every part."""

    icon: str
    title: str
    lines: list[tuple[str, str]] = field(default_factory=list)
    at: datetime | None = None

    def add(self, label: str, value: str | None) -> None:
        if value not in (None, "", "-"):
            self.lines.append((label, value))

    def html(self) -> str:
        out = [f"{self.icon} <b>{html.escape(self.title)}</b>"]
        out += [f"<b>{html.escape(label)}</b>: {html.escape(value)}" for label, value in self.lines]
        if self.at is not None:
            out.append(f"<i>{html.escape(kst(self.at))}</i>")
        return "\n".join(out)


Renderer = Callable[[NotificationEvent, NotifyLanguage], Message]
_EXIT_PATTERN = re.compile(r"^exit:\s*(?P<reason>\w+)(?:.*?\blevel\s+(?P<level>-?[\d.]+))?", re.DOTALL)


def _mode_tag(fields: dict[str, Any], language: NotifyLanguage) -> str:
    mode = fields.get("mode")
    if mode in (None, "live"):
        return ""
    return " " + phrase("mode_tag", language, mode=_named("mode", mode, language))


def trade_reason(reason: Any, language: NotifyLanguage, at: datetime | None = None) -> tuple[str | None, str | None]:
    """(why, decided by) from an order's stored reason: ``exit: stop_loss (..., level 56982900)`` ->
    ``손절 (기준가 56,983,000원)``; ``ai: RSI oversold`` -> (``RSI oversold``, ``AI``)."""
    if not reason:
        return None, None
    text = str(reason)
    exit_match = _EXIT_PATTERN.match(text)
    if exit_match is not None:
        try:
            exit_reason = ExitReason(exit_match.group("reason"))
        except ValueError:
            exit_reason = ExitReason.SELL
        why = _named("exit", exit_reason.value, language)
        if exit_match.group("level") and exit_reason is not ExitReason.SIGNAL:
            why = phrase("exit_level", language, reason=why, level=price(exit_match.group("level"), language, at))
        return why, None
    source, sep, rest = text.partition(":")
    if sep and f"source.{source.strip()}" in PHRASES:
        return free_text(rest), _named("source", source.strip(), language)
    return free_text(text), None


def profit_pct(fields: dict[str, Any]) -> Decimal | None:
    """A sell's return on what the position cost: the event's ``pnl_pct`` when given, else
    ``pnl / (total - fee - pnl)`` (realised P&L is net of both fees, so that is the cost with the buy fee)."""
    given = as_decimal(fields.get("pnl_pct"))
    if given is not None:
        return given
    pnl, total, fee = (as_decimal(fields.get(name)) for name in ("pnl", "total", "fee"))
    if pnl is None or total is None:
        return None
    cost = total - (fee or Decimal(0)) - pnl
    return None if cost <= 0 else pnl / cost * 100


def held_seconds(fields: dict[str, Any], at: datetime) -> float | None:
    """How long the sold position was held: ``held_seconds``, or the time since ``entry_at``."""
    seconds = as_decimal(fields.get("held_seconds"))
    if seconds is not None:
        return float(seconds)
    entry_at = fields.get("entry_at")
    if isinstance(entry_at, str):
        try:
            entry_at = datetime.fromisoformat(entry_at)
        except ValueError:
            return None
    if isinstance(entry_at, datetime):
        entry = entry_at if entry_at.tzinfo else entry_at.replace(tzinfo=UTC)
        return (at - entry).total_seconds()
    return None


def _trade(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    symbol = str(f.get("symbol") or "")
    sell = str(f.get("side", "")).lower() in ("sell", "ask")
    title = phrase("title.sold" if sell else "title.bought", lang, symbol=symbol) + _mode_tag(f, lang)
    message = Message("🔴" if sell else "🟢", title, at=event.at)
    message.add(phrase("price", lang), price(f.get("price"), lang, event.at))
    message.add(phrase("amount", lang), coin_amount(f.get("volume"), symbol))
    message.add(phrase("value", lang), krw(f.get("total"), lang))
    message.add(phrase("fee", lang), krw(f.get("fee"), lang))
    if sell:
        if f.get("entry_price") is not None:
            message.add(phrase("entry_price", lang), price(f.get("entry_price"), lang, event.at))
        pnl = as_decimal(f.get("pnl"))
        if pnl is not None:
            pct = profit_pct(f)
            pct_text = "" if pct is None else f" ({percent(pct, signed=True)})"
            message.add(phrase("profit", lang), krw(pnl, lang, signed=True) + pct_text)
        message.add(phrase("held", lang), duration(held_seconds(f, event.at), lang))
    why, decided_by = trade_reason(f.get("reason"), lang, event.at)
    message.add(phrase("decided_by", lang), decided_by)
    message.add(phrase("reason", lang), why)
    return message


def _decision(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    decided = f.get("final_decision") or f.get("decision")
    decision = _named("decision", decided, lang) if decided else "-"
    message = Message("🤖", phrase("title.decision", lang, decision=decision, symbol=f.get("symbol", "")), at=event.at)
    confidence = as_decimal(f.get("confidence"))
    if confidence is not None:
        message.add(phrase("confidence", lang), f"{(confidence * 100 if confidence <= 1 else confidence):.0f}%")
    message.add(phrase("decided_by", lang), _named("source", f.get("source"), lang) if f.get("source") else None)
    message.add(phrase("reason", lang), free_text(f.get("reason"), MAX_AI_REASON) if f.get("reason") else None)
    return message


def _override(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    message = Message("🛡", phrase("title.override", lang, symbol=f.get("symbol", "")), at=event.at)
    message.add(phrase("proposed", lang), _named("decision", f.get("decision"), lang) if f.get("decision") else None)
    final = f.get("final_decision")
    message.add(phrase("done", lang), _named("decision", final, lang) if final else None)
    message.add(phrase("reason", lang), free_text(f.get("reasons")) if f.get("reasons") else None)
    message.add(phrase("decided_by", lang), _named("source", f.get("source"), lang) if f.get("source") else None)
    return message


def _error(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    message = Message("🚨", phrase("title.error", lang) + _mode_tag(f, lang), at=event.at)
    what = event.title
    if f.get("job") and what == f"Job {f['job']} failed":  # the scheduler's job failure, in words
        what = phrase("job_failed", lang, job=_named("job", f["job"], lang))
    if f.get("identifier"):  # "Reconciling order <identifier> failed": the order is named by its symbol instead
        what = " ".join(what.replace(str(f["identifier"]), "").split())
    message.add(phrase("what", lang), free_text(what, 300))
    message.add(phrase("symbol", lang), str(f["symbol"]) if f.get("symbol") else None)
    message.add(phrase("job", lang), _named("job", f["job"], lang) if f.get("job") else None)
    message.add(phrase("stage", lang), str(f["stage"]) if f.get("stage") else None)
    message.add(phrase("error", lang), free_text(f.get("error")) if f.get("error") else None)
    return message


def _safe_mode_entered(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    title = phrase("title.safe_mode_extended" if f.get("extended") else "title.safe_mode", lang) + _mode_tag(f, lang)
    message = Message("⛔", title, at=event.at)
    message.add(phrase("reason", lang), free_text(f.get("reason")) if f.get("reason") else None)
    until = f.get("until")
    message.add(phrase("until", lang), kst(until) if until else phrase("until_reset", lang))
    message.add(phrase("equity", lang), krw(f.get("equity"), lang))
    message.add(phrase("peak_equity", lang), krw(f.get("peak_equity"), lang))
    return message


def _safe_mode_left(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    message = Message("✅", phrase("title.safe_mode_left", lang) + _mode_tag(f, lang), at=event.at)
    why = f.get("why") or f.get("reason")
    message.add(phrase("reason", lang), free_text(why) if why else None)
    return message


def _bot_state(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    state = _named("state", f.get("state", "-"), lang)
    title = phrase("title.lock_retaken", lang) if f.get("lock") else phrase("title.bot_state", lang, state=state)
    message = Message("⚙️", title, at=event.at)
    previous = f.get("previous")
    message.add(phrase("previous_state", lang), _named("state", previous, lang) if previous else None)
    message.add(phrase("instance", lang), str(f["instance"]) if f.get("instance") not in (None, "default") else None)
    return message


def _daily_report(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    date = (event.at.astimezone(UTC) + KST).strftime("%Y-%m-%d")
    message = Message("📊", phrase("title.daily_report", lang, date=date) + _mode_tag(f, lang), at=event.at)
    message.add(phrase("equity", lang), krw(f.get("equity"), lang))
    message.add(phrase("change_24h", lang), percent(f.get("change_24h_pct"), signed=True))
    message.add(phrase("profit_rate", lang), percent(f.get("profit_rate"), signed=True, fraction=True))
    drawdown = as_decimal(f.get("drawdown_pct"))
    message.add(phrase("drawdown", lang), None if drawdown is None else percent(-abs(drawdown), signed=True))
    message.add(phrase("realised_pnl", lang), krw(f.get("pnl"), lang, signed=True))
    counts = {name: f.get(name, 0) for name in ("trades", "buys", "sells")}
    message.add(phrase("trades", lang), phrase("trade_counts", lang, **counts))
    message.add(phrase("volume", lang), krw(f.get("volume"), lang))
    message.add(phrase("fee", lang), krw(f.get("fee"), lang))
    message.add(phrase("open_positions", lang), _listing(f.get("open_positions"), lang))
    message.add(phrase("decisions", lang), _decision_counts(f.get("decisions"), lang))
    message.add(phrase("errors", lang), str(f.get("errors", 0)))
    return message


def _listing(value: Any, lang: NotifyLanguage) -> str:
    if value in (None, "", "none") or (isinstance(value, (list, tuple)) and not value):
        return phrase("none", lang)
    return free_text(", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value, 300)


def _decision_counts(value: Any, lang: NotifyLanguage) -> str:
    """``ai 3, rules 2`` (the report's decisions by source) in words."""
    if isinstance(value, dict):
        pairs: Iterable[tuple[str, Any]] = value.items()
    elif isinstance(value, str) and value not in ("", "none"):
        pairs = [tuple(part.strip().rsplit(" ", 1)) for part in value.split(",") if " " in part.strip()]  # type: ignore[misc]
    else:
        return phrase("none", lang)
    return ", ".join(f"{_named('source', name, lang)} {count}" for name, count in pairs) or phrase("none", lang)


def _ai_budget(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    reached = event.kind is EventKind.AI_BUDGET_REACHED
    title = phrase("title.ai_budget_reached" if reached else "title.ai_budget_restored", lang)
    message = Message("💸" if reached else "🤖", title, at=event.at)
    message.add(phrase("reason", lang), free_text(f.get("reason")) if f.get("reason") else None)
    for label, spent, limit in (
        ("today", "spent_day_usd", "daily_budget_usd"),
        ("this_month", "spent_month_usd", "monthly_budget_usd"),
    ):
        if f.get(spent) is not None:
            message.add(phrase(label, lang), phrase("used_of", lang, spent=usd(f.get(spent)), limit=usd(f.get(limit))))
    return message


def _announcement(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    message = Message("📢", phrase("title.announcement", lang), at=event.at)
    message.add(phrase("what", lang), free_text(f.get("title") or event.title, 300))
    category = f.get("category")
    message.add(phrase("announcement.category", lang), _named("category", category, lang) if category else None)
    markets = f.get("markets")
    message.add(phrase("announcement.markets", lang), _listing(markets, lang) if markets else None)
    if f.get("maintenance"):
        message.add(phrase("action", lang), phrase("announcement.maintenance", lang))
    message.add(phrase("announcement.link", lang), free_text(f.get("url"), 300) if f.get("url") else None)
    return message


def _market_warning(event: NotificationEvent, lang: NotifyLanguage) -> Message:
    f = event.fields
    message = Message(
        "⚠️", phrase("title.market_warning", lang, symbol=f.get("symbol", "")) + _mode_tag(f, lang), at=event.at
    )
    reason = f.get("reason")
    message.add(phrase("flag", lang), _named("flag", reason, lang) if reason else None)
    action = f.get("action")
    message.add(phrase("action", lang), _named("action", action, lang) if action else None)
    message.add(phrase("market.no_buys", lang), phrase("market.no_buys_yes", lang))
    message.add(phrase("error", lang), free_text(f.get("error")) if f.get("error") else None)
    return message


CATALOGUE: dict[EventKind, Renderer] = {
    EventKind.TRADE_EXECUTED: _trade,
    EventKind.AI_DECISION: _decision,
    EventKind.VALIDATOR_OVERRIDE: _override,
    EventKind.ERROR: _error,
    EventKind.SAFE_MODE_ENTERED: _safe_mode_entered,
    EventKind.SAFE_MODE_LEFT: _safe_mode_left,
    EventKind.BOT_STATE_CHANGED: _bot_state,
    EventKind.DAILY_REPORT: _daily_report,
    EventKind.AI_BUDGET_REACHED: _ai_budget,
    EventKind.AI_BUDGET_RESTORED: _ai_budget,
    EventKind.ANNOUNCEMENT: _announcement,
    EventKind.MARKET_WARNING: _market_warning,
}


def render_event(event: NotificationEvent, language: NotifyLanguage = NotifyLanguage.KO) -> str:
    """The event as Telegram HTML in ``language``."""
    return CATALOGUE[event.kind](event, language).html()
