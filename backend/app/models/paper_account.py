from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column, updated_at_column
from backend.app.db.types import JSONType, Money
from backend.app.models._columns import enum_column_type
from src.api.interfaces import ExchangeOrderState


class PaperBalanceRow(Base):
    """Balances of the simulated exchange account (paper and replay modes)."""

    __tablename__ = "paper_balances"
    __table_args__ = (UniqueConstraint("account", "currency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(50))
    currency: Mapped[str] = mapped_column(String(20))
    balance: Mapped[Decimal] = mapped_column(Money())
    locked: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    avg_buy_price: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    updated_at: Mapped[datetime] = updated_at_column()


class PaperOrderRow(Base):
    """The simulated exchange's own view of an order (what Upbit would answer for it)."""

    __tablename__ = "paper_orders"
    __table_args__ = (UniqueConstraint("account", "identifier"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(50))
    uuid: Mapped[str] = mapped_column(String(100), unique=True)
    identifier: Mapped[str | None] = mapped_column(String(100))
    symbol: Mapped[str] = mapped_column(String(20))
    state: Mapped[ExchangeOrderState] = mapped_column(
        enum_column_type(ExchangeOrderState, "paper_order_state"), index=True
    )  # 0006
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)  # the full order, in exchange form
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()
