from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import Money
from backend.app.models._columns import enum_column_type
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus


class TradeRow(Base):
    """An execution: written from an order's fills. ``realized_pnl`` is set on sells."""

    __tablename__ = "trades"
    __table_args__ = (
        Index("idx_trades_symbol", "symbol"),
        Index("idx_trades_created_at", "created_at", "id"),  # keyset paging (migration 0004)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    trade_id: Mapped[str] = mapped_column(String(100), unique=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    symbol: Mapped[str] = mapped_column(String(20))
    side: Mapped[Side] = mapped_column(enum_column_type(Side, "trade_side"))
    price: Mapped[Decimal] = mapped_column(Money())
    amount: Mapped[Decimal] = mapped_column(Money())
    total: Mapped[Decimal] = mapped_column(Money())
    fee: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    status: Mapped[TradeStatus] = mapped_column(enum_column_type(TradeStatus, "trade_status"))
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "trade_mode"))
    # a sell's: its order's exit reason (migration 0006)
    exit_reason: Mapped[ExitReason | None] = mapped_column(enum_column_type(ExitReason, "trade_exit_reason"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
