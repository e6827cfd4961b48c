from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Index, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import ExactDecimal, JSONType, Money, UTCDateTime
from backend.app.models._columns import enum_column_type
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.risk.store import PositionStatus


class PortfolioSnapshotRow(Base):
    __tablename__ = "portfolio_snapshots"
    __table_args__ = (Index("ix_portfolio_snapshots_created_at", "created_at", "id"),)  # keyset paging (0004)

    id: Mapped[int] = mapped_column(primary_key=True)
    total_value_krw: Mapped[Decimal] = mapped_column(ExactDecimal(20, 2))
    total_value_usd: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 2))
    cash_krw: Mapped[Decimal | None] = mapped_column(Money())
    profit_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(20, 8))
    positions: Mapped[dict[str, Any]] = mapped_column(JSONType)
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "snapshot_mode"))
    created_at: Mapped[datetime] = created_at_column()


class PositionRow(Base):
    """A held position and its exit levels; at most one open position per mode and symbol."""

    __tablename__ = "positions"
    __table_args__ = (
        Index(
            "uq_positions_open_symbol",
            "mode",
            "symbol",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20), index=True)
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "position_mode"))
    status: Mapped[PositionStatus] = mapped_column(enum_column_type(PositionStatus, "position_status"))  # 0006
    amount: Mapped[Decimal] = mapped_column(Money())
    avg_entry_price: Mapped[Decimal] = mapped_column(Money())
    entry_at: Mapped[datetime] = mapped_column(UTCDateTime())
    highest_price: Mapped[Decimal] = mapped_column(Money())
    entry_fee: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    stop_price: Mapped[Decimal | None] = mapped_column(Money())
    take_profit_price: Mapped[Decimal | None] = mapped_column(Money())
    trailing_stop_pct: Mapped[Decimal | None] = mapped_column(ExactDecimal(10, 4))
    # the ATR(14) of the entry's decision bar, from which ATR stops and targets are set (0007); None: none came
    entry_atr: Mapped[Decimal | None] = mapped_column(Money())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_price: Mapped[Decimal | None] = mapped_column(Money())
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    exit_reason: Mapped[ExitReason | None] = mapped_column(enum_column_type(ExitReason, "position_exit_reason"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()


class RiskStateRow(Base):
    """Circuit breakers and safe mode, one row per trading mode; survives restarts."""

    __tablename__ = "risk_state"
    __table_args__ = (UniqueConstraint("mode"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "risk_mode"))
    safe_mode: Mapped[bool] = mapped_column(default=False, server_default=false())
    safe_mode_reason: Mapped[str | None] = mapped_column(Text)
    safe_mode_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    safe_mode_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    peak_equity: Mapped[Decimal | None] = mapped_column(Money())
    day_anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    day_anchor_equity: Mapped[Decimal | None] = mapped_column(Money())
    week_anchor_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    week_anchor_equity: Mapped[Decimal | None] = mapped_column(Money())
    updated_at: Mapped[datetime] = updated_at_column()
