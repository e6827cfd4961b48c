from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from backend.app.db.base import Base
from backend.app.db.types import JSONType, UTCDateTime
from backend.app.models._columns import enum_column_type, without_secrets
from src.domain.modes import TradingMode
from src.trading.pipeline.context import CycleStatus, cycle_outcomes


class TradingCycleRow(Base):
    """One pipeline run for one symbol: what every stage decided and how long it took."""

    __tablename__ = "trading_cycles"
    __table_args__ = (
        Index("ix_trading_cycles_started_at", "started_at"),
        # every outcome the pipeline can write (migration 0006): a composite of decision and order statuses
        CheckConstraint(f"outcome IN ({', '.join(repr(o) for o in cycle_outcomes())})", name="cycle_outcome"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    cycle_id: Mapped[str] = mapped_column(String(80), unique=True)
    symbol: Mapped[str] = mapped_column(String(20), index=True)
    mode: Mapped[TradingMode] = mapped_column(enum_column_type(TradingMode, "cycle_mode"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[CycleStatus] = mapped_column(enum_column_type(CycleStatus, "cycle_status"))  # 0006
    outcome: Mapped[str | None] = mapped_column(String(50))
    stages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)

    _no_secrets = validates("error")(without_secrets)
