"""The daily report's figures, from the database (the scheduler's 09:00 KST job sends them)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from backend.app.models import AIDecisionRow, PortfolioSnapshotRow, PositionRow, RiskStateRow, SystemLogRow, TradeRow
from src.domain.events import EventKind, NotificationEvent
from src.domain.modes import TradingMode
from src.domain.orders import Side

_ZERO = Decimal("0")


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
        trades = list(
            await session.scalars(
                select(TradeRow).where(TradeRow.mode == mode, TradeRow.created_at >= since, TradeRow.created_at <= now)
            )
        )
        latest = await _snapshot(session, mode, now)
        earlier = await _snapshot(session, mode, since)
        decisions = Counter(
            dict(
                (
                    await session.execute(
                        select(AIDecisionRow.source, func.count())
                        .where(
                            AIDecisionRow.created_at >= since,
                            AIDecisionRow.created_at <= now,
                            AIDecisionRow.purpose == "decision",
                        )
                        .group_by(AIDecisionRow.source)
                    )
                ).all()
            )
        )
        errors = await session.scalar(
            select(func.count()).where(
                SystemLogRow.level.in_(("error", "critical")),
                SystemLogRow.created_at >= since,
                SystemLogRow.created_at <= now,
            )
        )
        peak = await session.scalar(select(RiskStateRow.peak_equity).where(RiskStateRow.mode == mode))
        open_positions = list(
            await session.scalars(
                select(PositionRow.symbol).where(PositionRow.mode == mode, PositionRow.status == "open")
            )
        )
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
        trades=len(trades),
        buys=sum(1 for t in trades if t.side is Side.BUY),
        sells=sum(1 for t in trades if t.side is Side.SELL),
        volume_krw=sum((t.total for t in trades), _ZERO),
        fees_krw=sum((t.fee for t in trades), _ZERO),
        realized_pnl_krw=sum((t.realized_pnl for t in trades if t.realized_pnl is not None), _ZERO),
        open_positions=sorted(open_positions),
        decisions={str(k): int(v) for k, v in decisions.items()},
        errors=int(errors or 0),
        peak_equity_krw=peak,
        drawdown_pct=_drawdown_pct(equity, peak),
    )


def _drawdown_pct(equity: Decimal | None, peak: Decimal | None) -> Decimal | None:
    if equity is None or peak is None or peak <= 0:
        return None
    return max(_ZERO, (peak - equity) / peak * 100).quantize(Decimal("0.01"))


async def _snapshot(session: AsyncSession, mode: TradingMode, at: datetime) -> PortfolioSnapshotRow | None:
    return await session.scalar(
        select(PortfolioSnapshotRow)
        .where(PortfolioSnapshotRow.mode == mode, PortfolioSnapshotRow.created_at <= at)
        .order_by(PortfolioSnapshotRow.created_at.desc(), PortfolioSnapshotRow.id.desc())
        .limit(1)
    )
