from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base
from backend.app.db.types import Money, UTCDateTime
from backend.app.models._columns import enum_column_type
from src.domain.modes import TradingMode


class PositionFillRow(Base):
    """An order's fills were applied to the positions: written in the position change's transaction,
    at most once per order (``order_identifier`` is unique), so a fill is never applied twice or lost."""

    __tablename__ = "position_fills"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_identifier: Mapped[str] = mapped_column(String(100), unique=True)
    position_id: Mapped[int | None] = mapped_column(ForeignKey("positions.id", ondelete="RESTRICT"))
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "position_fill_mode"))
    realized_pnl: Mapped[Decimal | None] = mapped_column(Money())
    applied_at: Mapped[datetime] = mapped_column(UTCDateTime())
