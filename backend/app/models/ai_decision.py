from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column
from backend.app.db.types import ExactDecimal, JSONType, Money

_DECISIONS = "('buy', 'sell', 'hold')"
_PURPOSES = "('decision', 'filter')"


class AIDecisionRow(Base):
    """What the adviser said, what the validator made of it, and the market data it saw."""

    __tablename__ = "ai_decisions"
    __table_args__ = (
        CheckConstraint(f"decision IN {_DECISIONS}", name="decision"),
        CheckConstraint(f"final_decision IN {_DECISIONS}", name="final_decision"),
        CheckConstraint(f"purpose IN {_PURPOSES}", name="purpose"),
        Index("idx_ai_decisions_symbol", "symbol"),
        Index("idx_ai_decisions_created_at", "created_at", "id"),  # keyset paging (migration 0004)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20))
    decision: Mapped[str] = mapped_column(String(20))
    confidence: Mapped[Decimal | None] = mapped_column(ExactDecimal(5, 2))
    reason: Mapped[str | None] = mapped_column(Text)
    market_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    final_decision: Mapped[str] = mapped_column(String(20))
    overridden: Mapped[bool] = mapped_column(default=False, server_default=false())
    override_reasons: Mapped[list[str] | None] = mapped_column(JSONType)
    source: Mapped[str] = mapped_column(String(20))
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    prompt: Mapped[str | None] = mapped_column(Text)
    raw_response: Mapped[str | None] = mapped_column(Text)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Money(), default=Decimal("0"), server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    cycle_id: Mapped[str | None] = mapped_column(String(80), index=True)
    # why the model was asked: the cycle's decision, or the quick filter's AI backtest (migration 0005)
    purpose: Mapped[str] = mapped_column(String(20), default="decision", server_default="decision")
    created_at: Mapped[datetime] = created_at_column()
