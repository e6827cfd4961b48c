from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import Money
from backend.app.models._columns import enum_column_type
from src.domain.exits import ExitReason
from src.domain.modes import TradingMode
from src.domain.orders import OrderStatus, OrderType, Side


class OrderRow(Base):
    """Our record of an order. Written (``pending``) before the request is sent; see DESIGN.md."""

    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("amount IS NOT NULL OR requested_total IS NOT NULL", name="has_quantity"),
        Index("ix_orders_created_at", "created_at", "id"),  # keyset paging (migration 0004)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(String(100), unique=True)
    identifier: Mapped[str] = mapped_column(String(100), unique=True)
    exchange_uuid: Mapped[str | None] = mapped_column(String(100), unique=True)
    symbol: Mapped[str] = mapped_column(String(20), index=True)
    side: Mapped[Side] = mapped_column(enum_column_type(Side, "order_side"))
    order_type: Mapped[OrderType] = mapped_column(enum_column_type(OrderType, "order_type"))
    price: Mapped[Decimal | None] = mapped_column(Money())
    amount: Mapped[Decimal | None] = mapped_column(Money())
    requested_total: Mapped[Decimal | None] = mapped_column(Money())
    filled_amount: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    executed_funds: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    avg_fill_price: Mapped[Decimal | None] = mapped_column(Money())
    paid_fee: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    status: Mapped[OrderStatus] = mapped_column(enum_column_type(OrderStatus, "order_status"), index=True)
    exchange_state: Mapped[str | None] = mapped_column(String(20))
    error_message: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "order_mode"))
    cycle_id: Mapped[str | None] = mapped_column(String(80), index=True)
    # a sell: the exit that caused it (migration 0006); None on buys and on orders written before
    exit_reason: Mapped[ExitReason | None] = mapped_column(enum_column_type(ExitReason, "order_exit_reason"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
