"""The daily report's figures, from the database (the scheduler's 09:00 KST job sends them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.db.queries import portfolio, reports
from src.domain.events import EventKind, NotificationEvent
from src.domain.modes import TradingMode
from src.domain.money import ZERO


@dataclass(slots=True)
class DailyReport:
    mode: TradingMode
    since: datetime
    until: datetime
    equity_krw: Decimal | None
    equity_change_pct: Decimal | None
    profit_rate: Decimal | None
    trades: int
    buys: int
    sells: int
    volume_krw: Decimal
    fees_krw: Decimal
    realized_pnl_krw: Decimal
    open_positions: list[str]
    decisions: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    peak_equity_krw: Decimal | None = None
    drawdown_pct: Decimal | None = None  # below the highest equity the risk manager has seen

    def to_event(self) -> NotificationEvent:
        fields: dict[str, Any] = {
            "mode": self.mode.value,
            "equity": self.equity_krw,
            "change_24h_pct": self.equity_change_pct,
            "profit_rate": self.profit_rate,
            "trades": self.trades,
            "buys": self.buys,
            "sells": self.sells,
            "volume": self.volume_krw,
            "fee": self.fees_krw,
            "pnl": self.realized_pnl_krw,
            "drawdown_pct": self.drawdown_pct,
            "open_positions": ", ".join(self.open_positions) or "none",
            "decisions": ", ".join(f"{k} {v}" for k, v in sorted(self.decisions.items())) or "none",
            "errors": self.errors,
        }
        return NotificationEvent(EventKind.DAILY_REPORT, f"Daily report ({self.until:%Y-%m-%d})", fields, at=self.until)


async def build_daily_report(
    sessions: async_sessionmaker[AsyncSession], mode: TradingMode, now: datetime, *, hours: int = 24
) -> DailyReport:
    since = now - timedelta(hours=hours)
    async with sessions() as session:
        trades = await reports.trade_sums(session, mode, since, now)
        latest = await portfolio.snapshot_at(session, mode, now)
        earlier = await portfolio.snapshot_at(session, mode, since)
        decisions = await reports.decisions_by_source(session, since, now)
        errors = await reports.error_log_count(session, since, now)
        peak = await reports.peak_equity(session, mode)
        open_positions = await reports.open_position_symbols(session, mode)
    equity = latest.total_value_krw if latest else None
    change = None
    if latest and earlier and earlier.total_value_krw > 0:
        change = ((latest.total_value_krw / earlier.total_value_krw - 1) * 100).quantize(Decimal("0.01"))
    return DailyReport(
        mode=mode,
        since=since,
        until=now,
        equity_krw=equity,
        equity_change_pct=change,
        profit_rate=latest.profit_rate if latest else None,
        trades=trades.trades,
        buys=trades.buys,
        sells=trades.sells,
        volume_krw=trades.volume_krw,
        fees_krw=trades.fees_krw,
        realized_pnl_krw=trades.realized_pnl_krw,
        open_positions=open_positions,
        decisions=decisions,
        errors=errors,
        peak_equity_krw=peak,
        drawdown_pct=_drawdown_pct(equity, peak),
    )


def _drawdown_pct(equity: Decimal | None, peak: Decimal | None) -> Decimal | None:
    if equity is None or peak is None or peak <= 0:
        return None
    return max(ZERO, (peak - equity) / peak * 100).quantize(Decimal("0.01"))
