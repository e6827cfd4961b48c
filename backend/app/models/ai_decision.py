from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from backend.app.db.base import Base, created_at_column
from backend.app.db.types import ExactDecimal, JSONType, Money, UTCDateTime
from backend.app.models._columns import enum_column_type
from src.ai.models import AIPurpose
from src.domain.decisions import Decision, DecisionSource


class AIDecisionRow(Base):
    """What the adviser said, what the validator made of it, and the market data it saw."""

    __tablename__ = "ai_decisions"
    __table_args__ = (
        Index("idx_ai_decisions_symbol", "symbol"),
        Index("idx_ai_decisions_created_at", "created_at", "id"),  # keyset paging (migration 0004)
        Index("idx_ai_decisions_symbol_candle_at", "symbol", "candle_at"),  # decisions by candle (migration 0008)
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    symbol: Mapped[str] = mapped_column(String(20))
    decision: Mapped[Decision] = mapped_column(enum_column_type(Decision, "decision"))  # CHECK since 0001
    confidence: Mapped[Decimal | None] = mapped_column(ExactDecimal(5, 2))
    reason: Mapped[str | None] = mapped_column(Text)
    market_data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    final_decision: Mapped[Decision] = mapped_column(enum_column_type(Decision, "final_decision"))
    overridden: Mapped[bool] = mapped_column(default=False, server_default=false())
    override_reasons: Mapped[list[str] | None] = mapped_column(JSONType)
    source: Mapped[DecisionSource] = mapped_column(enum_column_type(DecisionSource, "decision_source"))  # 0006
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
    purpose: Mapped[AIPurpose] = mapped_column(
        enum_column_type(AIPurpose, "purpose"), default=AIPurpose.DECISION, server_default=AIPurpose.DECISION.value
    )
    # open time (UTC) of the bar decided; with the symbol, the key a backtest replays decisions by (migration 0008)
    candle_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = created_at_column()
